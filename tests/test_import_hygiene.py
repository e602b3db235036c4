"""Layering: the backend works without any UI, and quick commands import nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

UI = ("textual", "prompt_toolkit", "IPython")


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "cloudsh.models", "cloudsh.errors", "cloudsh.config",
        "cloudsh.services.ec2", "cloudsh.services.backend", "cloudsh.services.ssh",
        "cloudsh.services.pricing", "cloudsh.services.hosts", "cloudsh.ops.instances",
        "cloudsh.root", "cloudsh.frontend", "cloudsh.prefetch", "cloudsh.sandbox.hosts", "cloudsh.sandbox.pricing",
        "cloudsh.commands", "cloudsh.api", "cloudsh.sandbox.control",
    ],
)
def test_backend_imports_no_ui(module: str) -> None:
    loaded = modules_after(f"import {module}")
    leaked = sorted(m for m in loaded if m.split(".")[0] in UI)
    assert not leaked, f"{module} imports UI modules: {leaked[:5]}"


def test_cli_help_and_ls_path_stay_light() -> None:
    # What `cloudsh --help` and `cloudsh ls` load before talking to the cloud.
    loaded = modules_after("import cloudsh.cli, cloudsh.commands")
    heavy = ("textual", "IPython", "paramiko", "asyncssh", "prompt_toolkit", "boto3", "botocore")
    assert not sorted(m for m in loaded if m.split(".")[0] in heavy)
    loaded = modules_after(
        "import cloudsh.root, cloudsh.services.backend, cloudsh.services.ec2, cloudsh.services.pricing, "
        "cloudsh.sandbox.hosts, cloudsh.sandbox.pricing, cloudsh.commands.instances"
    )
    assert not sorted(m for m in loaded if m.split(".")[0] in ("textual", "IPython", "paramiko", "asyncssh"))


def test_the_app_paints_before_importing_boto3() -> None:
    # The cached listing is painted while boto3 (~150 ms to import) is still loading.
    loaded = modules_after("import cloudsh.tui.app")
    assert not sorted(m for m in loaded if m.split(".")[0] in ("boto3", "botocore", "asyncssh", "paramiko"))
