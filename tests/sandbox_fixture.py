"""A real sandbox cloud for tests: moto's EC2 server plus SSH servers, on loopback.

tests/conftest.py re-exports the `sandbox` fixture, so any test can ask for it::

    def test_something(sandbox: Sandbox) -> None:   # from tests.sandbox_fixture import Sandbox
        ec2 = sandbox.ec2()
        box = sandbox.launch("t3.micro")          # returns a LaunchedBox once SSH answers
        ...

One daemon serves the whole session (started on first use, stopped at the end), with
`CLOUDSH_SANDBOX_BOOT_S=0.3` so boxes answer SSH quickly. It uses the test-wide
`CLOUDSH_SANDBOX_DIR` when that is under the temp dir (so code under test that calls
`sandbox_up` itself finds the same daemon), else a fresh temp dir. `start_sandbox`
starts a separate one. Nothing here talks to AWS.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import boto3
import pytest

from cloudsh.config import Settings
from cloudsh.sandbox.control import sandbox_down, sandbox_env, sandbox_up
from cloudsh.sandbox.state import SandboxInstance, SandboxState, read_state

__all__ = ["LaunchedBox", "Sandbox", "known_host", "sandbox", "serve_http", "start_sandbox"]

UBUNTU_OWNER = "099720109477"
BOOT_S = 0.3


@dataclass
class LaunchedBox:
    id: str
    port: int
    host_key: str
    known_hosts: Path  # an OpenSSH known_hosts file pinning this box's published key
    host: str = ""  # the box's own loopback address (its public one), where SSH listens


def serve_http(port: int, body: str) -> str:
    """A command for a box: serve `body` at http://localhost:PORT/ in the background, and
    return once it answers there."""
    www = f"~/www-{port}"
    return (
        f"mkdir -p {www} && printf %s '{body}' > {www}/index.html && cd {www} && "
        f"(setsid nohup python3 -m http.server {port} --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &) && "
        f"for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:{port}/ && exit 0; sleep 0.05; done; exit 1"
    )


def known_host(host: str, port: int) -> str:
    """How OpenSSH names `host`:`port` in a known_hosts file."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass
class Sandbox:
    state: SandboxState
    env: dict[str, str]
    settings: Settings
    dir: Path
    key_path: Path  # ed25519 private key whose public half is imported as key pair `key_name`
    key_name: str
    #: A security group open to SSH from anywhere (as many hand-made ones are): boxes that
    #: `launch` makes are in it, since the sandbox's firewall drops SSH that no rule allows.
    ssh_group: str = ""
    #: When `launch` made each box (time.monotonic()), for `past_window`.
    made: dict[str, float] = field(default_factory=dict)

    def past_window(self, since: float) -> None:
        """Wait until EC2 (the sandbox) knows everywhere what was created at `since`: for
        `CLOUDSH_SANDBOX_CONSISTENCY_S` a new resource is NotFound to calls naming it."""
        time.sleep(max(0.0, since + self.settings.sandbox_consistency_s - time.monotonic()))

    def ec2(self, region: str | None = None) -> Any:
        return boto3.client(
            "ec2",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name=region or self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def read(self) -> SandboxState:
        state = read_state(self.dir)
        if state is None:
            raise RuntimeError("sandbox state.json is missing")
        return state

    def instance(self, instance_id: str) -> SandboxInstance | None:
        return self.read().instances.get(instance_id)

    def wait(self, instance_id: str, *, ready: bool = True, timeout: float = 10.0) -> SandboxInstance:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inst = self.instance(instance_id)
            if inst is not None and inst.ready == ready:
                return inst
            time.sleep(0.05)
        raise TimeoutError(f"{instance_id} did not become ready={ready}")

    def stop(self, instance_id: str, timeout: float = 10.0) -> None:
        """StopInstances, then wait out `stopping` (CLOUDSH_SANDBOX_TIMING) as an EC2 client
        must before it starts the box again or changes its type."""
        ec2 = self.ec2()
        ec2.stop_instances(InstanceIds=[instance_id])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
            if inst["State"]["Name"] == "stopped":
                return
            time.sleep(0.05)
        raise TimeoutError(f"{instance_id} did not stop")

    def ubuntu_image(self, arch: str = "x86_64") -> str:
        images = self.ec2().describe_images(
            Owners=[UBUNTU_OWNER],
            Filters=[
                {"Name": "name", "Values": ["ubuntu/images/*ubuntu-noble-24.04-*-server-*"]},
                {"Name": "architecture", "Values": [arch]},
            ],
        )["Images"]
        return str(max(images, key=lambda i: i["CreationDate"])["ImageId"])

    def dlami_image(self, arch: str = "x86_64") -> str:
        """The Deep Learning Base OSS NVIDIA Driver GPU AMI (Ubuntu 24.04), as its SSM parameter names it."""
        ssm = boto3.client(
            "ssm",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )
        name = f"/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])

    def launch(
        self,
        instance_type: str = "t3.micro",
        *,
        wait: bool = True,
        tags: dict[str, str] | None = None,
        image: str | None = None,
    ) -> LaunchedBox:
        """A box launched as a plain script would (not by cloudsh: no `cloudsh:managed` tag),
        like a colleague's box on a shared account; from plain Ubuntu unless `image` says."""
        ec2 = self.ec2()
        info = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"][0]
        arch = info["ProcessorInfo"]["SupportedArchitectures"][0]
        tagging = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}]
        res = ec2.run_instances(
            ImageId=image or self.ubuntu_image(arch),
            InstanceType=instance_type,
            KeyName=self.key_name,
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[self.ssh_group],
            **({"TagSpecifications": tagging} if tags else {}),
        )
        iid = res["Instances"][0]["InstanceId"]
        self.made[iid] = time.monotonic()
        if not wait:
            return LaunchedBox(iid, 0, "", Path())
        return self.box(iid)

    def box(self, instance_id: str) -> LaunchedBox:
        inst = self.wait(instance_id)
        self.past_window(self.made.get(instance_id, 0.0))
        assert inst.ssh_port is not None and inst.ssh_host
        known = self.dir.parent / f"known_hosts-{instance_id}"
        known.write_text(f"{known_host(inst.ssh_host, inst.ssh_port)} {inst.host_key}\n")
        return LaunchedBox(instance_id, inst.ssh_port, inst.host_key, known, inst.ssh_host)

    async def connect(self, box: LaunchedBox, **kwargs: Any) -> asyncssh.SSHClientConnection:
        """`client_keys` defaults to this fixture's key (cloudsh's own, `Settings.key_path`,
        reaches boxes that `cloudsh launch` made)."""
        kwargs.setdefault("client_keys", [str(self.key_path)])
        return await asyncssh.connect(
            box.host, box.port, username="ubuntu", known_hosts=str(box.known_hosts), **kwargs
        )

    def ssh_argv(self, box: LaunchedBox) -> list[str]:
        """OpenSSH options that reach `box` with strict host-key checking."""
        return [
            "-p", str(box.port), "-i", str(self.key_path),
            "-o", f"UserKnownHostsFile={box.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-F", "/dev/null",
        ]


