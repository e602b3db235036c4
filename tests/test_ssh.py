"""The SSH service layer against a real asyncssh server and the real OpenSSH client."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ssh_server are parameters here)

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncssh  # noqa: E402  (the test server needs it anyway)
import pytest

from cloudsh.config import Settings
from cloudsh.errors import CloudshError, HostKeyChanged, InvalidState, SandboxError, SSHError
from cloudsh.models import HostInfo, Instance
from cloudsh.sandbox.hosts import SandboxHostResolver
from cloudsh.sandbox.state import SandboxInstance, SandboxState, write_state
from cloudsh.services.hosts import AwsHostResolver, parse_console_host_keys
from cloudsh.services.known_hosts import KnownHosts, fingerprint
from cloudsh.services.openssh import openssh_args, ssh_config_block
from cloudsh.services.paramiko_client import paramiko_client
from cloudsh.services.ssh import SSHService
from tests.sandbox_fixture import Sandbox, sandbox  # noqa: F401
from tests.ssh_server import SSHEnv, public_line, ssh_env, write_client_key  # noqa: F401


@pytest.fixture
async def svc(ssh_env: SSHEnv):
    service = SSHService(ssh_env.settings)
    yield service
    await service.close()


async def _sh(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a local program without blocking the loop the test server lives on."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return subprocess.CompletedProcess(argv, proc.returncode or 0, out.decode(), err.decode())


# -- commands ------------------------------------------------------------------


async def test_run_streams_in_order_and_returns_status(ssh_env: SSHEnv, svc: SSHService) -> None:
    seen: list[tuple[float, str, str]] = []
    result = await svc.run(
        ssh_env.host(),
        "echo one; sleep 0.4; echo two >&2; echo three; exit 3",
        on_stdout=lambda s: seen.append((time.monotonic(), "out", s)),
        on_stderr=lambda s: seen.append((time.monotonic(), "err", s)),
    )
    assert result.exit_status == 3 and not result.ok
    assert result.stdout == "" and result.stderr == ""  # streamed, not accumulated
    assert "".join(s for _, k, s in seen if k == "out") == "one\nthree\n"
    assert "".join(s for _, k, s in seen if k == "err") == "two\n"
    # "one" arrived while the command was still sleeping, not at the end.
    assert seen[-1][0] - seen[0][0] > 0.3


async def test_run_accumulates_signal_and_stdin(ssh_env: SSHEnv, svc: SSHService) -> None:
    host = ssh_env.host()
    ok = await svc.run(host, "echo hi; echo oops >&2")
    assert (ok.stdout, ok.stderr, ok.exit_status) == ("hi\n", "oops\n", 0)
    assert (await svc.run(host, "kill -TERM $$")).exit_status == 128 + signal.SIGTERM
    assert (await svc.run(host, "tr a-z A-Z", stdin="hello\n")).stdout == "HELLO\n"
    data = bytes(range(256)) * 4096  # 1 MiB, more than one SSH window
    res = await svc.run(host, "wc -c", stdin=data)
    assert res.stdout.strip() == str(len(data))
    assert (await svc.run(host, "cat")).stdout == ""  # no stdin: EOF at once, no hang
    assert (await svc.run(host, "exit 7", stdin=data)).exit_status == 7  # input left unread


async def test_run_timeout_and_cancel_stop_the_remote_command(
    ssh_env: SSHEnv, svc: SSHService
) -> None:
    host = ssh_env.host()
    with pytest.raises(SSHError, match="did not finish within"):
        await svc.run(host, "sleep 20", timeout=0.3)

    started = asyncio.Event()
    task = asyncio.create_task(
        svc.run(host, "echo $$ > pid; echo go; sleep 30", on_stdout=lambda s: started.set())
    )
    await asyncio.wait_for(started.wait(), 10)
    pid = int((ssh_env.root / "pid").read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("remote command still running after cancellation")


# -- files ---------------------------------------------------------------------


async def test_put_get_file_and_tree(ssh_env: SSHEnv, svc: SSHService, tmp_path: Path) -> None:
    host = ssh_env.host()
    src = tmp_path / "local"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    await svc.put(host, src / "a.txt", "a.txt")
    assert (ssh_env.root / "a.txt").read_text() == "alpha"
    await svc.put(host, src, "tree")
    assert (ssh_env.root / "tree" / "sub" / "b.bin").read_bytes() == (
        src / "sub" / "b.bin"
    ).read_bytes()

    out = tmp_path / "out"
    out.mkdir()
    assert await svc.get(host, "a.txt", out / "copy.txt") == out / "copy.txt"
    assert (out / "copy.txt").read_text() == "alpha"
    assert await svc.get(host, "tree", f"{out}/") == out / "tree"  # into a dir named with a trailing /
    assert (out / "tree" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    # Again, with a new remote file: merged into the existing tree.
    (ssh_env.root / "tree" / "new.txt").write_text("new")
    await svc.get(host, "tree", out / "tree")  # the same place as the first time, never tree/tree
    assert (out / "tree" / "new.txt").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["copy.txt", "tree"]  # nothing partial left

    with pytest.raises(CloudshError, match="no such file or directory on box: missing.txt"):
        await svc.get(host, "missing.txt", out)
    with pytest.raises(CloudshError, match="no such local file"):
        await svc.put(host, tmp_path / "nope", "x")
    with pytest.raises(CloudshError, match="no such file or directory on box"):
        await svc.put(host, src / "a.txt", "no/such/dir/a.txt")
    assert sorted(p.name for p in out.iterdir()) == ["copy.txt", "tree"]


# -- forwards ------------------------------------------------------------------


async def test_forward_to_a_service_on_the_box(ssh_env: SSHEnv, svc: SSHService) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"echo:" + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    remote_port = server.sockets[0].getsockname()[1]
    fwd = await svc.forward(ssh_env.host(), 0, remote_port, "127.0.0.1")
    try:
        assert fwd.local_port > 0 and fwd.tunnel.url == f"http://localhost:{fwd.local_port}/"
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"echo:ping\n"
        writer.close()
        with pytest.raises(CloudshError, match=f"local port {fwd.local_port} is already in use"):
            await svc.forward(ssh_env.host(), fwd.local_port, remote_port)
        # A dropped connection ends the forward, so `tunnel` can notice and reopen it.
        ssh_env.server.drop_connections()
        await asyncio.wait_for(fwd.wait_closed(), 5)
    finally:
        fwd.close()
        await fwd.wait_closed()
        server.close()
        await server.wait_closed()


# -- pool ----------------------------------------------------------------------


async def test_pool_reuses_one_connection_and_reconnects(ssh_env: SSHEnv, svc: SSHService) -> None:
    host = ssh_env.host()
    results = await asyncio.gather(*(svc.run(host, f"echo {i}") for i in range(8)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    for _ in range(3):
        await svc.run(host, "true")
    assert ssh_env.server.connections == 1

    ssh_env.server.drop_connections()
    await asyncio.sleep(0.1)
    assert (await svc.run(host, "echo back")).stdout == "back\n"
    assert ssh_env.server.connections == 2


async def test_pool_reconnects_after_server_restart(ssh_env: SSHEnv, svc: SSHService) -> None:
    host = ssh_env.host()
    await svc.run(host, "true")
    await ssh_env.server.restart()
    assert (await svc.run(host, "echo again")).stdout == "again\n"


# -- host keys -----------------------------------------------------------------


async def test_tofu_pins_then_refuses_a_changed_key(ssh_env: SSHEnv, svc: SSHService) -> None:
    host = ssh_env.host()
    known = KnownHosts(ssh_env.settings.known_hosts_path)
    assert known.keys("i-0test") == []
    await svc.ensure_pinned(host)
    assert ssh_env.server.auth_attempts == 1
    old = ssh_env.server.host_key_line
    assert known.keys("i-0test") == [old]
    assert ssh_env.settings.known_hosts_path.stat().st_mode & 0o777 == 0o600

    await ssh_env.server.restart(new_host_key=True)
    fresh = SSHService(ssh_env.settings)
    auths = ssh_env.server.auth_attempts
    try:
        with pytest.raises(HostKeyChanged) as err:
            await fresh.run(host, "true")
    finally:
        await fresh.close()
    msg = str(err.value)
    assert (
        "box" in msg
        and fingerprint(old) in msg
        and fingerprint(ssh_env.server.host_key_line) in msg
    )
    assert "cloudsh known-hosts forget box" in msg
    assert known.keys("i-0test") == [old]  # nothing re-pinned
    assert ssh_env.server.auth_attempts == auths  # refused before authenticating

    # The pooled connection died with the restart; reconnecting must refuse too.
    with pytest.raises(HostKeyChanged):
        await svc.run(host, "true")
    assert known.forget("i-0test")
    assert (await svc.run(host, "echo ok")).stdout == "ok\n"
    assert known.keys("i-0test") == [ssh_env.server.host_key_line]


async def test_expected_host_keys(ssh_env: SSHEnv, svc: SSHService) -> None:
    other = public_line(asyncssh.generate_private_key("ssh-ed25519"))
    bad = ssh_env.host(alias="i-0bad", expected=(other,))
    with pytest.raises(HostKeyChanged, match="does not match"):
        await svc.run(bad, "true")
    assert KnownHosts(ssh_env.settings.known_hosts_path).keys("i-0bad") == []

    good = ssh_env.host(alias="i-0good", expected=(other, ssh_env.server.host_key_line))
    assert (await svc.run(good, "echo ok")).ok
    assert KnownHosts(ssh_env.settings.known_hosts_path).keys("i-0good") == [
        ssh_env.server.host_key_line
    ]


# -- errors --------------------------------------------------------------------


async def test_clear_errors(ssh_env: SSHEnv, svc: SSHService, tmp_path: Path) -> None:
    port = ssh_env.server.port
    await ssh_env.server.stop()
    with pytest.raises(SSHError) as err:
        await svc.run(ssh_env.host(), "true")
    assert str(err.value).startswith(
        f"cannot reach box box at 127.0.0.1:{port}: connection refused."
    )
    assert "booting" in err.value.hint
    await ssh_env.server.start()

    stranger = Settings(state_dir=tmp_path / "other", ssh_connect_timeout_s=5.0)
    write_client_key(stranger.key_path)
    host = ssh_env.host()
    wrong_key = HostInfo(
        **{
            **{f: getattr(host, f) for f in host.__dataclass_fields__},
            "key_path": str(stranger.key_path),
        }
    )
    with pytest.raises(SSHError, match="refused cloudsh's key"):
        await SSHService(stranger).run(wrong_key, "true")
    missing = HostInfo(
        **{
            **{f: getattr(host, f) for f in host.__dataclass_fields__},
            "key_path": str(tmp_path / "none"),
        }
    )
    with pytest.raises(SSHError, match="no SSH key at"):
        await svc.run(missing, "true")


# -- readiness -----------------------------------------------------------------


async def test_wait_ready_notices_a_late_server(ssh_env: SSHEnv, svc: SSHService) -> None:
    host = ssh_env.host()
    await ssh_env.server.stop()
    started_at: list[float] = []

    async def boot() -> None:
        await asyncio.sleep(0.6)
        await ssh_env.server.start()  # same port
        started_at.append(time.monotonic())

    booting = asyncio.create_task(boot())
    polls = 0

    async def resolve() -> HostInfo | None:
        nonlocal polls
        polls += 1
        return None if polls < 3 else host  # "no address yet" at first

    t0 = time.monotonic()
    ready = await svc.wait_ready(resolve, timeout=20)
    returned = time.monotonic()
    await booting
    assert ready == host and started_at
    assert returned >= started_at[0] - 0.05  # listening began just before the flag was set
    lag = returned - started_at[0]
    print(
        f"\nwait_ready noticed the server {lag * 1000:.0f} ms after it started (waited {returned - t0:.2f} s)"
    )
    assert lag < 2.0  # generous sanity bound; the design target is < 0.5 s

    await ssh_env.server.stop()
    with pytest.raises(SSHError, match="connection refused"):
        await svc.wait_ready(resolve, timeout=0.5)


# -- OpenSSH -------------------------------------------------------------------

needs_openssh = pytest.mark.skipif(
    shutil.which("ssh") is None, reason="OpenSSH client not installed"
)


@needs_openssh
async def test_openssh_config_ssh_scp_rsync(
    ssh_env: SSHEnv, svc: SSHService, tmp_path: Path
) -> None:
    host = ssh_env.host()
    await svc.ensure_pinned(host)
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ssh_config_block("box", host, ssh_env.settings))

    res = await _sh("ssh", "-F", str(cfg), "box", "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), res.stderr
    res = await _sh(
        *openssh_args(host, ssh_env.settings, command=["echo", "via-args;", "exit", "4"])
    )
    assert (res.returncode, res.stdout) == (4, "via-args\n"), res.stderr

    (tmp_path / "f.txt").write_text("scp me")
    res = await _sh("scp", "-F", str(cfg), str(tmp_path / "f.txt"), "box:scp.txt")
    assert res.returncode == 0, res.stderr
    assert (ssh_env.root / "scp.txt").read_text() == "scp me"

    if shutil.which("rsync"):
        (ssh_env.root / "data" / "d").mkdir(parents=True)
        (ssh_env.root / "data" / "d" / "x.txt").write_text("rsynced")
        # rsync needs rsync on the "box": this test box is this machine.
        res = await _sh("rsync", "-a", "-e", f"ssh -F {cfg}", "box:data/", str(tmp_path / "pulled"))
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "pulled" / "d" / "x.txt").read_text() == "rsynced"

    # OpenSSH honours the pin too: a changed key is refused.
    await ssh_env.server.restart(new_host_key=True)
    res = await _sh("ssh", "-F", str(cfg), "box", "true")
    assert res.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in res.stderr


def test_openssh_args_shape() -> None:
    settings = Settings(state_dir=Path("/s"))
    host = HostInfo("i-1", "box", "1.2.3.4", 22, "ubuntu", "/s/id_ed25519", "i-1")
    args = openssh_args(
        host, settings, forwards=[(8888, 8888), (9000, 80)], command=["nvidia-smi"], tty=True
    )
    assert args[0] == "ssh" and args[-2:] == ["1.2.3.4", "nvidia-smi"]
    for opt in (
        "IdentitiesOnly=yes",
        "HostKeyAlias=i-1",
        "UserKnownHostsFile=/s/known_hosts",
        "StrictHostKeyChecking=yes",
        "ServerAliveInterval=15",
    ):
        assert opt in args
    assert "127.0.0.1:9000:localhost:80" in args and "-t" in args
    block = ssh_config_block("my box", host, settings)
    assert block.startswith("Host my-box\n    HostName 1.2.3.4\n    Port 22\n")


# -- paramiko ------------------------------------------------------------------


async def test_paramiko_client(ssh_env: SSHEnv, svc: SSHService) -> None:
    host = ssh_env.host()
    with pytest.raises(SSHError, match="no host key is pinned"):
        paramiko_client(host, ssh_env.settings)
    await svc.ensure_pinned(host)

    def use() -> str:
        client = paramiko_client(host, ssh_env.settings)
        try:
            _, stdout, _ = client.exec_command("echo from-paramiko")
            return str(stdout.read().decode())
        finally:
            client.close()

    assert await asyncio.to_thread(use) == "from-paramiko\n"
    await ssh_env.server.restart(new_host_key=True)
    with pytest.raises(HostKeyChanged, match="CHANGED"):
        await asyncio.to_thread(paramiko_client, host, ssh_env.settings)


# -- interactive fallback -----------------------------------------------------

_INTERACTIVE = """
import asyncio, sys
from pathlib import Path
from cloudsh.config import Settings
from cloudsh.models import HostInfo
from cloudsh.services.ssh import SSHService
from cloudsh.services.ssh_terminal import interactive

