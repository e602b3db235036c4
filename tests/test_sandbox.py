"""The sandbox cloud, for real: moto over HTTP, asyncssh servers, OpenSSH, rsync, bubblewrap."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import botocore.exceptions
import pytest

from cloudsh.errors import SandboxError
from cloudsh.sandbox.control import sandbox_down, sandbox_status, sandbox_up
from cloudsh.sandbox.state import pid_alive
from tests.sandbox_fixture import Sandbox, start_sandbox

pytestmark = pytest.mark.sandbox


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _error_code(excinfo: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def test_up_is_idempotent(sandbox: Sandbox) -> None:
    again = sandbox_up(sandbox.settings)
    assert again.endpoint == sandbox.state.endpoint
    assert again.pid == sandbox.state.pid
    status = sandbox_status(sandbox.settings)
    assert status is not None and status.endpoint == sandbox.state.endpoint
    assert sandbox.env["CLOUDSH_SANDBOX"] == "1"
    assert sandbox.env["AWS_ENDPOINT_URL"] == sandbox.state.endpoint


def test_images_are_current_ubuntu(sandbox: Sandbox) -> None:
    images = sandbox.ec2().describe_images(Owners=["099720109477"])["Images"]
    names = {i["Name"] for i in images}
    assert any("ubuntu-noble-24.04-amd64-server" in n for n in names)
    assert any("ubuntu-noble-24.04-arm64-server" in n for n in names)
    assert any("ubuntu-jammy-22.04-amd64-server" in n for n in names)


def test_ssm_public_parameter_names_the_ubuntu_image(sandbox: Sandbox) -> None:
    import boto3

    ssm = boto3.client(
        "ssm",
        endpoint_url=sandbox.env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=sandbox.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=sandbox.env["AWS_SECRET_ACCESS_KEY"],
    )
    name = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    ami = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    assert ami == sandbox.ubuntu_image("x86_64")


async def test_boot_delay_then_ssh(sandbox: Sandbox) -> None:
    launched = sandbox.launch("t3.micro", wait=False)
    inst = sandbox.instance(launched.id)
    assert inst is None or not inst.ready
    t0 = time.monotonic()
    box = sandbox.box(launched.id)
    assert time.monotonic() - t0 < 5
    assert box.host_key.startswith("ssh-ed25519 ")
    async with await sandbox.connect(box) as conn:
        result = await conn.run("echo $HOME; pwd; echo $USER", check=True)
    home, pwd, user = str(result.stdout).split()
    assert home.endswith("/home/ubuntu") and pwd == home and user == "ubuntu"
    if sandbox.state.isolation == "bubblewrap":
        assert home == "/home/ubuntu"


async def test_exit_status_stdin_and_sftp(sandbox: Sandbox) -> None:
    box = sandbox.launch("t3.micro")
    async with await sandbox.connect(box) as conn:
        assert (await conn.run("exit 7")).exit_status == 7
        done = await conn.run("cat > up.txt && wc -c < up.txt", input="hello box\n")
        assert str(done.stdout).strip() == "10"
        async with conn.start_sftp_client() as sftp:
            assert await sftp.exists("up.txt")
            assert await sftp.exists("/home/ubuntu/up.txt")
            async with sftp.open("/home/ubuntu/via-sftp.txt", "w") as f:
                await f.write("sftp")
        assert str((await conn.run("cat via-sftp.txt")).stdout) == "sftp"


def test_openssh_client_strict_host_key(sandbox: Sandbox) -> None:
    box = sandbox.launch("t3.micro")
    out = subprocess.run(
        ["ssh", *sandbox.ssh_argv(box), "ubuntu@127.0.0.1", "echo ok-$(whoami 2>/dev/null || echo x) $HOME"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok-") and out.stdout.strip().endswith("/home/ubuntu")
    # A different pinned key must make OpenSSH refuse.
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    box.known_hosts.write_text(f"[127.0.0.1]:{box.port} {other[0]} {other[1]}\n")
    bad = subprocess.run(
        ["ssh", *sandbox.ssh_argv(box), "ubuntu@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode == 255


async def test_wrong_key_or_user_rejected(sandbox: Sandbox, tmp_path: Path) -> None:
    box = sandbox.launch("t3.micro")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", box.port, username="ubuntu", client_keys=[stranger],
            known_hosts=str(box.known_hosts),
        )
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", box.port, username="root", client_keys=[str(sandbox.key_path)],
            known_hosts=str(box.known_hosts),
        )


def test_rsync_and_scp_both_ways(sandbox: Sandbox, tmp_path: Path) -> None:
    box = sandbox.launch("t3.micro")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 400)
    rsh = "ssh " + " ".join(sandbox.ssh_argv(box))
    up = subprocess.run(
        ["rsync", "-a", "-e", rsh, f"{src}/", "ubuntu@127.0.0.1:project/"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert up.returncode == 0, up.stderr
    down_dir = tmp_path / "down"
    down = subprocess.run(
        ["rsync", "-a", "-e", rsh, "ubuntu@127.0.0.1:/home/ubuntu/project/", f"{down_dir}/"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert down.returncode == 0, down.stderr
    assert (down_dir / "a.txt").read_text() == "alpha\n"
    assert (down_dir / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 400
    # scp (SFTP mode) needs the server to end the subsystem with exit status 0.
    scp_opts = ["-P" if a == "-p" else a for a in sandbox.ssh_argv(box)]
    for args in (
        [str(src / "a.txt"), "ubuntu@127.0.0.1:scp.txt"],
        ["ubuntu@127.0.0.1:scp.txt", str(tmp_path / "scp-back.txt")],
    ):
        done = subprocess.run(
            ["scp", *scp_opts, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "scp-back.txt").read_text() == "alpha\n"


async def test_port_forward_to_box_localhost(sandbox: Sandbox) -> None:
    box = sandbox.launch("t3.micro")
    async with await sandbox.connect(box) as conn:
        listener = await conn.forward_local_port("127.0.0.1", 0, "localhost", int(sandbox.state.endpoint.rsplit(":", 1)[1]))
        import urllib.request

        def fetch() -> int:
            url = f"http://127.0.0.1:{listener.get_port()}/moto-api/data.json"
            with urllib.request.urlopen(url, timeout=5) as r:
                return int(r.status)

        # Blocking HTTP in a thread: the forward itself runs on this event loop.
        assert await asyncio.to_thread(fetch) == 200
        listener.close()
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("example.com", 80)


async def test_stop_start_keeps_files_and_key(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    box = sandbox.launch("t3.micro")
    async with await sandbox.connect(box) as conn:
        await conn.run("echo kept > keep.txt", check=True)
    sandbox.stop(box.id)
    stopped = sandbox.wait(box.id, ready=False)
    assert stopped.ssh_port is None
    assert not _port_open(box.port)
    ec2.start_instances(InstanceIds=[box.id])
    again = sandbox.box(box.id)
    assert again.host_key == box.host_key
    assert again.port == box.port
    async with await sandbox.connect(again) as conn:
        assert str((await conn.run("cat keep.txt")).stdout) == "kept\n"


def test_resize_needs_stopped_instance(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    box = sandbox.launch("t3.micro")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.modify_instance_attribute(InstanceId=box.id, InstanceType={"Value": "t3.small"})
    assert _error_code(err) == "IncorrectInstanceState"
    assert f"The instance '{box.id}' is not in the 'stopped' state." in str(err.value)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.modify_instance_attribute(InstanceId=box.id, Attribute="instanceType", Value="t3.small")
    assert _error_code(err) == "IncorrectInstanceState"
    sandbox.stop(box.id)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.modify_instance_attribute(InstanceId=box.id, InstanceType={"Value": "t4g.small"})
    assert _error_code(err) == "InvalidParameterValue"
    ec2.modify_instance_attribute(InstanceId=box.id, InstanceType={"Value": "t3.small"})
    desc = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]
    assert desc["InstanceType"] == "t3.small"


def test_arm_type_on_amd64_image_refused(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(
            ImageId=sandbox.ubuntu_image("x86_64"), InstanceType="t4g.micro",
            KeyName=sandbox.key_name, MinCount=1, MaxCount=1,
        )
    assert _error_code(err) == "InvalidParameterValue"
    assert "The architecture 'arm64' of the specified instance type does not match the architecture 'x86_64'" in str(err.value)


def test_spot_price_history(sandbox: Sandbox) -> None:
    end = datetime.now(UTC)
    hist = sandbox.ec2().describe_spot_price_history(
        InstanceTypes=["g5.xlarge"], ProductDescriptions=["Linux/UNIX"],
        AvailabilityZone="us-east-1a", StartTime=end - timedelta(days=2), EndTime=end,
    )["SpotPriceHistory"]
    try:
        from cloudsh.sandbox import prices  # noqa: F401
    except ImportError:
        pytest.skip("cloudsh.sandbox.prices is not there yet")
    assert len(hist) >= 24
    assert {h["InstanceType"] for h in hist} == {"g5.xlarge"}
    assert {h["AvailabilityZone"] for h in hist} == {"us-east-1a"}
    assert len({h["SpotPrice"] for h in hist}) > 1
    stamps = [h["Timestamp"] for h in hist]
    assert stamps == sorted(stamps, reverse=True)
    latest = sandbox.ec2().describe_spot_price_history(InstanceTypes=["g5.xlarge"])["SpotPriceHistory"]
    assert len({h["AvailabilityZone"] for h in latest}) == len(latest) > 1


def test_console_output_has_host_key(sandbox: Sandbox) -> None:
    box = sandbox.launch("t3.micro")
    out = sandbox.ec2().get_console_output(InstanceId=box.id)["Output"]
    text = out if "BEGIN SSH HOST KEY KEYS" in out else base64.b64decode(out).decode()
    block = text.split("-----BEGIN SSH HOST KEY KEYS-----")[1].split("-----END SSH HOST KEY KEYS-----")[0]
    assert box.host_key in block


async def test_nvidia_smi_only_on_gpu_types(sandbox: Sandbox) -> None:
    gpu = sandbox.launch("g5.xlarge")
    async with await sandbox.connect(gpu) as conn:
        listed = await conn.run("nvidia-smi -L", check=True)
        assert "A10G" in str(listed.stdout)
        query = await conn.run("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader", check=True)
        assert str(query.stdout).strip().startswith("NVIDIA A10G, ")
        assert "A10G" in str((await conn.run("nvidia-smi", check=True)).stdout)
    cpu = sandbox.launch("t3.micro")
    async with await sandbox.connect(cpu) as conn:
        assert (await conn.run("nvidia-smi")).exit_status == 127


async def test_box_cannot_touch_users_files(sandbox: Sandbox) -> None:
    if sandbox.state.isolation != "bubblewrap":
        pytest.skip("bubblewrap does not work here")
    mine = Path.home() / f".cloudsh-sandbox-test-{time.time_ns()}"
    mine.mkdir()
    try:
        (mine / "precious.txt").write_text("mine")
        box = sandbox.launch("t3.micro")
        async with await sandbox.connect(box) as conn:
            created = await conn.run(f"touch {mine}/intruder.txt")
            deleted = await conn.run(f"rm -f {mine}/precious.txt")
            looked = await conn.run(f"ls {sandbox.dir}")
            assert created.exit_status != 0
            assert str(looked.stdout).strip() == ""
            del deleted
        assert (mine / "precious.txt").read_text() == "mine"
        assert not (mine / "intruder.txt").exists()
    finally:
        shutil.rmtree(mine)


async def test_terminate_deletes_tree_and_stops_processes(sandbox: Sandbox) -> None:
    box = sandbox.launch("t3.micro")
    tree = sandbox.dir / "instances" / box.id
    async with await sandbox.connect(box) as conn:
        await conn.run("nohup sleep 313.5 >/dev/null 2>&1 &", check=True)

    def sleepers() -> str:
        return subprocess.run(["pgrep", "-f", "^sleep 313.5$"], capture_output=True, text=True).stdout.strip()

    # As on a machine, what a session leaves running outlives it...
    time.sleep(0.2)
    assert sleepers() != ""
    assert tree.is_dir()
    sandbox.ec2().terminate_instances(InstanceIds=[box.id])
    deadline = time.monotonic() + 5
    while tree.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # ...and dies with the box.
    assert not tree.exists()
    assert not _port_open(box.port)
    assert sleepers() == ""


def test_down_stops_everything_and_port_in_use(tmp_path: Path) -> None:
    mp = pytest.MonkeyPatch()
    try:
        sb = start_sandbox(tmp_path, mp)
        box = sb.launch("t3.micro")
        endpoint_port = int(sb.state.endpoint.rsplit(":", 1)[1])
        assert sandbox_down(sb.settings) is True
        assert not pid_alive(sb.state.pid)
        assert not _port_open(endpoint_port) and not _port_open(box.port)
        assert not (sb.dir / "state.json").exists()
        assert sandbox_status(sb.settings) is None
        assert sandbox_down(sb.settings) is False
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            mp.setenv("CLOUDSH_SANDBOX_PORT", str(port))
            with pytest.raises(SandboxError) as err:
                sandbox_up(sb.settings)
        text = str(err.value)
        assert f"port {port} is in use" in text and "\n" not in text
        assert "CLOUDSH_SANDBOX_PORT" in text
    finally:
        mp.undo()


def test_run_instances_client_token_is_idempotent(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    args = dict(
        ImageId=sandbox.ubuntu_image("x86_64"), InstanceType="t3.micro", KeyName=sandbox.key_name,
        MinCount=1, MaxCount=1, ClientToken=f"token-{time.time_ns()}",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "once"}]}],
    )
    first = ec2.run_instances(**args)
    made = time.monotonic()
    again = ec2.run_instances(**args)
    iid = first["Instances"][0]["InstanceId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [iid]
    assert again["ReservationId"] == first["ReservationId"]
    assert again["Instances"][0]["InstanceType"] == "t3.micro"
    found = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["once"]}])
    assert [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]] == [iid]
    sandbox.past_window(made)
    ec2.terminate_instances(InstanceIds=[iid])


async def test_resize_to_gpu_type_brings_nvidia_smi(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    box = sandbox.launch("t3.micro")
    # Change and start faster than the daemon looks at moto: the box still restarts.
    sandbox.stop(box.id)
    ec2.modify_instance_attribute(InstanceId=box.id, InstanceType={"Value": "g5.xlarge"})
    ec2.start_instances(InstanceIds=[box.id])
    deadline = time.monotonic() + 10
    listed = ""
    while "A10G" not in listed and time.monotonic() < deadline:
        try:
            async with await sandbox.connect(sandbox.box(box.id)) as conn:
                listed = str((await conn.run("nvidia-smi -L")).stdout)
        except (OSError, asyncssh.Error):
            pass
        await asyncio.sleep(0.1)
    assert "A10G" in listed


def test_daemon_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cloudsh.sandbox.daemon", "--dir", str(tmp_path / "sb"), "--port", str(port)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith(f"port {port} is in use")
    assert not (tmp_path / "sb" / "state.json").exists()


async def test_pty_session(sandbox: Sandbox) -> None:
    box = sandbox.launch("t3.micro")
    async with await sandbox.connect(box) as conn:
        done = await conn.run("tty; stty size; echo $TERM", term_type="xterm-256color", term_size=(91, 27))
    lines = str(done.stdout).replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/")
    assert lines[1:3] == ["27 91", "xterm-256color"]
    assert done.exit_status == 0
