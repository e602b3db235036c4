"""cloudsh: a terminal shell for cloud GPU workstations, with a local sandbox cloud built in.

`from cloudsh import Cloud` gives the Python API; nothing heavy is imported until used.
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False  # not `typing`'s: `ssh NAME` through `ssh-config` imports this package (cloudsh.proxy)
if TYPE_CHECKING:
    from typing import Any

    from cloudsh.api import Cloud, Instance

__all__ = ["Cloud", "Instance", "__version__"]


def __getattr__(name: str) -> Any:
    # The API pulls in boto3; `cloudsh --help` must not pay for it.
    if name in ("Cloud", "Instance"):
        from cloudsh import api

        return getattr(api, name)
    raise AttributeError(name)
