"""What a `Cloud` and its `Instance`s share: the backend and the private event loop (one asyncio
loop in a daemon thread) on which every sync method runs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from cloudsh import models
from cloudsh.errors import AWSError, CloudshError, SSHError, UsageError
from cloudsh.services.backend import Backend

T = TypeVar("T")


def translate(exc: BaseException) -> BaseException:
    """A library exception that slipped past the service layer, as a CloudshError."""
    if isinstance(exc, CloudshError | KeyboardInterrupt | asyncio.CancelledError):
        return exc
    root = type(exc).__module__.split(".", 1)[0]
    if root in ("botocore", "boto3"):
        return AWSError(f"AWS request failed: {exc}", "check your credentials and region")
    if root in ("asyncssh", "paramiko"):
        return SSHError(f"SSH failed: {exc}", "check the box with `cloud.instances()` and try again")
    return exc


class Loop:
    """One asyncio loop in a daemon thread, for the sync API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cloudsh-api", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise UsageError("a sync cloudsh method was called from the API's own loop", "use its async twin")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise
        except Exception as exc:
            new = translate(exc)
            if new is exc:
                raise
            raise new from None

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class Session:
    """One backend, its loop (started on first use), and the instance names last listed."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.names: tuple[str, ...] = ()
        self.names_at = 0.0
        self._loop: Loop | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = Loop()
        return self._loop.run(coro)

    def remember(self, insts: Sequence[models.Instance]) -> None:
        self.names = tuple(dict.fromkeys([i.name for i in insts if i.name] + [i.id for i in insts]))
        self.names_at = time.monotonic()

    def close(self) -> None:
        """Close pooled SSH connections and the loop."""
        if self._loop is not None:
            self.run(self._aclose())
            self._loop.stop()
            self._loop = None

    async def _aclose(self) -> None:
        # Kept tunnels are tasks on this loop: end them before the connections they use.
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self.backend.close()


async def price_gate(
    backend: Backend, instance_type: str, *, spot: bool, az: str = "", verb: str,
    confirm_price: bool, max_per_hour: float | None,
) -> None:
    """The price gate of `launch` and `resize` (`ops.money.price_gate`): with no one to ask, a
    box above the threshold is refused unless the caller accepted its price."""
    from cloudsh.ops.money import price_gate

    if max_per_hour is None:
        go_on = ("pass confirm_price=True, or max_per_hour= the most you accept "
                 "(the threshold is the setting confirm_above_per_hour)")
    else:
        go_on = "pass a max_per_hour= at least that, or confirm_price=True"
    await price_gate(backend, instance_type, spot=spot, az=az, yes=confirm_price, ask=None, verb=verb,
                     limit=max_per_hour, go_on=go_on)
