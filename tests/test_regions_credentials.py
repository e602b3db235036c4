"""Regions and credentials through the real `cloudsh` binary: an unknown region, a region
the sandbox does not serve, a leftover AWS_ENDPOINT_URL and a failing credential_process
each get one clear line. Nothing here reaches real AWS: every `--aws` run has an endpoint
on loopback, or fails before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import cloudsh, ls_json, one_line_error
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox

#: An endpoint where nothing listens: a test that got past its check fails here, never on AWS.
NOWHERE = "http://127.0.0.1:9"


def _aws_env(**extra: str) -> dict[str, str]:
    return {"CLOUDSH_SANDBOX": "0", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_MAX_ATTEMPTS": "1", **extra}


def test_an_unknown_region_is_a_usage_error(sandbox: Sandbox) -> None:
    runs = [
        cloudsh("--sandbox", "--region", "xx-nowhere-1", "ls"),
        cloudsh("--aws", "--region", "xx-nowhere-1", "ls", env=_aws_env()),
        # From the environment too, as botocore would take it.
        cloudsh("--aws", "ls", env=_aws_env(AWS_REGION="xx-nowhere-1")),
    ]
    for r in runs:
        line = one_line_error(r)
        assert r.returncode == 2 and "unknown region 'xx-nowhere-1'" in line, line
        assert "e.g. us-east-1, eu-west-1" in line and "aws ec2 describe-regions" in line


def test_a_region_the_sandbox_does_not_play_is_refused(sandbox: Sandbox) -> None:
    # A real region (opt-in, so not one the sandbox plays), before the sandbox is asked.
    r = cloudsh("--sandbox", "--region", "af-south-1", "ls")
    line = one_line_error(r)
    assert r.returncode == 2 and "the sandbox does not serve af-south-1" in line, line
    assert "eu-west-1" in line and "--aws" in line and r.stdout == ""
    # Its default region is fine, named or not.
    assert ls_json("--region", "us-east-1") == ls_json()
    # A raw client asking for it is refused as EC2 refuses a request signed for a bad region.
    import boto3
    from botocore.exceptions import ClientError

    raw = boto3.client(
        "ec2", region_name="af-south-1", endpoint_url=sandbox.env["AWS_ENDPOINT_URL"],
        aws_access_key_id=sandbox.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=sandbox.env["AWS_SECRET_ACCESS_KEY"],
    )
    with pytest.raises(ClientError) as err:
        raw.describe_instances()
    assert err.value.response["Error"]["Code"] == "AuthFailure"


def test_a_leftover_endpoint_is_said_once(sandbox: Sandbox) -> None:
    endpoint = sandbox.env["AWS_ENDPOINT_URL"]
    creds = {k: sandbox.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    r = cloudsh("--aws", "ls", env={**creds, "CLOUDSH_SANDBOX": "0", "AWS_ENDPOINT_URL": endpoint})
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "AWS_ENDPOINT_URL" in line]
    assert said == [f"AWS_ENDPOINT_URL is set: --aws talks to {endpoint}; unset it to reach AWS"], r.stderr
    # As `cloudsh sandbox env` sets it (with CLOUDSH_SANDBOX=1), the sandbox is chosen deliberately.
    r = cloudsh("--aws", "ls", env={**creds, "CLOUDSH_SANDBOX": "1", "AWS_ENDPOINT_URL": endpoint})
    assert r.returncode == 0 and "AWS_ENDPOINT_URL" not in r.stderr, r.stderr


@pytest.mark.parametrize(("script", "said"), [
    ("#!/bin/sh\necho 'the token broker says: session expired' >&2\nexit 1\n", "session expired"),
    ("#!/bin/sh\nexit 1\n", "it exited with an error"),
])
def test_a_failing_credential_process(tmp_path: Path, script: str, said: str) -> None:
    helper = tmp_path / "creds.sh"
    helper.write_text(script)
    helper.chmod(0o755)
    config = tmp_path / "config"
    config.write_text(f"[profile broker]\nregion = us-east-1\ncredential_process = {helper}\n")
    env = {"CLOUDSH_SANDBOX": "0", "AWS_CONFIG_FILE": str(config), "AWS_ENDPOINT_URL": NOWHERE,
           "AWS_MAX_ATTEMPTS": "1"}
    r = cloudsh("--aws", "--profile", "broker", "ls", env=env)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
    assert lines[0].startswith("AWS_ENDPOINT_URL is set") and len(lines) == 2, r.stderr
    assert "the credential_process of profile 'broker' failed: " in lines[1] and said in lines[1], lines[1]
    assert "unexpected error" not in r.stderr


def _mfa_config(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config"
    config.write_text(
        "[profile base]\nregion = us-east-1\n\n"
        "[profile mfa]\nregion = us-east-1\nsource_profile = base\n"
        "role_arn = arn:aws:iam::123456789012:role/admin\nmfa_serial = arn:aws:iam::123456789012:mfa/me\n"
    )
    creds = tmp_path / "credentials"
    creds.write_text("[base]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n")
    return {"CLOUDSH_SANDBOX": "0", "AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(creds),
            "AWS_ENDPOINT_URL": NOWHERE, "AWS_MAX_ATTEMPTS": "1"}


def test_an_mfa_profile_with_no_terminal_says_what_to_do(tmp_path: Path) -> None:
    env = _mfa_config(tmp_path)
    # The one-shot CLI asks when the first call needs the code; the REPL before it starts.
    for args in (("--aws", "--profile", "mfa", "ls"), ("--aws", "--profile", "mfa", "repl")):
        r = cloudsh(*args, env=env)
        lines = [line for line in r.stderr.splitlines() if line.strip() and "AWS_ENDPOINT_URL" not in line]
        assert "Traceback" not in r.stderr and r.returncode == 1 and len(lines) == 1, r.stderr
        assert "profile 'mfa' needs an MFA code" in lines[0], lines[0]
        assert "aws sts get-caller-identity --profile mfa" in lines[0]


def test_the_repl_asks_for_the_mfa_code_before_it_starts(tmp_path: Path) -> None:
    import os
    import sys

    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, **_mfa_config(tmp_path), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "cloudsh", "--aws", "--profile", "mfa", "repl"], env=env,
                          encoding="utf-8", dimensions=(30, 160), timeout=30)
    child.expect_exact("Enter MFA code for arn:aws:iam::123456789012:mfa/me")
    child.sendline("123456")
    # The role is assumed with that code before the prompt starts; here nothing answers.
    child.expect_exact("could not assume the role of profile 'mfa'")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


async def test_a_region_not_enabled_is_not_called_bad_credentials() -> None:
    """EC2 answers AuthFailure in an opt-in region the account has not enabled (and
    OptInRequired anywhere for the same); the fault proxy plays that answer."""
    from cloudsh.errors import CredentialsError
    from cloudsh.services.aws import AwsTarget, ClientFactory
    from cloudsh.services.ec2 import EC2Service
    from tests.faults import DroppingProxy, ec2_error

    proxy = DroppingProxy(NOWHERE, fail=lambda _: ec2_error(
        "AuthFailure", "AWS was not able to validate the provided access credentials", 401))
    try:
        r = cloudsh("--aws", "--region", "af-south-1", "ls", env=_aws_env(AWS_ENDPOINT_URL=proxy.url))
        # The same answer in a region every account has: bad credentials, as before.
        usual = EC2Service(ClientFactory(AwsTarget(
            region="eu-west-1", endpoint_url=proxy.url, access_key_id="AKIAEXAMPLE", secret_access_key="x")))
        with pytest.raises(CredentialsError) as err:
            await usual.list_instances()
    finally:
        proxy.close()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.strip() and "AWS_ENDPOINT_URL" not in x]
    assert "region af-south-1 is not enabled for this AWS account" in line, line
    assert "aws account enable-region --region-name af-south-1" in line
    assert "AWS rejected" in err.value.message and "not enabled" not in err.value.message
