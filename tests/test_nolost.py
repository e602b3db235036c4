"""Nothing lost: exact sync, one home per job, copies through temporary names, on the
sandbox through the real `cloudsh` program, every file checked with sha256 on both sides."""

from __future__ import annotations

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

import pytest

from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

ODD = b"caf\xe9-\xff.bin"  # a file name that is not UTF-8


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[tuple[str, Path]]:
    """A box and its home directory as the sandbox keeps it."""
    name = f"nolost-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    [inst] = [i for i in json.loads(ok("ls", "--json")) if i["name"] == name]
    yield name, sandbox.dir / "instances" / inst["id"] / "root" / "home" / "ubuntu"
    cloudsh("terminate", name, "--yes")


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


def test_sync_is_exact_for_same_size_rewrites_odd_names_and_local_edits(box: tuple[str, Path], tmp_path: Path) -> None:
    name, home = box
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
    assert ok("sync", job_id).startswith(f"{job_id}: 0 copied")
    # Later jobs on the same box are not blocked by the name.
    assert job_id in {j["id"] for j in json.loads(ok("jobs", "--json"))}


def _read_only(local: Path) -> list[str]:
    """A prefix that runs cloudsh with `local` read-only (root ignores file modes)."""
    if os.geteuid() != 0:
        local.chmod(0o555)
        return []
    if not shutil.which("bwrap"):
        pytest.skip("needs bwrap to make a read-only folder as root")
    return ["bwrap", "--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--ro-bind", str(local), str(local)]


def test_a_read_only_local_folder_is_an_error_naming_it(box: tuple[str, Path], tmp_path: Path) -> None:
    name, _ = box
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


def test_two_jobs_from_one_folder_get_their_own_homes(box: tuple[str, Path], tmp_path: Path) -> None:
    name, home = box
    train = _script(tmp_path, "train.sh", "mkdir -p out\necho \"$CLOUDSH_JOB_ID\" > out/metrics.csv\n")
    env = {**os.environ, "CLOUDSH_SANDBOX": "1"}
    runs = [subprocess.run([sys.executable, "-m", "cloudsh", "script", name, str(train), "--sync", "out", "--follow"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr
    first, second = (r.stdout.splitlines()[0] for r in runs)
    assert f"this job's go to {tmp_path / 'out' / second}" in runs[1].stderr
    jobs = {j["id"]: j for j in json.loads(ok("jobs", "--json"))}
    assert jobs[first]["local_dir"] == str(tmp_path / "out")
    assert jobs[second]["local_dir"] == str(tmp_path / "out" / second)
    assert (tmp_path / "out" / "metrics.csv").read_text() == f"{first}\n"
    assert (tmp_path / "out" / second / "metrics.csv").read_text() == f"{second}\n"
    assert _sha(tmp_path / "out" / second / "metrics.csv") == _sha(home / "out" / "metrics.csv")


def test_put_goes_through_a_temporary_name_and_asks_before_replacing(box: tuple[str, Path], tmp_path: Path) -> None:
    name, home = box
    old = tmp_path / "old.bin"
    old.write_bytes(os.urandom(1 << 20))
    ok("put", name, str(old), "big.bin")
    assert _sha(home / "big.bin") == _sha(old)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(160):
            f.write(os.urandom(1 << 20))
    # No terminal, no flag: refused in one line naming the flag; the file is untouched.
    r = cloudsh("put", name, str(big), "big.bin")
    assert r.returncode == 2 and "--force" in one_line_error(r)
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
    ok("put", name, str(big), "big.bin", "--force")
    assert _sha(home / "big.bin") == _sha(big)
    # A directory copied twice lands in the same place, replaced (no nesting).
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("v1")
    ok("put", name, str(project), "project")
    (project / "train.py").write_text("v2")
    ok("put", name, str(project), "project", "--yes")
    assert not (home / "project" / "project").exists()
    assert (home / "project" / "train.py").read_text() == "v2"
    back = tmp_path / "back"
    for _ in range(2):
        ok("get", name, "project", str(back), "--force")
    assert sorted(p.name for p in back.rglob("*")) == ["train.py"]


def test_workdir_uploaded_twice_replaces_the_folder(box: tuple[str, Path], tmp_path: Path) -> None:
    name, home = box
    work = tmp_path / "code"
    work.mkdir()
    run = _script(tmp_path, "run.sh", 'cat "$CLOUDSH_WORKDIR/v.txt"\n')
    for version in ("one", "two"):
        (work / "v.txt").write_text(version)
        r = cloudsh("script", name, str(run), "--workdir", str(work), "--follow")
        assert r.returncode == 0, r.stderr
        assert version in r.stdout
    assert not (home / "code" / "code").exists()
    assert _sha(home / "code" / "v.txt") == _sha(work / "v.txt")
