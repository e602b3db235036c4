"""Test-wide isolation: no test sees the user's home, AWS credentials or real AWS.

Every test runs with HOME and the XDG dirs in one temporary tree for the session (so
the session's sandbox, key and pinned host keys are shared like on a real machine),
no AWS_* variables from the outside, and instance metadata lookups disabled.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="cloudsh-tests-"))


def _isolate() -> None:
    for key in list(os.environ):
        if key.startswith(("AWS_", "CLOUDSH_")):
            del os.environ[key]
    home = _ROOT / "home"
    for sub in ("home", "config", "state", "cache"):
        (_ROOT / sub).mkdir(exist_ok=True)
    os.environ.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(_ROOT / "config"),
        XDG_STATE_HOME=str(_ROOT / "state"),
        XDG_CACHE_HOME=str(_ROOT / "cache"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(home / ".aws" / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / ".aws" / "credentials"),
        CLOUDSH_SANDBOX_DIR=str(_ROOT / "sandbox"),
        CLOUDSH_SANDBOX_BOOT_S="0.3",
        CLOUDSH_SANDBOX_CONSOLE_S="0.3",
        # EC2's in-between states (pending, stopping, creating, ...) stay, but brief.
        CLOUDSH_SANDBOX_TIMING="0.1",
        # Many tests share the session's sandbox and some leave GPU boxes running, so its
        # G quotas are roomy; P quotas stay 0 (as on a new account) for refusal tests.
        CLOUDSH_SANDBOX_QUOTAS='{"L-DB2E81BA": 256, "L-3819A6DF": 256}',
    )


_isolate()


@pytest.fixture(scope="session")
def test_root() -> Path:
    return _ROOT


from tests.moto_cloud import moto_ec2  # noqa: E402, F401  (moto in-process, for comparisons)
from tests.sandbox_fixture import *  # noqa: E402, F403  (the session sandbox fixtures)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `early` first: xdist hands out tests in this order, so a long one that
    mostly waits starts at once and the other workers run the rest beside it."""
    items.sort(key=lambda item: item.get_closest_marker("early") is None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Whatever started the session's sandbox, nothing of it outlives the run: its
    processes stop and its tree (boxes, volumes, images) is removed."""
    try:
        from cloudsh.config import Settings
        from cloudsh.sandbox.control import sandbox_down
    except ImportError:
        return
    sandbox_down(Settings.load())
    shutil.rmtree(_ROOT, ignore_errors=True)
