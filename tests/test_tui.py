"""The real app on the real sandbox cloud, driven with Textual's Pilot.

The terminal hand-off is a recording one; everything else is real: moto's EC2 server,
the per-box SSH servers, the command registry. Assertions are on what EC2 reports
afterwards and on the messages the app posted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from textual.message import Message
from textual.widgets import Input, Static

from cloudsh.commands.complete import complete
from cloudsh.commands.registry import Context, dispatch
from cloudsh.config import Settings
from cloudsh.errors import CloudshError
from cloudsh.models import JOB_TAG_PREFIX, JobTag
from cloudsh.repl import Shell
from cloudsh.root import connect
from cloudsh.services.backend import Backend
from cloudsh.tui.app import CloudshApp
from cloudsh.tui.data import listing_cache_path
from cloudsh.tui.handoff import RecordingHandoff
from cloudsh.tui.instances import FOREIGN_STYLE, INSTANCE_COLUMNS, InstancesPane, InstancesTable
from cloudsh.tui.messages import (
    ActionFinished,
    ActivityLogged,
    BackendFailed,
    BackendReady,
    InstancesLoaded,
    PricesLoaded,
)
from cloudsh.tui.screens import ConfirmScreen, ResizeScreen, TunnelsScreen
from cloudsh.tui.state import Phase
from cloudsh.tui.widgets import ActivityLog, CommandLine
from tests.cli import ok
from tests.sandbox_fixture import (  # the `sandbox` fixture comes from conftest.py
    Sandbox,
    serve_http,
)

pytestmark = pytest.mark.sandbox


def factory() -> Backend:
    return connect(Settings.load(), sandbox=True)


class _Out:
    def print(self, text: str = "") -> None: ...
    def json(self, data: Any) -> None: ...
    def info(self, text: str) -> None: ...
    def write(self, chunk: str, *, err: bool = False) -> None: ...


async def launch(*words: str) -> str:
    """Launch a box through the registry (setup, not under test); its name."""
    name = f"tui-{uuid.uuid4().hex[:6]}"
    backend = factory()
    try:
        await dispatch(Context(out=_Out(), backend_factory=lambda: backend, _backend=backend), ["launch", name, *words])
    finally:
        await backend.close()
    return name


def describe(sb: Sandbox, name: str) -> dict[str, Any]:
    found = sb.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])
    insts = [i for r in found["Reservations"] for i in r["Instances"]]
    return sorted(insts, key=lambda i: i["LaunchTime"])[-1]


async def until(pilot: Any, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


def activity(app: CloudshApp) -> str:
    return "\n".join(line.text for line in app.query_one(ActivityLog).lines)


async def highlight(pilot: Any, app: CloudshApp, name: str) -> None:
    await until(pilot, lambda: any(r.name == name for r in app.state.rows))
    pane = app.query_one(InstancesPane)
    iid = next(r.id for r in app.state.rows if r.name == name)
    table = app.query_one(InstancesTable)
    await until(pilot, lambda: table.filled and iid in table.keys)
    table.focus()
    table.move_cursor(row=table.keys.index(iid))
    await pilot.pause()
    row = pane.highlighted()
    assert row is not None and row.name == name


def finished(messages: list[Message], label_part: str) -> list[ActionFinished]:
    return [m for m in messages if isinstance(m, ActionFinished) and label_part in m.label]


async def type_command(pilot: Any, line: str) -> None:
    # `:` and enter are real key presses; the text is set at once (typing it key by
    # key costs ~0.1 s a key on a loaded machine and tests nothing more).
    await pilot.press("colon")
    box = pilot.app.query_one(CommandLine)
    assert box.has_focus
    box.value = line
    await pilot.press("enter")


async def test_launch_from_command_line_and_listing(sandbox: Sandbox) -> None:
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    name = f"tui-{uuid.uuid4().hex[:6]}"
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: any(isinstance(m, BackendReady) for m in messages))
        await type_command(pilot, f"launch {name} --type t3.micro")
        await until(pilot, lambda: bool(finished(messages, f"launch {name}")))
        [done] = finished(messages, f"launch {name}")
        assert done.error is None, done.error
        # The listing refreshes after an action and shows the new box.
        await until(pilot, lambda: any(r.name == name and r.state == "running" for r in app.state.rows))
        assert f"> launch {name} --type t3.micro" in activity(app)
        assert app.query_one(CommandLine).history[-1] == f"launch {name} --type t3.micro"
    assert describe(sandbox, name)["State"]["Name"] == "running"


async def test_resize_flow_changes_the_type_in_ec2(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro")
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: bool(app.state.price_rows))
        await highlight(pilot, app, name)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ResizeScreen))
        picker = app.screen
        assert isinstance(picker, ResizeScreen)
        # GPU types first, each with $/h after and the change.
        assert "g4dn.xlarge" in picker._shown
        assert "no NVIDIA driver" in str(picker.query_one("#resize-help", Static).render())
        # Above the price threshold ($3/h) the pick is asked about first; "no" changes nothing.
        dear = next(t.name for t, p in app.state.price_rows if p and (p.on_demand or 0) > 3 and t.name in picker._shown)
        picker.query_one("DataTable").move_cursor(row=picker._shown.index(dear))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert dear in str(app.screen.question) and "threshold" in str(app.screen.question)
        await pilot.press("n")
        assert not finished(messages, f"resize {name}")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ResizeScreen))
        picker = app.screen
        assert isinstance(picker, ResizeScreen)
        picker.query_one("DataTable").move_cursor(row=picker._shown.index("g4dn.xlarge"))
        await pilot.press("enter")
        await until(pilot, lambda: bool(finished(messages, f"resize {name}")), timeout=40)
        [done] = finished(messages, f"resize {name}")
        assert done.error is None, done.error
        log = activity(app)
        assert f"stopping {name}" in log and "g4dn.xlarge" in log
        # Plain Ubuntu: the driver first, and the GPU nvidia-smi reports at the end.
        assert log.index("nvidia-driver-570-server installed") < log.index(f"stopping {name}")
        assert f"nvidia-smi on {name}: GPU 0: NVIDIA T4" in log
    inst = describe(sandbox, name)
    assert inst["InstanceType"] == "g4dn.xlarge"
    assert inst["State"]["Name"] == "running"


async def test_terminate_asks_listing_losses_then_terminates(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro", "--no-wait")
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await highlight(pilot, app, name)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = app.screen.question  # type: ignore[attr-defined]
        # It names the box and its volume (deleted or kept: see the report on moto and
        # DeleteOnTermination) and says it is final.
        assert name in question and "60 GB" in question and "cannot be undone" in question
        await pilot.press("n")
        await until(pilot, lambda: bool(finished(messages, f"terminate {name}")))
        [declined] = finished(messages, f"terminate {name}")
        assert declined.declined and "did not terminate" in (declined.error or "")
        # Saying no is no failure: one quiet line, no red ✗.
        assert "nothing was changed" in activity(app) and f"✗ terminate {name}" not in activity(app)
        assert describe(sandbox, name)["State"]["Name"] != "terminated"
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: len(finished(messages, f"terminate {name}")) == 2)
        assert finished(messages, f"terminate {name}")[1].error is None
    assert describe(sandbox, name)["State"]["Name"] in ("shutting-down", "terminated")


async def test_a_box_cloudsh_did_not_launch_is_marked_and_its_keys_ask_for_its_id(sandbox: Sandbox) -> None:
    name = f"tui-theirs-{uuid.uuid4().hex[:6]}"
    # Launched by a plain boto3 call, as a colleague's box on a shared account would be.
    iid = sandbox.launch("t3.micro", wait=False, tags={"Name": name, "Owner": "alice"}).id
    sandbox.past_window(sandbox.made[iid])
    app = CloudshApp(factory, handoff=RecordingHandoff())
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await highlight(pilot, app, name)
            row = next(r for r in app.state.rows if r.id == iid)
            assert not row.managed and row.owner == "alice"
            drawn = app.query_one(InstancesTable)._drawn[iid]
            assert drawn[0] == (f"{name}* (alice's)", FOREIGN_STYLE)
            for n, (key, verb) in enumerate((("x", "terminate"), ("s", "stop")), 1):
                await pilot.press(key)
                await pilot.pause()
                assert not isinstance(app.screen, ConfirmScreen)
                said = " ".join(activity(app).split())  # the log wraps long lines
                assert said.count(f"name it by its id, {iid}, to confirm") == n
                assert f"✗ {verb} {name}: {name} ({iid}) was not launched by cloudsh; it looks like alice's" in said
        assert describe(sandbox, name)["State"]["Name"] in ("pending", "running")
    finally:
        sandbox.ec2().terminate_instances(InstanceIds=[iid])


async def test_the_idle_column_fills_in_after_the_listing(sandbox: Sandbox) -> None:
    off, timed = await asyncio.gather(launch("--type", "t3.micro", "--idle-stop", "off"),
                                      launch("--type", "t3.micro", "--idle-stop", "45m"))
    col = [key for key, _ in INSTANCE_COLUMNS].index("idle")
    app = CloudshApp(factory, handoff=RecordingHandoff())
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await highlight(pilot, app, timed)
            ids = {r.name: r.id for r in app.state.rows}
            table = app.query_one(InstancesTable)

            def cell(name: str) -> str:
                drawn = table._drawn.get(ids[name])
                return drawn[col][0] if drawn else ""

            await until(pilot, lambda: cell(off) == "off" and cell(timed) not in ("…", ""))
            assert cell(timed).startswith(("stops in 4", "busy: ")), cell(timed)
            assert table.HEADER[col] == "Idle stop"
    finally:
        sandbox.ec2().terminate_instances(InstanceIds=[describe(sandbox, n)["InstanceId"] for n in (off, timed)])


async def test_connect_and_ipython_hand_the_terminal_over(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro")
    handoff = RecordingHandoff()
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=handoff)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await highlight(pilot, app, name)
        await pilot.press("c")
        await until(pilot, lambda: bool(finished(messages, f"connect {name}")))
        assert finished(messages, f"connect {name}")[0].error is None
        await pilot.press("i")
        await until(pilot, lambda: bool(handoff.namespaces), timeout=30)
    [ns] = handoff.namespaces
    assert "cloud" in ns and ns["box"].name == name
    [argv] = handoff.runs
    assert argv[0].endswith("ssh") and "StrictHostKeyChecking=yes" in " ".join(argv)
    # The argv works for real: run it without a TTY and ask the box who it is.
    proc = await asyncio.create_subprocess_exec(
        *[a for a in argv if a != "-t"], "echo", "$USER",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert out.decode().strip() == "ubuntu", err.decode()


async def test_tunnel_forwards_reconnects_and_closes(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro")
    remote = 8765

    async def serve(body: str) -> None:  # a web server on the box, on its own localhost
        out = await asyncio.to_thread(ok, "run", name, "--", serve_http(remote, body))
        del out

    async def fetch(port: int) -> bytes:
        def get() -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                return bytes(r.read())
        return await asyncio.to_thread(get)

    await serve("hello")
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    local = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40)) as pilot:
        await highlight(pilot, app, name)
        await type_command(pilot, f"tunnel {name} {local}:{remote}")
        await until(pilot, lambda: any(t.status == "open" for t in app.tunnels.tunnels.values()))
        assert await fetch(local) == b"hello"
        # The box stops and starts again: the tunnel says so and reopens on its own.
        [tun] = app.tunnels.tunnels.values()
        await type_command(pilot, f"stop {name}")
        await until(pilot, lambda: tun.status in ("reconnecting", "box stopped"), 30)
        await until(pilot, lambda: describe(sandbox, name)["State"]["Name"] == "stopped", 30)
        # A stopped box is waited for (less and less often), not retried every 2 s.
        await until(pilot, lambda: tun.status == "box stopped", 30)
        assert activity(app).count("waiting for the box: it is stopped") == 1
        await type_command(pilot, f"start {name}")
        await until(pilot, lambda: tun.status == "open", 40)
        await serve("again")  # the stop ended what ran on the box
        assert await fetch(local) == b"again"
        assert "connection lost" in activity(app) and "reopened" in activity(app)
        await pilot.press("T")
        await until(pilot, lambda: isinstance(app.screen, TunnelsScreen))
        await pilot.press("d")
        await until(pilot, lambda: not app.tunnels.tunnels)
        await pilot.pause(0.3)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", local)


async def test_errors_completion_history_and_filter(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro", "--no-wait")
    other = await launch("--type", "t3.micro", "--no-wait")  # so the filter has a row to hide
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: {name, other} <= {r.name for r in app.state.rows})
        # Errors: one readable line in the activity pane and a notification; the app stays up.
        await type_command(pilot, "start no-such-box-here")
        await until(pilot, lambda: bool(finished(messages, "start no-such-box-here")))
        error = finished(messages, "start no-such-box-here")[0].error or ""
        assert "no-such-box-here" in error and "\n" not in error
        # A 500-character name is kept whole in the log, clipped in the toast over the panes.
        long_name = "n" * 500
        await type_command(pilot, f"start {long_name}")
        await until(pilot, lambda: bool(finished(messages, long_name)))
        assert long_name in activity(app).replace("\n", "")
        toasts = list(app._notifications)
        assert toasts and all(len(t.message) <= 160 and len(t.title) <= 48 for t in toasts)
        await type_command(pilot, "lauch x")
        await until(pilot, lambda: bool(finished(messages, "lauch x")))
        assert "did you mean `launch`" in (finished(messages, "lauch x")[0].error or "")
        assert "Traceback" not in activity(app) and app.is_running
        # Completion from cached names (no network per keystroke) and history.
        line = app.query_one(CommandLine)
        await pilot.press("colon", "s", "t", "o", "tab")
        assert line.value == "stop "
        for ch in name[:5]:
            await pilot.press(ch if ch != "-" else "minus")
        await pilot.press("tab")
        assert line.value.startswith("stop tui-")
        line.value = ""
        await pilot.press("up")
        assert line.value == "lauch x"
        await pilot.press("escape")
        assert isinstance(app.focused, InstancesTable)
        # `/` filters rows in place; escape clears the filter.
        await pilot.press("slash")
        pilot.app.query_one("#instances-filter", Input).value = name
        pane = app.query_one(InstancesPane)
        only = [next(r.id for r in app.state.rows if r.name == name)]
        await until(pilot, lambda: pane.table.filled and pane.table.keys == only)
        await pilot.press("escape")
        await until(pilot, lambda: pane.table.filled and len(pane.table.keys) == len(app.state.rows) > 1)


async def test_cached_listing_paints_first_marked_stale(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro", "--no-wait")
    first = CloudshApp(factory, handoff=RecordingHandoff())
    async with first.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: any(r.name == name for r in first.state.rows))
        # The listing is written to the cache a moment after it is drawn.
        cached = listing_cache_path(first.settings.cache_dir)
        await until(pilot, lambda: cached.exists() and name in cached.read_text())

    gate = asyncio.Event()
    messages: list[Message] = []

    def slow_factory() -> Backend:
        # Stands in for a slow cloud: the frame must not wait for it.
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(timeout=30)
        return factory()

    loop = asyncio.get_running_loop()
    second = CloudshApp(slow_factory, handoff=RecordingHandoff())
    async with second.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: any(r.name == name for r in second.state.rows), timeout=5)
        assert second.state.stale
        assert "stale" in str(second.query_one("#status-fresh").render())
        gate.set()
        await until(pilot, lambda: any(isinstance(m, InstancesLoaded) and not m.stale for m in messages))
        await pilot.pause()
        assert not second.state.stale


# -- one way to run a line, and completion from the panes' own listing ------------------------

SAME_LINES = ("lauch x", 'start "unclosed', "resize onlybox", "ls --bogus", "help resize", "resize --help")


def offline() -> Backend:
    raise CloudshError("no cloud here", "this test runs offline")


async def test_a_line_gives_the_same_result_in_the_repl_and_the_app(capsys: pytest.CaptureFixture[str]) -> None:
    shell = Shell(offline)
    repl: dict[str, tuple[int, str, str]] = {}
    for line in SAME_LINES:
        status = await shell.execute(line)
        captured = capsys.readouterr()
        repl[line] = (status, captured.out, captured.err)
    if shell._refresh_task is not None:
        shell._refresh_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shell._refresh_task

    messages: list[Message] = []
    app = CloudshApp(offline, handoff=RecordingHandoff(), auto_connect=False, periodic_refresh=False)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        for line in SAME_LINES:
            messages.clear()
            app.run_line(line)
            status, out, err = repl[line]
            if err:  # a usage error: the same line, the same exit status
                await until(pilot, lambda: bool(finished(messages, line)))  # noqa: B023
                done = finished(messages, line)[0]
                assert err == f"cloudsh: {done.error}\n" and done.status == status == 2
            else:  # help: the same text
                await until(pilot, lambda: any(isinstance(m, ActivityLogged) for m in messages))  # noqa: B023
                shown = [m.text for m in messages if isinstance(m, ActivityLogged)]
                assert status == 0 and out.startswith("usage: cloudsh resize") and shown == [out.rstrip("\n")]


async def test_a_command_typed_while_connecting_waits_for_the_cloud(sandbox: Sandbox) -> None:
    # Someone types as soon as the frame paints: the command runs once the cloud answers.
    gate = threading.Event()

    def slow() -> Backend:
        gate.wait(30)
        return factory()

    messages: list[Message] = []
    app = CloudshApp(slow, handoff=RecordingHandoff(), periodic_refresh=False)
    try:
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            app.run_line("ls --all")
            await until(pilot, lambda: "waiting for the cloud to answer" in activity(app))
            await pilot.pause(0.3)
            assert not finished(messages, "ls --all") and app.backend is None
            gate.set()
            await until(pilot, lambda: bool(finished(messages, "ls --all")))
            assert finished(messages, "ls --all")[0].error is None
    finally:
        gate.set()


async def test_sandbox_commands_run_with_or_without_the_backend_they_need(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro", "--no-wait")  # on demand: the sandbox will not interrupt it
    messages: list[Message] = []
    # Not connected: managing the sandbox works, playing an interruption on a box cannot yet.
    app = CloudshApp(factory, handoff=RecordingHandoff(), auto_connect=False, periodic_refresh=False)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        app.run_line("sandbox status")
        await until(pilot, lambda: bool(finished(messages, "sandbox status")))
        assert finished(messages, "sandbox status")[0].error is None
        assert "sandbox running" in activity(app)
        app.run_line(f"sandbox interrupt {name}")
        await until(pilot, lambda: bool(finished(messages, "sandbox interrupt")))
        assert "not connected to the cloud yet" in (finished(messages, "sandbox interrupt")[0].error or "")
    messages.clear()
    app = CloudshApp(factory, handoff=RecordingHandoff(), periodic_refresh=False)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: app.backend is not None)
        app.run_line(f"sandbox interrupt {name}")
        await until(pilot, lambda: bool(finished(messages, "sandbox interrupt")))
        # It reached the box through the backend, which refuses an on-demand box.
        assert "only spot instances are interrupted" in (finished(messages, "sandbox interrupt")[0].error or "")


async def test_logs_completes_the_job_ids_the_listing_carries(sandbox: Sandbox) -> None:
    name = await launch("--type", "t3.micro", "--no-wait")
    iid = describe(sandbox, name)["InstanceId"]
    sandbox.past_window(time.monotonic())  # EC2 names a new box everywhere only after a moment
    job_id = f"tuijob-{uuid.uuid4().hex[:8]}"
    tag = JobTag("train.py", "running", started=time.time()).encode()
    sandbox.ec2().create_tags(Resources=[iid], Tags=[{"Key": JOB_TAG_PREFIX + job_id, "Value": tag}])
    app = CloudshApp(factory, handoff=RecordingHandoff(), periodic_refresh=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: any(job_id in r.jobs for r in app.state.rows))
        # The index comes from the rows on screen: no listing per keystroke.
        offered = {c.display: c.meta for c in complete("logs ", None, app.state.index)}
        assert offered.get(job_id) == f"job on {name}"
        await pilot.press("colon")
        line = app.query_one(CommandLine)
        line.value = f"logs {job_id[:10]}"
        line.cursor_position = len(line.value)
        await pilot.press("tab")
        assert line.value == f"logs {job_id} "  # whole: the next word can follow


async def test_every_failing_worker_takes_the_one_error_route() -> None:
    def broken() -> Backend:
        raise RuntimeError("boom")

    messages: list[Message] = []
    app = CloudshApp(broken, handoff=RecordingHandoff(), periodic_refresh=False)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: any(isinstance(m, BackendFailed) for m in messages))
        error = next(m.error for m in messages if isinstance(m, BackendFailed))
        # A bug: one line on screen, the traceback in the crash log.
        assert error.startswith("unexpected error: RuntimeError: boom") and "crash.log" in error
        assert "RuntimeError: boom" in (app.settings.state_dir / "crash.log").read_text()
        assert app.state.connection.phase is Phase.FAILED
        # A CloudshError: its own one line, under the command's label.
        app.run_line("ls")
        await until(pilot, lambda: bool(finished(messages, "ls")))
        assert finished(messages, "ls")[0].error == "not connected to the cloud yet. wait a moment and try again"
        assert "Traceback" not in activity(app) and app.is_running


async def test_the_prices_pane_says_why_prices_are_missing(sandbox: Sandbox) -> None:
    from cloudsh.root import build_backend
    from cloudsh.sandbox import state as sbx
    from cloudsh.services.aws import AwsTarget
    from cloudsh.tui.widgets import PricesPane
    from tests.faults import DroppingProxy, ec2_error

    # An identity without ec2:DescribeSpotPriceHistory, played by a proxy in front of EC2.
    def deny_spot(request: bytes) -> bytes | None:
        if b"Action=DescribeSpotPriceHistory" in request:
            return ec2_error("UnauthorizedOperation", "You are not authorized to perform this operation.", 403)
        return None

    proxy = DroppingProxy(sandbox.env["AWS_ENDPOINT_URL"], fail=deny_spot)

    def denied() -> Backend:
        target = AwsTarget(
            region=sbx.REGION, endpoint_url=proxy.url, access_key_id=sbx.ACCESS_KEY_ID,
            secret_access_key=sbx.SECRET_ACCESS_KEY, sandbox=True,
        )
        return build_backend(Settings.load(), target)

    messages: list[Message] = []
    app = CloudshApp(denied, handoff=RecordingHandoff(), periodic_refresh=False)
    try:
        async with app.run_test(size=(160, 50), message_hook=messages.append) as pilot:
            await until(pilot, lambda: any(isinstance(m, PricesLoaded) for m in messages), timeout=30)
            await pilot.pause()
            loaded = next(m for m in messages if isinstance(m, PricesLoaded))
            assert loaded.rows and all(p is None or p.spot is None for _, p in loaded.rows)
            footer = str(app.query_one("#prices-age", Static).render())
            assert "missing: spot prices unavailable: not allowed to call DescribeSpotPriceHistory" in footer
            assert "ec2:DescribeSpotPriceHistory" in footer
            assert app.query_one(PricesPane).note == loaded.note
    finally:
        proxy.close()
