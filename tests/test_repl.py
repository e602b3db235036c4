"""`cloudsh repl` driven for real through a pseudo-terminal (pexpect) on the sandbox."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudsh.config import Settings
from tests.cli import cloudsh, ok

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.sandbox

PROMPT = "cloudsh>"  # the trailing space is drawn as a cursor move


@pytest.fixture(scope="module")
def box() -> Iterator[str]:
    ok("launch", "replbox", "--type", "t3.micro")
    yield "replbox"
    cloudsh("terminate", "replbox", "--yes")


def spawn() -> pexpect.spawn:
    env = {**os.environ, "CLOUDSH_SANDBOX": "1", "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(
        sys.executable, ["-m", "cloudsh", "repl"], env=env, encoding="utf-8",
        dimensions=(30, 160), timeout=30,
    )
    if os.environ.get("REPL_LOG"):
        child.logfile_read = open(os.environ["REPL_LOG"], "a")  # noqa: SIM115
    child.expect_exact(PROMPT)
    return child


def settle() -> None:
    """Let the shell get back to its prompt (raw mode) before sending a control key:
    typed ahead in cooked mode, Ctrl-D is a terminal EOF rather than a key."""
    time.sleep(0.3)


def wait_for_index(name: str, timeout: float = 20.0) -> None:
    """The background refresh writes the completion cache once it has listed everything."""
    cache = Settings.load().cache_dir / "completion-index.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cache.is_file() and name in cache.read_text():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{name} never reached the completion index")


def test_completion_streaming_ctrl_c_and_history(box: str) -> None:
    history = Settings.load().state_dir / "repl_history"
    history.unlink(missing_ok=True)
    child = spawn()
    try:
        wait_for_index(box)
        # Tab completes the instance name: the command then runs on that box.
        child.send("run repl")
        child.send("\t")
        child.sendline(" -- 'echo completed-$((40+2))'")
        child.expect_exact("completed-42")
        child.expect_exact(PROMPT)

        # A long command streams its output, and Ctrl-C cancels it but not the shell.
        child.sendline(f"run {box} -- 'for i in 1 2 3 4 5 6 7 8 9; do echo tick$i; sleep 0.5; done'")
        child.expect_exact("tick1")
        child.expect_exact("tick2")  # arrives ~0.5 s later: streamed, not buffered
        child.sendintr()
        child.expect_exact("cancelled")
        child.expect_exact(PROMPT)
        assert "tick9" not in child.before

        # Ctrl-C at the prompt just clears the line.
        settle()
        child.send("\x03")
        child.expect_exact(PROMPT)

        # Typos and bad arguments are one line each; the shell goes on.
        child.sendline("lss")
        child.expect_exact("did you mean `ls`?")
        child.expect_exact(PROMPT)
        child.sendline("launch")
        child.expect_exact("usage")
        child.expect_exact(PROMPT)
        child.sendline(f"run {box} -- exit 3")
        child.expect_exact("(exit status 3)")
        child.expect_exact(PROMPT)

        child.sendline(f"run {box} -- 'echo from-$((1+1))-history'")
        child.expect_exact("from-2-history")
        child.expect_exact(PROMPT)
        settle()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert f"+run {box} -- 'echo from-$((1+1))-history'" in history.read_text()

    # History survives a restart: Up recalls the last line of the previous session.
    child = spawn()
    try:
        child.send("\x1b[A")
        child.send("\r")
        child.expect_exact("from-2-history")
        child.expect_exact(PROMPT)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_help_inside_the_shell() -> None:
    child = spawn()
    try:
        child.sendline("help")
        child.expect_exact("ssh-config")
        child.expect_exact(PROMPT)
        child.sendline("help resize")
        child.expect_exact("usage: cloudsh resize")
        child.expect_exact(PROMPT)
        settle()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_completion_cache_from_last_session_is_used_at_start(tmp_path: Path, box: str) -> None:
    # A second shell offers names at once, from the cache the first one wrote.
    first = spawn()
    try:
        wait_for_index(box)
        first.sendeof()
        first.expect(pexpect.EOF)
    finally:
        first.close(force=True)
    child = spawn()
    try:
        settle()  # the prompt is drawn; let the shell take the terminal before typing
        child.send(f"run {box[:4]}")
        child.send("\t")
        time.sleep(0.2)  # completion is applied asynchronously; a person types slower
        child.send(" -- 'echo cached-$((1+1))'\r")
        child.expect_exact("cached-2")
        child.expect_exact(PROMPT)
        settle()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def readme_section(marker: str) -> str:
    """The fenced block after `<!-- marker` in README.md (or the section draft beside it)."""
    import re

    for path in (Path(__file__).parent.parent / "README.md", Path("/tmp/readme-repl.md")):
        if path.is_file() and f"<!-- {marker}" in path.read_text():
            text = path.read_text().split(f"<!-- {marker}", 1)[1]
            found = re.search(r"```\w*\n(.*?)```", text, re.S)
            assert found, f"no code block after {marker} in {path}"
            return found.group(1)
    pytest.skip(f"no README section marked {marker}")


def test_readme_repl_session() -> None:
    import re

    steps: list[tuple[str, list[str]]] = []
    for line in readme_section("repl-session").splitlines():
        if line.startswith("cloudsh> "):
            steps.append((line.removeprefix("cloudsh> "), []))
        elif steps:
            steps[-1][1].append(line)
    assert len(steps) >= 4
    child = spawn()
    try:
        for command, expected in steps:
            child.sendline(command)
            for want in expected:
                # `…` in the README stands for what differs per run (ids, UUIDs).
                pattern = r"\s+".join(".*?".join(re.escape(p) for p in w.split("…")) for w in want.split())
                child.expect(pattern, timeout=60)
            child.expect_exact(PROMPT)
        settle()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_confirmation_and_interactive_connect(box: str) -> None:
    child = spawn()
    try:
        # A destructive command asks on the terminal; "n" changes nothing.
        child.sendline(f"terminate {box}")
        child.expect_exact("[y/N]")
        child.sendline("n")
        child.expect_exact(f"did not terminate {box}")
        child.expect_exact(PROMPT)
        # `connect` hands the terminal to OpenSSH and takes it back when it exits.
        child.sendline(f"connect {box}")
        child.expect(r"[$#] ")
        child.sendline("echo in-ssh-$((1+1))")
        child.expect_exact("in-ssh-2")
        child.sendline("exit")
        child.expect_exact(PROMPT)
        child.sendline(f"run {box} -- 'echo still-$((2+2))'")
        child.expect_exact("still-4")
        child.expect_exact(PROMPT)
        settle()
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "replbox" in ok("ls")


async def test_sandbox_interrupt_waits_for_the_backend_it_needs(box: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A shell just started has no backend yet. `sandbox interrupt` acts on a box of the
    # cloud, so the shell connects first; `sandbox status` and its kin need no backend.
    from cloudsh.errors import CloudshError
    from cloudsh.repl import Shell
    from cloudsh.root import connect
    from cloudsh.services.backend import Backend

    def offline() -> Backend:
        raise CloudshError("no cloud here", "managing the sandbox needs none")

    for factory, line in ((lambda: connect(Settings.load(), sandbox=True), f"sandbox interrupt {box}"),
                          (offline, "sandbox status")):
        shell = Shell(factory)
        try:
            status = await shell.execute(line)
            captured = capsys.readouterr()
            if line == "sandbox status":
                assert status == 0 and "sandbox running" in captured.out
            else:  # the backend answered: the box is on demand, which the sandbox does not interrupt
                assert status == 2 and "only spot instances are interrupted" in captured.err
                assert "not connected" not in captured.err
        finally:
            if shell._refresh_task is not None:
                shell._refresh_task.cancel()
                with contextlib.suppress(BaseException):
                    await shell._refresh_task
            if shell._backend is not None:
                await shell._backend.close()