def start_sandbox(root: Path, mp: pytest.MonkeyPatch, sandbox_dir: Path | None = None) -> Sandbox:
    """Start (or reuse) a daemon in `sandbox_dir` (default `root/sandbox`) and import a fresh
    key pair; `sandbox_down(sb.settings)` ends it."""
    sandbox_dir = sandbox_dir or root / "sandbox"
    mp.setenv("CLOUDSH_SANDBOX_DIR", str(sandbox_dir))
    mp.setenv("CLOUDSH_SANDBOX_BOOT_S", str(BOOT_S))
    mp.delenv("CLOUDSH_SANDBOX_PORT", raising=False)
    settings = Settings.load()
    state = sandbox_up(settings)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = root / "id_ed25519"
    key.write_private_key(key_path)
    key_path.chmod(0o600)
    sb = Sandbox(state, sandbox_env(state), settings, sandbox_dir, key_path, f"test-{uuid.uuid4().hex[:8]}")
    ec2 = sb.ec2()
    ec2.import_key_pair(KeyName=sb.key_name, PublicKeyMaterial=key.export_public_key("openssh"))
    vpcs = ec2.describe_vpcs()["Vpcs"]
    # In the default VPC; without one (CLOUDSH_SANDBOX_NO_DEFAULT_VPC) in the account's first.
    in_vpc = {} if any(v.get("IsDefault") for v in vpcs) else {"VpcId": vpcs[0]["VpcId"]}
    sb.ssh_group = ec2.create_security_group(
        GroupName=f"{sb.key_name}-ssh", Description="SSH from anywhere", **in_vpc
    )["GroupId"]
    sb.past_window(time.monotonic())  # the group is new: EC2 may not know it yet
    ec2.authorize_security_group_ingress(
        GroupId=sb.ssh_group,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    sb.past_window(time.monotonic())  # the first RunInstances names this key pair and group
    return sb


@contextlib.contextmanager
def own_sandbox(root: Path, sandbox_dir: Path | None = None, **env: str) -> Iterator[Sandbox]:
    """A sandbox of a test module's own in `root` (its daemon's directory `sandbox_dir`,
    default `root/sandbox`), started with these environment variables (e.g.
    `CLOUDSH_SANDBOX_TIMING="3"`); stopped, and the environment restored, on leaving."""
    mp = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            mp.setenv(key, value)
        sb = start_sandbox(root, mp, sandbox_dir)
        try:
            yield sb
        finally:
            sandbox_down(sb.settings)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("cloud")
    # A test-wide CLOUDSH_SANDBOX_DIR (tests/conftest.py sets one under a temp dir) is
    # shared, so code under test that calls sandbox_up itself finds this same daemon.
    shared = os.environ.get("CLOUDSH_SANDBOX_DIR")
    inside_tmp = shared and Path(shared).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    with own_sandbox(root, Path(shared) if inside_tmp and shared else None) as sb:
        yield sb
