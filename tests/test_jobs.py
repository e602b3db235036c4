"""`script`, `jobs`, `logs`, `sync`, `job stop` on the sandbox, through the real `cloudsh` program."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

PULLER = """#!/bin/bash
# Writes a result, then waits (up to 30 s) for the test to let it finish.
mkdir -p out/sub
echo "first $FOO" > out/first.txt
echo "nested" > out/sub/nested.txt
echo "wrote first"
for i in $(seq 300); do [ -f release ] && break; sleep 0.1; done
echo "second" > out/second.txt
echo "bye"
exit 3
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _jobs() -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in json.loads(ok("jobs", "--json"))}


def _popen(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CLOUDSH_SANDBOX": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cloudsh", *args], cwd=cwd, env=env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[str]:
    name = f"jobs-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    yield name
    cloudsh("terminate", name, "--yes", "--discard-results")


def test_results_come_home_while_the_script_runs(box: str, tmp_path: Path) -> None:
    script = _write(tmp_path / "puller.sh", PULLER)
    local = tmp_path / "results"
    follow = _popen("script", box, str(script), "--sync", f"out:{local}", "--env", "FOO=bar", "--follow", cwd=tmp_path)
    try:
        # rsync brings one file after the other: each complete under its name, not all at once.
        nested = _wait_for(lambda: (local / "sub" / "nested.txt").exists() and local / "sub" / "nested.txt", 20,
                           "the first results")
        assert nested.read_text() == "nested\n" and (local / "first.txt").read_text() == "first bar\n"
        running = [j for j in _jobs().values() if j["instance_name"] == box and j["script"] == "puller.sh"]
        assert [j["state"] for j in running] == ["running"]  # the script is still going
        assert not (local / "second.txt").exists()
        ok("run", box, "--", "touch", "release")
        out, err = follow.communicate(timeout=30)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 3, err  # the script's own exit status
    job_id = out.splitlines()[0]
    assert "wrote first" in out and "bye" in out
    assert (local / "second.txt").read_text() == "second\n"
    assert not [p for p in local.rglob("*") if p.name.startswith(".")]  # nothing partial left
    job = _jobs()[job_id]
    assert job["state"] == "finished" and job["exit_status"] == 3
    assert job["local_dir"] == str(local) and job["cost"] is not None and job["runtime_s"] > 0
    assert "bye" in ok("logs", job_id)
    # The record is in EC2 tags: any machine sees it.
    [inst] = [i for i in json.loads(ok("ls", "--json")) if i["name"] == box]
    tags = {t["Key"]: t["Value"] for r in _ec2(tmp_path).describe_instances(InstanceIds=[inst["id"]])["Reservations"]
            for i in r["Instances"] for t in i.get("Tags", [])}
    assert json.loads(tags[f"cloudsh:job:{job_id}"])["s"] == "finished"


