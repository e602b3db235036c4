"""The command language. Importing this package registers every command in `REGISTRY`."""

from cloudsh.commands import (  # noqa: F401  (registration)
    cloud,
    idle,  # noqa: F401  (registration)
    instances,
    jobs,  # noqa: F401  (registration)
    money,
    remote,
    sandbox_knobs,  # noqa: F401  (registration)
    storage,  # noqa: F401  (registration)
    tunnels,  # noqa: F401  (registration)
)
from cloudsh.commands.registry import (
    REGISTRY,
    Command,
    Context,
    HelpRequested,
    Output,
    Prepared,
    dispatch,
)

__all__ = ["REGISTRY", "Command", "Context", "HelpRequested", "Output", "Prepared", "dispatch"]
