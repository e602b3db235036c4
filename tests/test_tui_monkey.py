"""A monkey at the keyboard: thousands of random keys to the real app on the sandbox
(panes, modals, the palette, the filter, the command line), the terminal hand-off a
recording one. The app stays up, and every error reaches the user as one line in a
notification, never a crash."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
from textual import events
from textual.message import Message

from cloudsh.config import Settings
from cloudsh.root import connect
from cloudsh.services.backend import Backend
from cloudsh.tui.app import CloudshApp
from cloudsh.tui.handoff import RecordingHandoff
from cloudsh.tui.messages import ActionFinished, BackendFailed, BackendReady
from tests.cli import cloudsh, ok
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox

#: (key, character) for every key but the ones that leave the app (q, ctrl+q, ctrl+c):
#: letters are also the instance keys (connect, tunnel, resize, freeze, start/stop,
#: terminate, IPython); y, n, enter and escape answer the dialogs they open.
KEYS = (
    [(c, c) for c in "abcdefghijklmnoprstuvwxyz0123456789yyn"]
    + [("colon", ":"), ("slash", "/"), ("question_mark", "?"), ("space", " "), ("minus", "-"), ("full_stop", ".")]
    + [(k, None) for k in ("escape", "enter", "enter", "tab", "shift+tab", "backspace", "up", "down", "left",
                           "right", "pageup", "pagedown", "home", "end", "ctrl+p", "escape", "colon")]
)
PRESSES = 3000
#: Keys arrive in bursts of this many, the next once the app has read all but a burst
#: (as a terminal buffers what is typed ahead), never waiting for the screen to be drawn.
BURST = 50
#: The monkey stops early past this many seconds (a budget for the suite, not a check):
#: the app's own work on a key (a dialog or the palette composed, the footer redone) is
#: ~5-10 ms of CPU, so a quiet machine sends all 3,000 and a busy one (load 6 on 2 cores)
#: one to two thousand.
BUDGET_S = 12.0


#: However loaded the machine, the app reads what was typed within this many seconds.
DRAIN_S = 60.0


async def caught_up(app: CloudshApp, backlog: int, deadline: float) -> None:
    """Wait until at most `backlog` messages wait for the app, as a terminal lets a program
    read what was typed ahead (Pilot.pause would also lay out and render the screen each time)."""
    while app.is_running and app._message_queue.qsize() > backlog and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def factory() -> Backend:
    return connect(Settings.load(), sandbox=True)


async def test_random_keys_never_crash_the_app(sandbox: Sandbox) -> None:
    ok("launch", "monkeybox", "--type", "t3.micro", "--no-wait")
    seed = int(os.environ.get("MONKEY_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    crash_log = Settings.load().state_dir / "crash.log"
    crashes_before = crash_log.read_text() if crash_log.exists() else ""
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    pressed = 0
    try:
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            while not any(isinstance(m, BackendReady) for m in messages):
                await pilot.pause(0.05)
            deadline = time.monotonic() + BUDGET_S
            while pressed < PRESSES and time.monotonic() < deadline:
                for key, char in (rng.choice(KEYS) for _ in range(BURST)):
                    event = events.Key(key, char)
                    event.set_sender(app)
                    app.post_message(event)  # as the driver does, without a task per key
                pressed += BURST
                await caught_up(app, BURST, deadline)
                assert app.is_running, f"the app left after {pressed} keys (seed {seed})"
            await caught_up(app, 0, time.monotonic() + DRAIN_S)
            assert app._message_queue.qsize() == 0, f"seed {seed}: the app stopped reading keys"
            await pilot.pause(0.5)
            assert app.is_running and app.return_code is None, f"seed {seed}"
            notified = " ".join(t.message for t in app._notifications) + " ".join(
                str(m) for m in messages if isinstance(m, ActionFinished))
        assert pressed >= 200, pressed  # thousands on a quiet machine; a loaded one reaches fewer in the budget
        assert not any(isinstance(m, BackendFailed) for m in messages)
        errors = [m.error for m in messages if isinstance(m, ActionFinished) and m.error]
        assert all("\n" not in e and "Traceback" not in e and "unexpected error" not in e for e in errors), (seed, errors)
        assert "Traceback" not in notified
        crashes = crash_log.read_text() if crash_log.exists() else ""
        assert crashes == crashes_before, f"seed {seed}: {crashes[len(crashes_before):][-2000:]}"
    finally:
        cloudsh("terminate", "monkeybox", "--yes")