def _ec2(_: Path) -> Any:
    import boto3

    return boto3.client("ec2", endpoint_url=_endpoint(), region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def _endpoint() -> str:
    from cloudsh.config import Settings
    from cloudsh.sandbox.state import read_state

    state = read_state(Settings.load().sandbox_path)
    assert state is not None
    return state.endpoint


def test_logs_follow_and_job_stop(box: str, tmp_path: Path) -> None:
    script = _write(tmp_path / "forever.sh", "#!/bin/bash\ntrap 'echo stopping; exit 0' TERM\n"
                    "while true; do echo tick; sleep 0.2 & wait $!; done\n")
    job_id = ok("script", box, str(script)).strip()
    logs = _popen("logs", job_id, "-f", cwd=tmp_path)
    time.sleep(1.0)
    assert _jobs()[job_id]["state"] == "running"
    assert cloudsh("job", "stop", job_id).returncode == 2  # no terminal, no --yes: refused
    assert ok("job", "stop", job_id, "--yes").split() == [job_id, "stopped"]
    out, _ = logs.communicate(timeout=20)  # -f ends with the job
    assert "tick" in out and "stopping" in out
    assert _jobs()[job_id]["state"] == "stopped"


def test_bad_input_is_one_clear_line_and_starts_nothing(box: str, tmp_path: Path) -> None:
    before = set(_jobs())
    missing = cloudsh("script", box, str(tmp_path / "nope.sh"))
    assert missing.returncode == 2 and "no such file" in one_line_error(missing)
    plain = tmp_path / "plain.sh"
    plain.write_text("echo hi\n")
    r = cloudsh("script", box, str(plain))
    assert r.returncode == 2 and "not executable" in one_line_error(r) and "chmod +x" in r.stderr
    plain.chmod(0o755)  # executable, but exec() on the box would fail with 126
    r = cloudsh("script", box, str(plain))
    assert r.returncode == 2 and "has no #! line" in one_line_error(r) and "#!/usr/bin/env bash" in r.stderr
    script = _write(tmp_path / "ok.sh", "#!/bin/sh\necho hi\n")
    r = cloudsh("script", box, str(script), "--sync", "/etc/cloudsh-results")
    assert r.returncode == 1 and "sync dir /etc/cloudsh-results" in r.stderr and "Traceback" not in r.stderr
    r = cloudsh("logs", "no-such-job")
    assert r.returncode == 1 and "no job 'no-such-job'" in one_line_error(r)
    r = cloudsh("job", "resume", "no-such-job")
    assert r.returncode == 1 and "no job" in one_line_error(r)
    r = cloudsh("script", "no-such-box", str(script))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert set(_jobs()) == before
    listing = ok("run", box, "--", "ls", ".cloudsh/jobs")
    assert sorted(listing.split()) == sorted(["agent.py", *(j for j in before if _jobs()[j]["instance_name"] == box)])


def test_script_on_a_stopped_box_says_how_to_start_it(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"jobs-stopped-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro", "--no-wait")
    try:
        ok("stop", name)
        script = _write(tmp_path / "ok.sh", "#!/bin/sh\necho hi\n")
        r = cloudsh("script", name, str(script))
        line = one_line_error(r)
        assert r.returncode == 1 and "is stopped" in line and f"cloudsh start {name}" in line
    finally:
        cloudsh("terminate", name, "--yes")


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `pid`."""
    parents: dict[int, int] = {}
    cmds: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmds[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p:
                out.append((child, cmds.get(child, "")))
                todo.append(child)
    return out


def test_dropped_connection_during_sync_resumes_without_corruption(box: str, tmp_path: Path) -> None:
    size_mb = 96
    script = _write(tmp_path / "big.sh", f"#!/bin/bash\nmkdir -p big\necho small > big/small.txt\n"
                    f"head -c {size_mb}M /dev/urandom > big/data.bin\n")
    local = tmp_path / "big"
    job_id = ok("script", box, str(script), "--sync", f"big:{local}", "--follow").splitlines()[0]
    # --follow brought everything home; start over to sync the big file on its own.
    for p in local.iterdir():
        p.unlink()
    remote_sum = ok("run", box, "--", "sha256sum", "big/data.bin").split()[0]
    sync = _popen("sync", job_id, cwd=tmp_path)
    killed = None
    try:
        deadline = time.monotonic() + 30
        while killed is None and time.monotonic() < deadline and sync.poll() is None:
            partial = [p for p in local.rglob("*") if p.is_file() and p.name != "small.txt" and p.name != "data.bin"]
            if any(p.stat().st_size > 4 * 1024 * 1024 for p in partial):
                ssh = [pid for pid, cmd in _descendants(sync.pid) if cmd.startswith("ssh ")]
                if ssh:
                    os.kill(ssh[0], signal.SIGKILL)  # the transport dies mid-file
                    killed = ssh[0]
            time.sleep(0.002)
        out, err = sync.communicate(timeout=60)
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.communicate()
    assert killed is not None, "the transfer finished before the connection could be dropped"
    assert sync.returncode == 0, err
    assert hashlib.sha256((local / "data.bin").read_bytes()).hexdigest() == remote_sum
    assert sorted(p.name for p in local.rglob("*")) == ["data.bin", "small.txt"]  # no duplicates, no partials
    # Nothing left to copy: a second pass copies nothing.
    assert ok("sync", job_id).strip().startswith(f"{job_id}: 0 copied")


def test_sync_falls_back_to_sftp_without_rsync(box: str, tmp_path: Path) -> None:
    script = _write(tmp_path / "few.sh", "#!/bin/bash\nmkdir -p few/deep\necho one > few/one.txt\n"
                    "head -c 300000 /dev/urandom > few/deep/blob.bin\n")
    local = tmp_path / "few"
    job_id = ok("script", box, str(script), "--sync", f"few:{local}").strip()
    _wait_for(lambda: _jobs()[job_id]["state"] == "finished", 20, "the job to finish")
    no_rsync = tmp_path / "empty-bin"
    no_rsync.mkdir()
    r = cloudsh("sync", job_id, env={"PATH": str(no_rsync)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{job_id}: 2 copied")
    remote_sum = ok("run", box, "--", "sha256sum", "few/deep/blob.bin").split()[0]
    assert hashlib.sha256((local / "deep" / "blob.bin").read_bytes()).hexdigest() == remote_sum
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == ["deep/blob.bin", "one.txt"]
    assert cloudsh("sync", job_id, env={"PATH": str(no_rsync)}).stdout.startswith(f"{job_id}: 0 copied")


def test_a_job_on_a_terminated_box_is_lost(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"jobs-gone-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    script = _write(tmp_path / "forever.sh", "#!/bin/sh\nwhile true; do sleep 1; done\n")
    job_id = ok("script", name, str(script)).strip()
    assert _jobs()[job_id]["state"] == "running"
    ok("terminate", name, "--yes", "--discard-results")
    assert _jobs()[job_id]["state"] == "lost"


async def test_terminate_preview_lists_results_not_yet_home(box: str, tmp_path: Path) -> None:
    from cloudsh.config import Settings
    from cloudsh.ops.preview import terminate_preview
    from cloudsh.root import connect

    script = _write(tmp_path / "two.sh", "#!/bin/sh\nmkdir -p two\necho a > two/a\necho b > two/b\n")
    local = tmp_path / "two"
    job_id = ok("script", box, str(script), "--sync", f"two:{local}").strip()
    _wait_for(lambda: _jobs()[job_id]["state"] == "finished", 20, "the job to finish")
    backend = connect(Settings.load(), sandbox=True)
    try:
        [inst] = [i for i in await backend.ec2.list_instances() if i.name == box]
        [loss] = await terminate_preview(backend, [inst])
        assert f"{job_id} (2 files)" in loss.results_not_home
        assert "results not yet home" in loss.describe()
        ok("sync", job_id)
        [inst] = [i for i in await backend.ec2.list_instances() if i.name == box]
        [loss] = await terminate_preview(backend, [inst])
        assert not any(r.startswith(job_id) for r in loss.results_not_home)
    finally:
        await backend.close()


def test_workdir_is_uploaded_before_the_script_starts(box: str, tmp_path: Path) -> None:
    work = tmp_path / "project"
    (work / "data").mkdir(parents=True)
    (work / "data" / "train.csv").write_text("a,b\n1,2\n")
    script = _write(tmp_path / "count.sh", '#!/bin/bash\nwc -l < "$CLOUDSH_WORKDIR/data/train.csv"\n')
    job_id = ok("script", box, str(script), "--workdir", str(work)).strip()
    _wait_for(lambda: _jobs()[job_id]["state"] == "finished", 20, "the job to finish")
    assert ok("logs", job_id).strip().splitlines()[-1] == "2"
    r = cloudsh("script", box, str(script), "--workdir", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "not a directory" in one_line_error(r)


def test_results_left_on_a_stopped_box_come_home_when_it_starts(sandbox: Sandbox, tmp_path: Path) -> None:
    name = f"jobs-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    try:
        script = _write(tmp_path / "write.sh", "#!/bin/bash\nmkdir -p out\nfor i in 1 2 3; do echo $i > out/f$i.txt; done\n")
        local = tmp_path / "home"
        job_id = ok("script", name, str(script), "--sync", f"out:{local}").strip()
        _wait_for(lambda: _jobs()[job_id]["state"] == "finished", 20, "the job to finish")
        assert not list(local.glob("f*.txt"))  # nothing followed or synced it yet
        ok("stop", name)
        assert _jobs()[job_id]["state"] == "finished"  # recorded before the box stopped
        started = cloudsh("start", name)
        assert started.returncode == 0, started.stderr
        assert sorted(p.name for p in local.glob("f*.txt")) == ["f1.txt", "f2.txt", "f3.txt"]
        assert "brought home" in started.stderr
    finally:
        cloudsh("terminate", name, "--yes")


def _tag_state(instance_id: str, job_id: str) -> str:
    described = _ec2(Path()).describe_instances(InstanceIds=[instance_id])["Reservations"]
    tags = {t["Key"]: t["Value"] for r in described for i in r["Instances"] for t in i.get("Tags", [])}
    return str(json.loads(tags[f"cloudsh:job:{job_id}"])["s"])


async def test_listing_jobs_writes_no_tags_and_record_states_does(box: str, tmp_path: Path) -> None:
    from cloudsh.config import Settings
    from cloudsh.ops import jobs as ops
    from cloudsh.root import connect

    script = _write(tmp_path / "quick.sh", "#!/bin/sh\necho done\n")
    job_id = ok("script", box, str(script)).strip()
    backend = connect(Settings.load(), sandbox=True)
    writes: list[str] = []
    for op in ("CreateTags", "DeleteTags"):
        backend.clients.register(f"before-call.ec2.{op}", lambda op=op, **_: writes.append(op))
    try:
        [inst] = [i for i in await backend.ec2.list_instances() if i.name == box]

        async def finished() -> bool:
            return {j.id: j.state for j in await ops.list_jobs(backend)}[job_id] == "finished"

        deadline = time.monotonic() + 20
        while not await finished():
            assert time.monotonic() < deadline, "the job did not finish"
        assert (await ops.get_job(backend, job_id)).state == "finished"
        assert _jobs()[job_id]["state"] == "finished"  # `jobs` shows the box's state...
        assert writes == []  # ...and neither listing wrote a tag,
        assert _tag_state(inst.id, job_id) == "running"  # so the tag still says what it said at the start
        recorded = {j.id: j for j in await ops.record_states(backend, only=[inst.id])}
        assert recorded[job_id].state == "finished" and recorded[job_id].exit_status == 0
        assert writes == ["CreateTags"]
        assert _tag_state(inst.id, job_id) == "finished"
        await ops.record_states(backend, only=[inst.id])
        assert writes == ["CreateTags"]  # nothing changed: nothing written
    finally:
        await backend.close()


async def test_sixty_jobs_fit_ec2s_tag_limits_and_all_stay_listed(box: str, tmp_path: Path) -> None:
    """Job 49 on a box must not hit EC2's 50-tag limit: finished jobs move off the tags."""
    from cloudsh.config import Settings
    from cloudsh.models import JOB_TAGS_MAX
    from cloudsh.ops import jobs as ops
    from cloudsh.ops.reach import ssh_host
    from cloudsh.root import connect

    script = _write(tmp_path / f"tiny-{'x' * 230}.sh", "#!/bin/sh\necho ok\n")  # a name no tag holds whole
    plan = ops.plan_script(str(script), sync=f"out:{tmp_path / 'out'}")  # not ./out of the checkout
    backend = connect(Settings.load(), sandbox=True)
    started: list[str] = []
    try:
        for _ in range(3):  # twenty at a time, as several laptops might
            inst = await backend.ec2.find(box)
            host = await ssh_host(backend, inst)
            jobs = await asyncio.gather(*(ops.start_script(backend, inst, host, plan) for _ in range(20)))
            started += [j.id for j in jobs]
    finally:
        await backend.close()
    tags = {t["Key"]: t["Value"] for r in _ec2(tmp_path).describe_instances(Filters=[
        {"Name": "tag:Name", "Values": [box]}, {"Name": "instance-state-name", "Values": ["running"]},
    ])["Reservations"] for i in r["Instances"] for t in i.get("Tags", [])}
    job_tags = {k: v for k, v in tags.items() if k.startswith("cloudsh:job:")}
    assert len(tags) < 50 and len(job_tags) < JOB_TAGS_MAX + 20
    for value in tags.values():
        assert len(value) <= 256 and json.loads(value) is not None if value.startswith("{") else True
    assert all(str(tmp_path) not in v for v in job_tags.values())  # the laptop's paths stay local
    listed = _jobs()
    assert set(started) <= set(listed)  # all 60, moved or tagged
    assert {listed[j]["script"] for j in started[:40]} == {script.name}  # the box's record keeps the whole name
# -- nothing lost: exact sync, one home per job, copies through temporary names ----------

ODD = b"caf\xe9-\xff.bin"  # a file name that is not UTF-8


def _home(sandbox: Sandbox, name: str) -> Path:
    """The box's home directory as the sandbox keeps it."""
    [inst] = [i for i in json.loads(ok("ls", "--json")) if i["name"] == name]
    return sandbox.dir / "instances" / inst["id"] / "root" / "home" / "ubuntu"


def _sha(path: Path | bytes) -> str:
    return hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def _same_tree(home: Path, local: Path) -> None:
    box_files = {p.relative_to(home): _sha(p) for p in home.rglob("*") if p.is_file()}
    here = {p.relative_to(local): _sha(p) for p in local.rglob("*") if p.is_file() and not p.name.endswith(".local-edited")}
    assert box_files == here


def test_sync_is_exact_for_same_size_rewrites_odd_names_and_local_edits(box: str, sandbox: Sandbox, tmp_path: Path) -> None:
    name, home = box, _home(sandbox, box)
    writer = _script(tmp_path, "writer.sh", "mkdir -p exact\nprintf AAAA > exact/a.txt\nprintf keep > exact/b.txt\n"
                     "printf odd > exact/$'caf\\xe9-\\xff.bin'\n")
    local = tmp_path / "exact"
    r = cloudsh("script", name, str(writer), "--sync", f"exact:{local}", "--follow")
    assert r.returncode == 0, r.stderr
    assert "UnicodeEncodeError" not in r.stderr
    job_id = r.stdout.splitlines()[0]
    assert (local / os.fsdecode(ODD)).read_bytes() == b"odd"
    _same_tree(home / "exact", local)
    # Rewritten with the same size, within the same second as the copied version.
    ok("run", name, "--", "s=$(stat -c %Y exact/a.txt); printf BBBB > exact/a.txt; touch -d @$s.123456789 exact/a.txt")
    # Edited here, and changed on the box too: the local edit is kept beside.
    (local / "b.txt").write_text("mine")
    ok("run", name, "--", "printf KEEP > exact/b.txt")
    out = ok("sync", job_id)
    assert out.startswith(f"{job_id}: 2 copied"), out
    assert (local / "a.txt").read_bytes() == b"BBBB"
    assert (local / "b.txt.local-edited").read_text() == "mine"
    _same_tree(home / "exact", local)
    assert job_id in _jobs()  # later jobs on the same box are not blocked by the name


def _read_only(local: Path) -> list[str]:
    """A prefix that runs cloudsh with `local` read-only (root ignores file modes)."""
    if os.geteuid() != 0:
        local.chmod(0o555)
        return []
    if not shutil.which("bwrap"):
        pytest.skip("needs bwrap to make a read-only folder as root")
    return ["bwrap", "--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--ro-bind", str(local), str(local)]


def test_a_read_only_local_folder_is_an_error_naming_it(box: str, tmp_path: Path) -> None:
    name = box
    writer = _script(tmp_path, "ro.sh", "mkdir -p ro\necho result > ro/r.txt\n")
    local = tmp_path / "ro"
    local.mkdir()
    prefix = _read_only(local)
    env = {**os.environ, "CLOUDSH_SANDBOX": "1"}
    r = subprocess.run([*prefix, sys.executable, "-m", "cloudsh", "script", name, str(writer), "--sync",
                        f"ro:{local}", "--follow"], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 1, r.stderr
    assert str(local) in r.stderr and "did not come home" in r.stderr
    job_id = r.stdout.splitlines()[0]
    r = subprocess.run([*prefix, sys.executable, "-m", "cloudsh", "sync", job_id], capture_output=True,
                       text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 1
    assert str(local) in one_line_error(r)
    assert not (local / "r.txt").exists()


def test_two_jobs_from_one_folder_get_their_own_homes_and_workdirs_replace(box: str, sandbox: Sandbox, tmp_path: Path) -> None:
    name, home = box, _home(sandbox, box)
    train = _script(tmp_path, "train.sh", 'mkdir -p out\necho "$CLOUDSH_JOB_ID $(cat "$CLOUDSH_WORKDIR/v.txt")" > out/metrics.csv\n')
    work = tmp_path / "code"
    work.mkdir()
    runs = []
    for version in ("one", "two"):
        (work / "v.txt").write_text(version)
        runs.append(subprocess.run(
            [sys.executable, "-m", "cloudsh", "script", name, str(train), "--sync", "out", "--workdir", "code", "--follow"],
            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "CLOUDSH_SANDBOX": "1"},
            stdin=subprocess.DEVNULL, timeout=120))
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    first, second = (r.stdout.splitlines()[0] for r in runs)
    assert f"this job's go to {tmp_path / 'out' / second}" in runs[1].stderr
    jobs = _jobs()
    assert jobs[first]["local_dir"] == str(tmp_path / "out")
    assert jobs[second]["local_dir"] == str(tmp_path / "out" / second)
    assert (tmp_path / "out" / "metrics.csv").read_text() == f"{first} one\n"
    assert (tmp_path / "out" / second / "metrics.csv").read_text() == f"{second} two\n"
    assert _sha(tmp_path / "out" / second / "metrics.csv") == _sha(home / "out" / "metrics.csv")
    # The second upload replaced the folder (the new code ran), never code/code.
    assert not (home / "code" / "code").exists()
    assert _sha(home / "code" / "v.txt") == _sha(work / "v.txt")


def test_put_goes_through_a_temporary_name_and_asks_before_replacing(box: str, sandbox: Sandbox, tmp_path: Path) -> None:
    name, home = box, _home(sandbox, box)
    old = tmp_path / "old.bin"
    old.write_bytes(os.urandom(1 << 20))
    ok("put", name, str(old), "big.bin")
    assert _sha(home / "big.bin") == _sha(old)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    # No terminal, no flag: refused in one line naming the flag; the file is untouched.
    r = cloudsh("put", name, str(big), "big.bin")
    assert r.returncode == 2 and "--yes" in one_line_error(r)
    # Killed mid-copy: the old file is whole under its name.
    env = {**os.environ, "CLOUDSH_SANDBOX": "1"}
    put = subprocess.Popen([sys.executable, "-m", "cloudsh", "put", name, str(big), "big.bin", "--force"],
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    try:
        deadline = time.monotonic() + 60
        while not killed and put.poll() is None and time.monotonic() < deadline:
            parts = list(home.glob(".big.bin.cloudsh-part-*"))
            if parts and parts[0].stat().st_size > 8 << 20:
                put.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.002)
    finally:
        put.kill()
        put.communicate()
    assert killed, "the copy finished before it could be interrupted"
    assert _sha(home / "big.bin") == _sha(old)
    # A directory copied twice lands in the same place, replaced (no nesting).
    project = tmp_path / f"project-{uuid.uuid4().hex[:4]}"
    project.mkdir()
    (project / "train.py").write_text("v1")
    ok("put", name, str(project), project.name)
    (project / "train.py").write_text("v2")
    ok("put", name, str(project), project.name, "--yes")
    assert not (home / project.name / project.name).exists()
    assert (home / project.name / "train.py").read_text() == "v2"
    back = tmp_path / "back"
    for _ in range(2):
        ok("get", name, project.name, str(back), "--force")
    assert sorted(p.name for p in back.rglob("*")) == ["train.py"]


def test_stop_names_the_running_jobs_and_asks(box: str, tmp_path: Path) -> None:
    sleeper = _script(tmp_path, "sleeper.sh", "sleep 60\n")
    job_id = ok("script", box, str(sleeper)).strip()  # the last test here: the box goes next
    r = cloudsh("stop", box)  # no terminal, no --yes: refused, the job named
    assert r.returncode == 2 and job_id in one_line_error(r) and "--yes" in r.stderr
    assert _jobs()[job_id]["state"] == "running"
