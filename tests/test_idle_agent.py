"""The idle agent's signals (`cloudsh.agents.idle`) run in this process: a Jupyter server
(the sandbox's stand-in, on loopback) read with its token, one it cannot read counted as
busy and named, a GPU box without a working `nvidia-smi` counted as busy."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudsh.agents import idle as agent
from cloudsh.ops.idle import parse_after, short, span
from cloudsh.sandbox.tools import jupyter_server


@pytest.fixture
def jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime dir whose one server has an idle kernel active 10 s ago and a busy one."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, jupyter_server.__file__, "--token", "secret", "--kernel", "python3:idle:10",
         "--kernel", "ir:busy"], env={"JUPYTER_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
    )
    for _ in range(100):
        if list(tmp_path.glob("jpserver-*.json")):
            break
        time.sleep(0.05)
    yield next(tmp_path.glob("jpserver-*.json"))
    proc.terminate()
    proc.wait()


def test_kernels_read_with_the_token(jupyter: Path) -> None:
    now = time.time()
    found = [what for what, _ in agent.jupyter_kernels(now, after=60)]
    assert found == ["jupyter kernel python3 active 10 s ago", "jupyter kernel ir busy"]
    assert [what for what, _ in agent.jupyter_kernels(now, after=5)] == ["jupyter kernel ir busy"]


def test_a_server_it_cannot_read_counts_as_busy(jupyter: Path) -> None:
    info = json.loads(jupyter.read_text())
    jupyter.write_text(json.dumps({**info, "token": "wrong"}))
    [(what, _)] = agent.jupyter_kernels(time.time(), after=60)
    assert "unreadable" in what and "403" in what and "counted as busy" in what


def test_a_gpu_without_nvidia_smi_counts_as_busy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    [(what, _)] = agent.gpu_busy(time.time(), 5)
    assert "GPU utilisation unreadable" in what and "counted as busy" in what


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("45m", 2700), ("2h", 7200), ("45", 2700), ("off", None)])
def test_idle_times(text: str, seconds: float | None) -> None:
    assert parse_after(text) == seconds


def test_the_short_idle_status_and_spans() -> None:
    rec = {"state": "running", "idle_stop_after_s": 3600, "awake_because": [], "stops_in_s": 2520.4}
    assert short(rec) == "stops in 42m"
    two = ["jupyter kernel python3 busy", "ssh session on pts/0 active 2 min ago"]
    assert short({**rec, "awake_because": two}) == "busy: jupyter +1"
    assert short({**rec, "awake_because": ["process python3 (pid 12) busy at 80% CPU"]}) == "busy: python3"
    assert short({**rec, "awake_because": ["process 12 matches keep-alive 'train'"]}) == "busy: keep-alive"
    assert short({**rec, "idle_stop_after_s": None}) == "off"
    assert short({**rec, "stops_in_s": None}) == "?"  # before the agent's first check
    assert short({**rec, "state": "stopped"}) == "-"
    assert [span(s) for s in (2, 90, 3558, 3600, 7260)] == ["2 s", "1 min 30 s", "59 min", "1 h", "2 h 1 min"]
