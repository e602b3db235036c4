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


def test_the_sandbox_serves_one_region(sandbox: Sandbox) -> None:
    r = cloudsh("--sandbox", "--region", "eu-west-1", "ls")
    line = one_line_error(r)
    assert r.returncode == 2 and "the sandbox serves only us-east-1, not eu-west-1" in line, line
    assert r.stdout == ""
    # Its own region is fine, named or not.
    assert ls_json("--region", "us-east-1") == ls_json()


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