async def main():
    state, port = Path(sys.argv[1]), int(sys.argv[2])
    svc = SSHService(Settings(state_dir=state))
    host = HostInfo("i-0test", "box", "127.0.0.1", port, "ubuntu", str(state / "id_ed25519"), "i-0test")
    try:
        return await interactive(svc, host)
    finally:
        await svc.close()

sys.exit(asyncio.run(main()))
"""


async def test_interactive_fallback_in_a_pty(ssh_env: SSHEnv, svc: SSHService) -> None:
    import fcntl
    import pty
    import struct
    import termios

    await svc.ensure_pinned(ssh_env.host())
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _INTERACTIVE,
        str(ssh_env.settings.state_dir),
        str(ssh_env.server.port),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=Path(__file__).parent.parent,
    )
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()
    got = bytearray()
    data_ready = asyncio.Event()

    def on_read() -> None:
        try:
            got.extend(os.read(master, 65536))
        except OSError:
            loop.remove_reader(master)
        data_ready.set()

    loop.add_reader(master, on_read)
    try:
        for _ in range(100):  # wait until the remote session is up (pty size reported)
            if ssh_env.server.term_sizes:
                break
            await asyncio.sleep(0.05)
        assert ssh_env.server.term_sizes[0] == (100, 30)
        os.write(master, b"echo interactive-$((6*7)); exit 5\n")
        assert await asyncio.wait_for(proc.wait(), 15) == 5
        await asyncio.sleep(0.1)
        assert b"interactive-42" in got
        assert termios.tcgetattr(slave) == before  # raw mode undone
    finally:
        loop.remove_reader(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        os.close(slave)


# -- known hosts and host resolution -------------------------------------------


async def test_known_hosts_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "kh"
    kh = KnownHosts(path)
    k1 = public_line(asyncssh.generate_private_key("ssh-ed25519"))
    k2 = public_line(asyncssh.generate_private_key("ecdsa-sha2-nistp256"))
    kh.pin("i-1", k1 + " a comment")
    kh.pin("i-1", k1)
    kh.pin("i-1", k2)
    kh.pin("i-2", k2)
    assert kh.keys("i-1") == [k1, k2] and kh.keys("i-2") == [k2] and kh.keys("i-3") == []
    assert path.stat().st_mode & 0o777 == 0o600
    assert kh.forget("i-1") and not kh.forget("i-1")
    assert kh.keys("i-1") == [] and kh.keys("i-2") == [k2]
    assert path.read_text() == f"i-2 {k2}\n"

    (tmp_path / "k.pub").write_text(k1 + "\n")
    res = (
        await _sh("ssh-keygen", "-lf", str(tmp_path / "k.pub"))
        if shutil.which("ssh-keygen")
        else None
    )
    if res is not None:
        assert res.stdout.split()[1] == fingerprint(k1)


CONSOLE = """\
[   12.3] cloud-init[812]: Cloud-init v. 24.1 running 'modules:final'
<14>Nov 22 04:40:00 ec2:
<14>Nov 22 04:40:00 ec2: #############################################################
<14>Nov 22 04:40:00 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Nov 22 04:40:00 ec2: 256 SHA256:abc root@ip-10-0-0-1 (ED25519)
<14>Nov 22 04:40:00 ec2: -----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= root@ip-10-0-0-1
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4 root@ip-10-0-0-1
-----END SSH HOST KEY KEYS-----
"""


def test_parse_console_and_resolvers(tmp_path: Path) -> None:
    keys = parse_console_host_keys(CONSOLE)
    assert keys == (
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4",
    )
    assert parse_console_host_keys("no block here") == ()

    settings = Settings(state_dir=tmp_path / "state", sandbox_dir=tmp_path / "sb")
    now = datetime.now(UTC)
    box = Instance(
        "i-0abc",
        "box",
        "t3.medium",
        "running",
        public_ip="1.2.3.4",
        private_ip="10.0.0.1",
        launch_time=now,
    )
    aws = AwsHostResolver(settings)
    info = aws.resolve(box)
    assert info is not None and (info.host, info.port, info.user, info.host_key_alias) == (
        "1.2.3.4",
        22,
        "ubuntu",
        "i-0abc",
    )
    assert info.key_path == str(settings.key_path) and info.expected_host_keys == ()
    aws.learn_console_output("i-0abc", CONSOLE)
    assert aws.resolve(box).expected_host_keys == keys  # type: ignore[union-attr]
    private = Instance("i-0p", "p", "t3.medium", "running", private_ip="10.0.0.9")
    assert aws.resolve(private).host == "10.0.0.9"  # type: ignore[union-attr]
    assert aws.resolve(Instance("i-0n", "n", "t3.medium", "running")) is None
    assert aws.resolve(Instance("i-0n", "n", "t3.medium", "pending")) is None
    with pytest.raises(InvalidState, match="cloudsh start stopped-box"):
        aws.resolve(Instance("i-0s", "stopped-box", "t3.medium", "stopped"))

    sandbox = SandboxHostResolver(settings)
    with pytest.raises(SandboxError, match="sandbox up"):
        sandbox.resolve(box)
    hk = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4"
    write_state(
        settings.sandbox_path,
        SandboxState(
            pid=os.getpid(),
            endpoint="http://127.0.0.1:1",
            instances={
                "i-0abc": SandboxInstance("running", 40001, hk, True, "127.77.1.2"),
                "i-0boot": SandboxInstance("running", 40002, hk, False),
            },
        ),
    )
    info = sandbox.resolve(box)
    # The key the daemon publishes is not trusted: a first key is checked against the
    # console, as on AWS.
    assert info is not None and (info.host, info.port, info.expected_host_keys) == ("127.77.1.2", 40001, ())
    sandbox.learn_console_output("i-0abc", CONSOLE)
    assert sandbox.resolve(box).expected_host_keys == keys  # type: ignore[union-attr]
    assert sandbox.resolve(Instance("i-0boot", "b", "t3.medium", "running")) is None
    with pytest.raises(InvalidState, match="launch"):
        sandbox.resolve(Instance("i-0t", "gone", "t3.medium", "terminated"))


# -- measurement (printed, not asserted) ---------------------------------------


@needs_openssh
async def test_measure_round_trip(ssh_env: SSHEnv, svc: SSHService, tmp_path: Path) -> None:
    host = ssh_env.host()
    await svc.run(host, "true")
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        await svc.run(host, "true")
    pooled = (time.perf_counter() - t0) / n
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ssh_config_block("box", host, ssh_env.settings))
    m = 5
    t0 = time.perf_counter()
    for _ in range(m):
        assert (await _sh("ssh", "-F", str(cfg), "box", "true")).returncode == 0
    fresh = (time.perf_counter() - t0) / m
    t0 = time.perf_counter()
    for _ in range(m):
        other = SSHService(ssh_env.settings)
        await other.run(host, "true")
        await other.close()
    fresh_async = (time.perf_counter() - t0) / m
    print(
        f"\nround trip `true`: pooled asyncssh {pooled * 1000:.1f} ms, "
        f"fresh asyncssh connection {fresh_async * 1000:.1f} ms, "
        f"fresh OpenSSH `ssh box true` {fresh * 1000:.1f} ms ({fresh / pooled:.1f}x pooled)"
    )


# -- against the real sandbox daemon -------------------------------------------


@pytest.mark.sandbox
async def test_against_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", sandbox_dir=sandbox.dir)
    settings.state_dir.mkdir()
    shutil.copy(sandbox.key_path, settings.key_path)
    launched = sandbox.launch("t3.micro", wait=False)
    inst = Instance(launched.id, "sbox", "t3.micro", "running")
    resolver = SandboxHostResolver(settings)

    async def resolve() -> HostInfo | None:
        return resolver.resolve(inst)

    svc = SSHService(settings)
    try:
        host = await svc.wait_ready(resolve, timeout=20)
        res = await svc.run(host, "echo hi; pwd")
        assert res.ok and res.stdout.startswith("hi\n"), res
        published = sandbox.wait(launched.id).host_key
        assert KnownHosts(settings.known_hosts_path).keys(launched.id) == [
            " ".join(published.split()[:2])
        ]
        cfg = tmp_path / "ssh_config"
        cfg.write_text(ssh_config_block("sbox", host, settings))
        out = await _sh("ssh", "-F", str(cfg), "sbox", "echo", "via-openssh")
        assert (out.returncode, out.stdout) == (0, "via-openssh\n"), out.stderr
        (tmp_path / "f.txt").write_text("payload")
        await svc.put(host, tmp_path / "f.txt", "f.txt")
        assert await svc.get(host, "f.txt", tmp_path / "back.txt") == tmp_path / "back.txt"
        assert (tmp_path / "back.txt").read_text() == "payload"
    finally:
        await svc.close()
        sandbox.ec2().terminate_instances(InstanceIds=[launched.id])
