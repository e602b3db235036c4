"""cloudsh: a terminal shell for cloud GPU workstations, with a local sandbox cloud built in.

`from cloudsh import Cloud` gives the Python API; nothing heavy is imported until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cloudsh.api import Cloud, Instance

__all__ = ["Cloud", "Instance", "__version__"]


def __getattr__(name: str) -> Any:
    # The API pulls in boto3; `cloudsh --help` must not pay for it.
    if name in ("Cloud", "Instance"):
        from cloudsh import api

        return getattr(api, name)
    raise AttributeError(name)
