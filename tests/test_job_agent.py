"""The job supervisor (`cloudsh.agents.jobs`) run in this process, on this machine.

Its job directories live under a temporary home; a small HTTP server on loopback stands
in for the instance metadata service (IMDSv2: a token, then `spot/instance-action`).
"""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloudsh import agents
from cloudsh.agents import jobs as agent

NOTICE = {"action": "stop", "time": "2026-11-30T12:00:00Z"}


class Metadata:
    """IMDSv2 on 127.0.0.1: tokens it handed out are good until `expire()`."""

    def __init__(self) -> None:
        self.notice: dict[str, str] | None = None
        self.tokens: list[str] = []
        self.issued = 0
        self.gets = 0
        meta = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._answer(400, "")
                    return
                meta.tokens.append(f"token-{meta.issued}")
                meta.issued += 1
                self._answer(200, meta.tokens[-1])

            def do_GET(self) -> None:
                meta.gets += 1
                if self.headers.get("X-aws-ec2-metadata-token") not in meta.tokens:
                    self._answer(401, "")
                elif self.path == "/latest/meta-data/spot/instance-action" and meta.notice:
                    self._answer(200, json.dumps(meta.notice))
                else:
                    self._answer(404, "")

            def _answer(self, code: int, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def expire(self) -> None:
        self.tokens.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def imds() -> Iterator[Metadata]:
    meta = Metadata()
    yield meta
    meta.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imds: Metadata) -> Path:
    """A box's home for the agent, here and in the supervisors it starts."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSH_IMDS_ENDPOINT", imds.url)
    monkeypatch.setattr(agent, "HOME", str(tmp_path))
    monkeypatch.setattr(agent, "JOBS", str(tmp_path / ".cloudsh" / "jobs"))
    monkeypatch.setattr(agent, "IMDS", imds.url)
    # This machine's own crontab is never touched: a stand-in keeps it in the temporary home.
    crontab = tmp_path / "crontab"
    crontab.write_text(f'#!/bin/sh\nf="{tmp_path}/.crontab"\nif [ "$1" = -l ]; then cat "$f"; else cat > "$f"; fi\n')
    crontab.chmod(0o755)
    monkeypatch.setattr(agent, "CRONTAB", str(crontab))
    return tmp_path


def _job(home: Path, jid: str, script: str, sync_dir: str = "") -> Path:
    d = home / ".cloudsh" / "jobs" / jid
    d.mkdir(parents=True)
    (d / "run.sh").write_text(script)
    (d / "run.sh").chmod(0o755)
    (d / "job.json").write_text(json.dumps({"script": "run.sh", "sync_dir": sync_dir, "env": {"FOO": "bar"}}))
    return d


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _wait(check: Any, what: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_shipped_source_is_the_module_and_runs_on_an_older_python() -> None:
    text = agents.source("jobs")
    assert text == Path(agent.__file__).read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    tree = ast.parse(text, feature_version=(3, 8))  # Ubuntu 20.04's python3
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in imported if m.split(".")[0] not in sys.stdlib_module_names | {"__future__"}]
    with pytest.raises(LookupError):
        agents.source("no_such_program")


def test_status_of_missing_lost_and_dead_jobs(home: Path) -> None:
    assert agent.status("nope") == {"state": "missing"}
    d = home / ".cloudsh" / "jobs" / "half"
    d.mkdir(parents=True)
    assert agent.status("half") == {"state": "lost"}  # made, never started
    (d / "state.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "started": 1.0}))
    (d / "log").write_text("one\n\ntwo\nthree\n  \nfour\n")
    st = agent.status("half")
    assert st["state"] == "lost"  # the pid is alive but is no supervisor of this job
    assert st["tail"] == ["two", "three", "four"]
    (d / "state.json").write_text(json.dumps({"state": "finished", "exit": 3}))
    assert agent.status("half")["state"] == "finished"
    assert agent.all_ids() == ["half"]


def test_state_transitions() -> None:
    running = {"state": "running", "started": 100.0, "runs": 1}
    assert agent.end_state(running, 0, False, False)["state"] == "finished"
    assert agent.end_state(running, -15, False, True) | {"ended": 0} == {**running, "state": "stopped", "exit": 143, "ended": 0}
    interrupted = dict(running, state="interrupted", noticed=150.0)
    assert agent.end_state(interrupted, 1, True, False)["state"] == "interrupted"
    assert agent.time_before({}) == 0.0
    assert agent.time_before({"before_s": 10.0, "started": 100.0, "ended": 130.0}) == 40.0
    assert agent.time_before({"started": 100.0, "noticed": 160.0}) == 60.0  # the box stopped before the end
    env = agent.job_env("j1", {"env": {"FOO": "bar"}, "sync_dir": "/s"}, resume=True)
    assert env["FOO"] == "bar" and env["CLOUDSH_RESUME"] == "1" and env["CLOUDSH_SYNC_DIR"] == "/s"
    assert env["CLOUDSH_INTERRUPT_FILE"].endswith("/j1/interrupted")
    assert "CLOUDSH_RESUME" not in agent.job_env("j1", {}, resume=False)


def test_notice_token_handling(home: Path, imds: Metadata) -> None:
    action, token = agent.notice(None)
    assert action is None and token == "token-0"  # no notice: 404, the token is kept
    assert agent.notice(token) == (None, "token-0")
    assert len(imds.tokens) == 1
    imds.notice = NOTICE
    assert agent.notice(token) == (NOTICE, "token-0")
    imds.expire()
    assert agent.notice(token) == (None, None)  # 401: ask for a new token next time
    assert agent.notice(None) == (NOTICE, "token-1")
    imds.close()
    assert agent.notice("token-1") == (None, None)  # nobody answers: no notice


def test_an_interruption_notice_marks_terms_and_records(home: Path, imds: Metadata, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "POLL_S", 0.05)
    d = _job(home, "train-1", "#!/bin/bash\ntrap 'echo TERM marker=$(cat \"$CLOUDSH_INTERRUPT_FILE\" | wc -l); exit 7' TERM\n"
             "echo ready FOO=$FOO; while true; do sleep 0.05; done\n")
    supervisor = threading.Thread(target=agent.supervise, args=("train-1", False))
    supervisor.start()
    _wait(lambda: "ready" in _text(d / "log"), "the script to start")
    # The script may print before the supervisor has written down that it runs.
    _wait(lambda: (agent.read_json(str(d / "state.json")) or {}).get("state") == "running", "the state to say so")
    gets = imds.gets
    _wait(lambda: imds.gets > gets + 2, "the supervisor to poll")
    imds.notice = NOTICE
    supervisor.join(10)
    assert not supervisor.is_alive()
    state = agent.read_json(str(d / "state.json"))
    assert state["state"] == "interrupted" and state["exit"] == 7 and state["notice"] == NOTICE
    assert state["noticed"] <= state["ended"] and state["runs"] == 1
    assert json.loads((d / "interrupted").read_text()) == NOTICE
    log = (d / "log").read_text()
    assert "ready FOO=bar" in log and "spot interruption notice (stop at 2026-11-30T12:00:00Z)" in log
    assert "TERM marker=1" in log  # the marker was there before the SIGTERM


def test_start_stop_logs_and_resume(home: Path) -> None:
    _job(home, "loop-1", "#!/bin/bash\ntrap 'echo stopping; exit 0' TERM\necho run resume=${CLOUDSH_RESUME:-0}\n"
         "while true; do sleep 0.05 & wait $!; done\n")
    started = agent.start("loop-1", None, resume=False)
    assert started["ok"] and started["state"]["state"] == "running"
    assert agent.start("loop-1", None, resume=False)["error"] == "job loop-1 is still running"
    assert agent.status("loop-1")["state"] == "running"
    stopped = agent.stop("loop-1", 10)
    assert stopped["state"] == "stopped" and stopped["exit"] == 0
    out = io.BytesIO()
    agent.logs("loop-1", follow=True, out=out)  # the supervisor is gone: returns at the end
    assert out.getvalue().decode().splitlines() == ["run resume=0", "stopping"]
    again = agent.start("loop-1", None, resume=True)
    assert again["ok"] and again["state"]["runs"] == 2 and again["state"]["before_s"] > 0
    _wait(lambda: "resume=1" in _text(home / ".cloudsh/jobs/loop-1/log"), "the resumed run")
    assert agent.stop("loop-1", 10)["state"] == "stopped"
    missing = agent.start("nothing-here", None, resume=False)
    assert not missing["ok"] and "has no files on this box" in missing["error"]


def test_a_new_job_checks_its_spec(home: Path) -> None:
    _job(home, "new-1", "#!/bin/sh\necho hi\n")
    refused = agent.start("new-1", json.dumps({"script": "run.sh", "sync_dir": "/proc/nope"}), resume=False)
    assert not refused["ok"] and "sync dir /proc/nope" in refused["error"]
    answer = agent.start("new-1", json.dumps({"script": "run.sh", "sync_dir": "out"}), resume=False)
    assert answer["ok"] and answer["sync_dir"] == str(home / "out") and (home / "out").is_dir()
    _wait(lambda: agent.status("new-1")["state"] == "finished", "the job to finish")
    assert agent.status("new-1")["exit"] == 0 and agent.status("new-1")["tail"] == ["hi"]


def test_listing_skips_partial_and_open_files(home: Path) -> None:
    out = home / "out"
    (out / "deep").mkdir(parents=True)
    (out / "a.txt").write_text("a")
    (out / "deep" / "b.bin").write_bytes(b"bb")
    (out / ".cloudsh-partial").mkdir()
    (out / ".cloudsh-partial" / "half").write_text("x")
    (out / "link").symlink_to(out / "a.txt")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'w'); f.write('x'); f.flush(); "
         "print('open', flush=True); time.sleep(60)", str(out / "busy.log")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        answer = agent.listing("out")
    finally:
        writer.kill()
        writer.wait()
    assert answer["dir"] == str(out.resolve()) and answer["open"] == 1
    assert sorted((r, s) for r, s, _ in answer["files"]) == [("a.txt", 1), ("deep/b.bin", 2)]
    assert agent.listing("nowhere")["files"] == []


def test_main_prints_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _job(home, "j-1", "#!/bin/sh\n")
    assert agent.main(["status"]) == 0
    assert json.loads(capsys.readouterr().out) == {"j-1": {"state": "lost"}}
    assert agent.main(["status", "j-2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"j-2": {"state": "missing"}}
    assert agent.main(["bogus"]) == 2 and "unknown command bogus" in capsys.readouterr().err
    assert agent.main([]) == 2


def test_a_paused_job_resumes_at_boot(home: Path) -> None:
    _job(home, "move-1", "#!/bin/bash\ntrap 'echo paused marker=$(wc -l < \"$CLOUDSH_INTERRUPT_FILE\"); exit 143' TERM\n"
         "echo run resume=${CLOUDSH_RESUME:-0}\nwhile true; do sleep 0.05 & wait $!; done\n")
    _job(home, "done-1", "#!/bin/sh\necho once\n")
    assert agent.start("done-1", json.dumps({"script": "run.sh"}), resume=False)["ok"]
    # A new job puts the line that resumes jobs at boot in the crontab, once.
    assert agent.start("move-1", json.dumps({"script": "run.sh"}), resume=False)["ok"]
    assert (home / ".crontab").read_text().splitlines() == [agent.BOOT_LINE]
    _wait(lambda: agent.status("done-1")["state"] == "finished", "the short job to finish")
    paused = agent.stop("move-1", 10, pause=True)
    assert paused["state"] == "interrupted" and paused["exit"] == 143
    assert "paused marker=1" in _text(home / ".cloudsh/jobs/move-1/log")
    # At boot only the interrupted job runs again, with CLOUDSH_RESUME=1.
    assert agent.main(["boot"]) == 0
    _wait(lambda: "resume=1" in _text(home / ".cloudsh/jobs/move-1/log"), "the resumed run")
    assert agent.status("move-1")["runs"] == 2 and agent.status("done-1")["runs"] == 1
    assert agent.stop("move-1", 10)["state"] == "stopped"


def test_exclusions_leave_out_exactly_the_files_open_for_writing(home: Path, tmp_path: Path) -> None:
    """What `exclude` writes, read by rsync as the copy home reads it (`--from0
    --exclude-from`): names with rsync's wildcards, a backslash or bytes that are not UTF-8
    are left out exactly while open, and closed files a loose pattern would match come."""
    out = home / "out"
    (out / "deep").mkdir(parents=True)
    (home / ".cloudsh" / "jobs").mkdir(parents=True)
    busy = ["st*ar.log", "back\\slash.log", "q?[x].log", os.fsdecode(b"caf\xe9.log"), "deep/busy.log"]
    closed = ["stXar.log", "qZx.log", "back\\slash.txt", "deep/done.txt"]
    for name in busy + closed:
        (out / name).write_bytes(os.fsencode(name))
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; fs = [open(p, 'a') for p in sys.argv[1:]]; "
         "print('open', flush=True); time.sleep(60)", *(str(out / n) for n in busy)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        assert agent.main(["exclude", "out", "j-1"]) == 0
    finally:
        writer.kill()
        writer.wait()
    rules = home / ".cloudsh" / "jobs" / ".open-j-1"
    dest = tmp_path / "dest"
    subprocess.run(["rsync", "-a", "--from0", f"--exclude-from={rules}", f"{out}/", f"{dest}/"], check=True)
    came = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert came == sorted(closed)
