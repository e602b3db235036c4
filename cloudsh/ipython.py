"""`cloudsh ipython` and the TUI's IPython key: IPython with `cloud` ready.

`build_namespace` is the one place that decides what is preloaded; both entry points
(and the tests, which need no terminal) use it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloudsh import __version__
from cloudsh.api import Cloud, Instance, InstanceList, Table
from cloudsh.errors import CloudshError

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend

EXAMPLES = """\
  cloud.instances()                      your boxes, as a table
  box = cloud["box"]                     one box (Tab completes names)
  box.run("nvidia-smi").stdout           run a command
  cloud.launch("gpu", "g5.xlarge", spot=True)
  box.resize("g5.2xlarge"); box.stop()   the verbs of the command language
  client = box.ssh()                     a connected paramiko SSHClient
  help(cloud)                            everything else"""


def banner(cloud: Cloud) -> str:
    """What the prompt says first: which cloud `cloud` talks to."""
    if cloud.sandbox:
        where = f"SANDBOX — the local cloud on this machine (region {cloud.region}); no AWS account is used"
    else:
        t = cloud.backend.target
        where = f"AWS profile {t.profile or 'default'}, region {t.region}"
    return f"cloudsh {__version__} · {where}\n`cloud` is ready:\n{EXAMPLES}\n"


def build_namespace(cloud: Cloud) -> dict[str, Any]:
    """The names preloaded in IPython: `cloud` and the API's types."""
    import cloudsh.errors as errors

    return {
        "cloud": cloud,
        "Cloud": Cloud,
        "Instance": Instance,
        "InstanceList": InstanceList,
        "Table": Table,
        "CloudshError": CloudshError,
        "errors": errors,
    }


def _config(ns_banner: str) -> Any:
    from traitlets.config import Config

    cfg = Config()
    cfg.TerminalInteractiveShell.banner1 = ns_banner
    cfg.TerminalInteractiveShell.banner2 = ""
    cfg.TerminalInteractiveShell.confirm_exit = False
    # `Jedi` evaluates too little to see `cloud.__getitem__`; IPython's own completer
    # asks `_ipython_key_completions_` for `cloud["bo<TAB>`.
    cfg.IPCompleter.use_jedi = False
    return cfg


def run_ipython(backend_factory: Callable[[], Backend]) -> int:
    """`cloudsh ipython`: IPython (the user's profile and config) with `cloud` preloaded."""
    from cloudsh.frontend import fail

    try:
        cloud = Cloud(backend=backend_factory())
    except CloudshError as exc:
        return fail(exc)
    if cloud.backend.notice:
        sys.stderr.write(cloud.backend.notice + "\n")
    import IPython

    try:
        IPython.start_ipython(argv=[], user_ns=build_namespace(cloud), config=_config(banner(cloud)))
    finally:
        try:
            cloud.close()
        except CloudshError as exc:
            fail(exc)
    return 0


def run_ipython_embedded(namespace: dict[str, Any]) -> None:
    """IPython on the current terminal until the user leaves it; may run in a thread.

    Names the user defines are written back to `namespace`, so the next visit finds them.
    """
    from IPython.terminal.embed import InteractiveShellEmbed

    cloud = namespace.get("cloud")
    text = banner(cloud) if isinstance(cloud, Cloud) else f"cloudsh {__version__}\n"
    shell = InteractiveShellEmbed(config=_config(text), banner1=text, exit_msg="")  # type: ignore[no-untyped-call]
    module = types.ModuleType("__main__")
    shell.show_banner()  # type: ignore[no-untyped-call]
    shell.mainloop(local_ns=namespace, module=module, compile_flags=0)  # type: ignore[no-untyped-call]
