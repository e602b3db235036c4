"""moto's request dispatch, with two look-ups remembered.

Before moto answers a call it works out two things anew for every request, though neither
can change while the daemon runs:

- which service the request's host names: it lists moto's package directory (one `isdir`
  per service, about 150) and then matches the host against every service's URL pattern;
- which actions the service's response class has: `inspect.getmembers` of the class.

On an empty `DescribeKeyPairs` the two took about a third of the daemon's time, which a
sweep of every region (`orphans --all-regions`, ~100 small calls) pays a hundred times.
`install` remembers both answers (per host, per class); what they are stays moto's own
(tests/test_sandbox_fastser.py compares them). `fastser.install` installs it with the
serializer's.
"""

from __future__ import annotations

import functools
from typing import Any

_HOSTS = 1024  # hosts remembered: the daemon sees a handful (its own address, EC2's names)


def install() -> None:
    """Remember the look-ups from now on (the sandbox daemon, once at start)."""
    from moto.core import responses
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication as App

    if "_cloudsh_dispatch" in App.__dict__:
        return
    actions: Any = responses.method_names_from_class  # type: ignore[attr-defined]
    original = App.get_backend_for_host
    App._cloudsh_dispatch = (original, actions)  # type: ignore[attr-defined]
    by_host = functools.lru_cache(maxsize=_HOSTS)(lambda app, host: original(app, host))
    App.get_backend_for_host = lambda self, host: by_host(self, host)  # type: ignore[method-assign]
    responses.method_names_from_class = functools.lru_cache(maxsize=None)(actions)  # type: ignore[attr-defined]


def uninstall() -> None:
    from moto.core import responses
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication as App

    original = App.__dict__.get("_cloudsh_dispatch")
    if original is None:
        return
    App.get_backend_for_host, responses.method_names_from_class = original  # type: ignore[method-assign,attr-defined]
    del App._cloudsh_dispatch  # type: ignore[attr-defined]

