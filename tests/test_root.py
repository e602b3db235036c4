"""The composition root: which cloud a backend talks to and which parts it is built with.

Against the real sandbox (moto server and daemon); the environment is injected, so no
test reads this machine's AWS set-up.
"""

from __future__ import annotations

import ast
import pathlib
from pathlib import Path

import pytest

from cloudsh import root
from cloudsh.errors import CredentialsError
from cloudsh.sandbox.hosts import SandboxHostResolver
from cloudsh.sandbox.pricing import SandboxOnDemandSource, SandboxSpotSource
from cloudsh.services.hosts import AwsHostResolver
from cloudsh.services.pricing import AwsOnDemandSource, Ec2SpotSource
from tests.sandbox_fixture import Sandbox

CLOUDSH = pathlib.Path(__file__).parent.parent / "cloudsh"
SERVICES = CLOUDSH / "services"


def no_aws(home: Path, **more: str) -> dict[str, str]:
    """An environment with no AWS set-up at all: an empty home, no AWS_* variables."""
    return {"HOME": str(home), **more}


@pytest.mark.sandbox
async def test_no_credentials_means_the_sandbox_with_a_notice(sandbox: Sandbox, tmp_path: Path) -> None:
    backend = root.connect(sandbox.settings, env=no_aws(tmp_path))
    try:
        assert backend.sandbox and backend.label == "SANDBOX"
        assert backend.notice == root.NO_CREDENTIALS_NOTICE
        assert "no AWS credentials found" in backend.notice and "aws configure" in backend.notice
        assert backend.target.endpoint_url == sandbox.state.endpoint
        assert isinstance(backend.hosts, SandboxHostResolver)
        assert isinstance(backend.on_demand, SandboxOnDemandSource)
        assert isinstance(backend.spot, SandboxSpotSource)
        # The parts work together: the sandbox's list price and its simulated spot market.
        price = (await backend.pricing.prices(["g5.xlarge"]))["g5.xlarge"]
        assert price.on_demand == 1.006 and price.spot is not None and price.spot < 1.006
        assert "simulated by the sandbox" in price.source
    finally:
        await backend.close()


@pytest.mark.sandbox
async def test_asking_for_the_sandbox_gives_no_notice(sandbox: Sandbox, tmp_path: Path) -> None:
    flag = root.connect(sandbox.settings, sandbox=True, env=no_aws(tmp_path))
    by_env = root.connect(sandbox.settings, env=no_aws(tmp_path, CLOUDSH_SANDBOX="yes"))
    for backend in (flag, by_env):
        assert backend.sandbox and backend.notice == ""
        assert isinstance(backend.hosts, SandboxHostResolver)


@pytest.mark.sandbox
async def test_aws_with_an_endpoint_url_gets_the_aws_parts(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--aws` with AWS_ENDPOINT_URL at the sandbox's moto server: an AWS-compatible
    # endpoint like any other, so the AWS resolver and price sources, not the sandbox's.
    env = no_aws(tmp_path, **sandbox.env)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # boto3 reads its own env
        monkeypatch.setenv(key, env[key])
    backend = root.connect(sandbox.settings, sandbox=False, env=env)
    try:
        assert not backend.sandbox and backend.notice == ""
        assert backend.label == f"default/{sandbox.env['AWS_DEFAULT_REGION']}"
        assert backend.target.endpoint_url == sandbox.state.endpoint
        assert isinstance(backend.hosts, AwsHostResolver)
        assert isinstance(backend.on_demand, AwsOnDemandSource)
        assert type(backend.spot) is Ec2SpotSource
        assert isinstance(await backend.ec2.list_instances(), list)
        # Spot prices come from the endpoint's price history, under the AWS label.
        points = await backend.pricing.spot_history("g5.xlarge", days=1)
        assert points and {p.instance_type for p in points} == {"g5.xlarge"}
        assert backend.pricing.spot.label.startswith("spot: EC2 spot price history")
    finally:
        await backend.close()


def test_a_profile_that_does_not_exist_is_named(tmp_path: Path) -> None:
    from cloudsh.config import Settings

    env = no_aws(tmp_path, AWS_CONFIG_FILE=str(tmp_path / "config"))
    with pytest.raises(CredentialsError, match="no AWS profile named 'nosuch'"):
        root.connect(Settings.load(), sandbox=False, profile="nosuch", env=env)


def test_credentials_are_detected_without_calling_out(tmp_path: Path) -> None:
    assert not root.aws_credentials_configured(None, no_aws(tmp_path))
    assert root.aws_credentials_configured(None, no_aws(tmp_path, AWS_ACCESS_KEY_ID="AKIA"))
    assert root.aws_credentials_configured("work", no_aws(tmp_path))
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert root.aws_credentials_configured(None, no_aws(tmp_path))


@pytest.mark.parametrize(
    ("flag", "value", "want"),
    [(True, "0", True), (False, "1", False), (None, "on", True), (None, "off", False), (None, "", None)],
)
def test_the_flag_wins_over_cloudsh_sandbox(flag: bool | None, value: str, want: bool | None) -> None:
    assert root.sandbox_requested(flag, {"CLOUDSH_SANDBOX": value}) is want


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, anywhere in it (top level, functions, TYPE_CHECKING
    blocks), relative imports resolved, plus `importlib.import_module("...")` by name."""
    package = ".".join(path.relative_to(CLOUDSH.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def test_services_never_import_the_sandbox() -> None:
    modules = sorted(SERVICES.glob("*.py"))
    assert len(modules) > 5
    offenders = {
        p.name: sorted(m for m in imported_modules(p) if m == "cloudsh.sandbox" or m.startswith("cloudsh.sandbox."))
        for p in modules
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}
    # The check sees function-local imports (the kind that used to pick sandbox code).
    assert "cloudsh.services.ssh" in imported_modules(SERVICES / "backend.py")


def test_only_the_entry_point_knows_the_cli() -> None:
    # Front ends share `cloudsh.frontend`; `cli.py` imports them, never the other way.
    users = sorted(
        str(p.relative_to(CLOUDSH))
        for p in CLOUDSH.rglob("*.py")
        if "cloudsh.cli" in imported_modules(p)
    )
    assert users == ["__main__.py"]


def test_which_profiles_ask_for_an_mfa_code(tmp_path: Path) -> None:
    # Read from the files as botocore lays them out (`[profile P]`, `[P]` in credentials).
    (tmp_path / "config").write_text(
        "[default]\nregion = us-east-1\n"
        "[profile admin]\nrole_arn = arn:aws:iam::123456789012:role/admin\nsource_profile = default\n"
        "mfa_serial = arn:aws:iam::123456789012:mfa/me\n"
        "[profile plain]\nregion = eu-west-1\n"
        "[admin2]\nmfa_serial = ignored: not a profile section of the config file\n"
    )
    (tmp_path / "credentials").write_text("[keyed]\naws_access_key_id = x\nmfa_serial = arn:aws:iam::1:mfa/k\n")
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}
    asks = {p: root.needs_mfa(p, env) for p in ("admin", "plain", "default", "admin2", "keyed", "nosuch")}
    assert asks == {"admin": True, "plain": False, "default": False, "admin2": False, "keyed": True, "nosuch": False}


def test_the_mfa_check_loads_no_botocore() -> None:
    import subprocess
    import sys

    code = ("import sys; from cloudsh import root; root.needs_mfa('x'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'boto3')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == "[]"
