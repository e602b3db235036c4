"""The ProxyCommand's warm path finds cloudsh's directories as `Settings.load()` does,
without importing it (`cloudsh.proxy._dirs`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudsh import proxy
from cloudsh.config import Settings
from cloudsh.services import address, known_hosts


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"XDG_STATE_HOME": "/x/state", "XDG_CACHE_HOME": "/x/cache"},
        {"CLOUDSH_STATE_DIR": "~/st", "CLOUDSH_CACHE_DIR": "/c", "CLOUDSH_SANDBOX_DIR": "~/sb"},
    ],
)
def test_dirs_are_the_settings_dirs(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "CLOUDSH_STATE_DIR", "CLOUDSH_CACHE_DIR",
                "CLOUDSH_SANDBOX_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert proxy._dirs() == settings_dirs()
    # A config file may move them: then they are read through Settings itself.
    (tmp_path / ".config" / "cloudsh").mkdir(parents=True)
    (tmp_path / ".config" / "cloudsh" / "config.toml").write_text(f'[cloudsh]\ncache_dir = "{tmp_path}/elsewhere"\n')
    assert proxy._dirs() == settings_dirs()
    assert "CLOUDSH_CACHE_DIR" in env or proxy._dirs()[0] == f"{tmp_path}/elsewhere"


def settings_dirs() -> tuple[str, str, str]:
    s = Settings.load()
    return str(s.cache_dir), str(s.state_dir), str(s.sandbox_path)


def test_what_it_reads_is_read_as_its_owners_write_it() -> None:
    assert proxy.UNCONFIRMED == known_hosts.UNCONFIRMED + ":"
    assert proxy.CHECKIP_TTL_S == address.TTL_S
