"""The IPython namespace built and exercised without a terminal, `cloudsh ipython` on a
pseudo-terminal, and the README's API session run as a doctest."""

from __future__ import annotations

import doctest
import os
import sys
from collections.abc import Iterator

import pytest

from cloudsh.api import Cloud
from cloudsh.ipython import _config, banner, build_namespace
from tests.test_repl import readme_section

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    c = Cloud(sandbox=True)
    box = c.launch("ipybox", "t3.micro")
    yield c
    box.terminate()
    c.close()


def test_banner_and_namespace(cloud: Cloud) -> None:
    text = banner(cloud)
    assert "SANDBOX" in text and "no AWS account" in text and 'cloud["box"]' in text
    ns = build_namespace(cloud)
    assert ns["cloud"] is cloud and ns["Cloud"] is Cloud
    assert issubclass(ns["CloudshError"], Exception)


def test_shell_runs_the_api_and_completes_names(cloud: Cloud) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    ns = build_namespace(cloud)
    shell = InteractiveShell(user_ns=ns, config=_config(banner(cloud)))
    try:
        result = shell.run_cell('box = cloud["ipybox"]\nout = box.run("echo from-ipython").stdout')
        assert result.success, result.error_in_exec
        assert ns["out"] == "from-ipython\n"
        # `cloud["ipy<TAB>` completes instance names.
        _, matches = shell.complete("", 'cloud["ipy', len('cloud["ipy'))
        assert "ipybox" in matches
        # Method names and their docstrings are there for `cloud.<TAB>` and `?`.
        _, methods = shell.complete("cloud.la")
        assert any(m.endswith("launch") for m in methods)
        assert "wait until SSH answers" in (type(cloud).launch.__doc__ or "")
        # A missing box is a CloudshError with its hint, never a raw library exception.
        bad = shell.run_cell('cloud["ipybxo"]')
        assert type(bad.error_in_exec).__name__ == "NotFound"
        assert "did you mean ipybox" in str(bad.error_in_exec)
    finally:
        shell.clear_instance()


def test_embedded_shell_in_a_thread_keeps_the_users_names(cloud: Cloud) -> None:
    # What the TUI's IPython key does: IPython in a thread, on a real (pseudo) terminal.
    pexpect = pytest.importorskip("pexpect")
    code = (
        "import threading\n"
        "from cloudsh.api import Cloud\n"
        "from cloudsh.ipython import build_namespace, run_ipython_embedded\n"
        "ns = build_namespace(Cloud(sandbox=True))\n"
        "t = threading.Thread(target=run_ipython_embedded, args=(ns,))\n"
        "t.start(); t.join()\n"
        "print('KEPT', ns.get('answer'))\n"
        "ns['cloud'].close()\n"
    )
    child = pexpect.spawn(sys.executable, ["-c", code], env=_env(), encoding="utf-8",
                          dimensions=(30, 160), timeout=60)
    try:
        child.expect_exact("SANDBOX")
        child.expect(prompt(1))
        child.sendline('answer = cloud["ipybox"].run("echo $((40+2))").stdout.strip()')
        child.expect(prompt(2))
        child.sendline("exit")
        child.expect_exact("KEPT 42")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def prompt(n: int) -> str:
    """IPython's `In [n]:`, whose number is coloured separately."""
    return rf"In \[(\x1b\[[0-9;]*m)*{n}(\x1b\[[0-9;]*m)*\]"


def _env() -> dict[str, str]:
    return {**os.environ, "CLOUDSH_SANDBOX": "1", "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1",
            "IPYTHONDIR": os.path.join(os.environ["HOME"], ".ipython")}


def test_cloudsh_ipython_on_a_terminal() -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "cloudsh", "ipython"], env=_env(), encoding="utf-8",
                          dimensions=(30, 160), timeout=60)
    try:
        child.expect_exact("SANDBOX")
        child.expect(prompt(1))
        child.sendline("print(cloud.label, 6 * 7)")
        child.expect_exact("SANDBOX 42")
        child.expect(prompt(2))
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_readme_api_session(cloud: Cloud) -> None:
    text = readme_section("api-session")
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, build_namespace(cloud), "README api-session", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 8 and result.failed == 0
