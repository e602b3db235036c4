"""Settings: one typed object, loaded from TOML in the XDG config dir, overridable by env.

`~/.config/cloudsh/config.toml` (or `$XDG_CONFIG_HOME/cloudsh/config.toml`) may hold any
field below under `[cloudsh]`; `CLOUDSH_<FIELD>` in the environment wins over the file.
Tests inject their own `Settings` (or point the XDG variables at a temp dir).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


@dataclass(frozen=True)
class Settings:
    config_dir: Path = field(default_factory=lambda: _xdg("XDG_CONFIG_HOME", ".config") / "cloudsh")
    """Where config.toml lives."""
    state_dir: Path = field(default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "cloudsh")
    """Keys, known hosts, history, the sandbox: things that must survive."""
    cache_dir: Path = field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "cloudsh")
    """Prices, instance-type facts, the last listing: safe to delete."""
    sandbox_dir: Path | None = None
    """The local cloud's state (default: `<state_dir>/sandbox`; env `CLOUDSH_SANDBOX_DIR`)."""
    default_type: str = "t3.medium"
    """Instance type for `launch` without `--type`."""
    default_disk_gb: int = 60
    """Root volume size for `launch` without `--disk` (the image's own size if larger)."""
    ssh_user: str = "ubuntu"
    """Login user on cloudsh's default (Ubuntu) image."""
    key_name: str = "cloudsh"
    """Prefix of the EC2 key pair cloudsh imports its ed25519 key as (`cloudsh-<fingerprint>`)."""
    security_group: str = "cloudsh-ssh"
    """Name of the security group that opens SSH to this machine's address only."""
    ssh_connect_timeout_s: float = 10.0
    """How long one SSH connection attempt may take."""
    wait_timeout_s: float = 600.0
    """How long `launch`/`start` wait for a box to answer SSH."""
    sandbox_boot_s: float = 2.0
    """Sandbox: delay between `running` and the SSH server answering (env `CLOUDSH_SANDBOX_BOOT_S`)."""
    sandbox_console_s: float = 2.0
    """Sandbox: how long after a box's SSH server is up its console output stays empty, until
    cloud-init has printed the host keys (env `CLOUDSH_SANDBOX_CONSOLE_S`; read by the daemon at start)."""
    console_wait_s: float = 600.0
    """How long after a box's first key was pinned unconfirmed its console may still show the
    host keys cloud-init prints (nothing waits for it: each connection looks once); past this
    the key is trusted on first use, said once. EC2 "Instance console output" (EC2 user guide)
    says the output can lag the instance by minutes."""
    sandbox_consistency_s: float = 0.5
    """Sandbox: how long a new resource stays unknown to calls that name it, as EC2's eventual
    consistency plays it (env `CLOUDSH_SANDBOX_CONSISTENCY_S`; read by the daemon at start)."""
    consistency_wait_s: float = 60.0
    """How long cloudsh retries a call naming a resource it just created that EC2 does not know yet."""
    confirm_above_per_hour: float = 3.0
    """`launch` and `resize` ask before a box costing more than this many $ per hour (and
    refuse it without a terminal unless given `--yes`)."""
    orphan_image_days: float = 90.0
    """`orphans` lists an image of yours that nobody launched from (or, without a launch in
    sight, that was made) this many days ago or longer."""
    sandbox_notice_s: float = 10.0
    """Sandbox: spot interruption notice period (env `CLOUDSH_SANDBOX_NOTICE_S`)."""
    sandbox_timing: str = "short"
    """Sandbox: how long EC2's in-between states last: `short` (about 1 s), `ec2` (EC2's own
    durations) or seconds (env `CLOUDSH_SANDBOX_TIMING`; read by the daemon at start)."""
    sandbox_no_default_vpc: str = ""
    """Sandbox: `1` plays an account without a default VPC (env `CLOUDSH_SANDBOX_NO_DEFAULT_VPC`;
    read by the daemon at start)."""

    @property
    def sandbox_path(self) -> Path:
        return self.sandbox_dir or self.state_dir / "sandbox"

    @property
    def key_path(self) -> Path:
        """cloudsh's own ed25519 private key (0600); `.pub` beside it."""
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        """Pinned host keys, one line per instance id (OpenSSH known_hosts format)."""
        return self.state_dir / "known_hosts"

    @classmethod
    def load(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        settings = cls()
        path = settings.config_dir / "config.toml"
        values: dict[str, object] = {}
        if path.is_file():
            try:
                values.update(tomllib.loads(path.read_text()).get("cloudsh", {}))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                from cloudsh.errors import UsageError

                raise UsageError(f"cannot read {path}: {exc}", "fix or delete that file") from exc
        for f in fields(cls):
            var = f"CLOUDSH_{f.name.upper()}"
            if f.name == "sandbox_dir":
                var = "CLOUDSH_SANDBOX_DIR"
            if var in env:
                values[f.name] = env[var]
        return replace(settings, **_coerce(values))  # type: ignore[arg-type]


def _coerce(values: dict[str, object]) -> dict[str, object]:
    from cloudsh.errors import UsageError

    kinds = {f.name: f.type for f in fields(Settings)}
    out: dict[str, object] = {}
    for name, value in values.items():
        kind = kinds.get(name)
        if kind is None:
            raise UsageError(f"unknown setting {name!r}", f"known settings: {', '.join(sorted(kinds))}")
        try:
            if kind in ("float",):
                out[name] = float(value)  # type: ignore[arg-type]
            elif kind in ("int",):
                out[name] = int(value)  # type: ignore[call-overload]
            elif "Path" in str(kind):
                out[name] = Path(str(value)).expanduser()
            else:
                out[name] = str(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"setting {name}={value!r} is not a valid {kind}", "") from exc
    return out
