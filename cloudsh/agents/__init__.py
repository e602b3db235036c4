"""Programs that run on a box, not on this machine.

Each module here is a complete stdlib-only program (it imports nothing from cloudsh and
runs on the box's own `python3`, which may be older than this one) with a `main(argv)`.
cloudsh ships a program by copying its source file to the box: `source(name)` reads it
without importing the module on this machine.

    jobs    the job supervisor, `~/.cloudsh/jobs/agent.py` on the box (`ops.jobs`)
    idle    the idle stop, `~/.cloudsh/idle/agent.py` on the box (`ops.idle`)

The sandbox's tool stand-ins (`cloudsh.sandbox.tools`) are shipped the same way.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.cache
def program_source(module: str) -> str:
    """The text of the program `module` (a dotted name), read from its file, not imported."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LookupError(f"no program {module}")
    return Path(spec.origin).read_text()


def source(name: str) -> str:
    """The text of the program `cloudsh.agents.<name>`, as shipped to a box."""
    return program_source(f"{__name__}.{name}")
