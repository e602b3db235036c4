"""cloudsh's own SSH key: ed25519, generated once, private half 0600."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

from cloudsh.errors import CloudshError


def key_pair_name(prefix: str, public_key: str) -> str:
    """The EC2 key pair name for this key: `cloudsh-1a2b3c4d`.

    Named after the key's fingerprint so two machines (or a regenerated key) never
    fight over one key pair whose public half only one of them holds.
    """
    blob = public_key.split()[1] if len(public_key.split()) > 1 else public_key
    digest = hashlib.sha256(base64.b64decode(blob + "==")).hexdigest()
    return f"{prefix}-{digest[:8]}"


def ensure_key(path: Path) -> str:
    """Create the key pair at `path` (and `path.pub`) if missing; return the public key line."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return pub.read_text().strip()
    # cryptography is already a dependency of boto3's and asyncssh's stacks; importing it
    # here keeps key generation free of any SSH library.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode() + " cloudsh"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Two cloudsh processes making the key at once (two launches) must end with one key:
    # each writes its own file, and only one is linked into place.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _theirs(pub)
    finally:
        tmp.unlink()
    pub.write_text(public + "\n")
    return public


def _theirs(pub: Path) -> str:
    """The public half of the key another process has just made."""
    for _ in range(200):
        if pub.exists() and (text := pub.read_text().strip()):
            return text
        time.sleep(0.05)
    key = pub.with_suffix("")
    raise CloudshError(f"{pub} is missing beside the private key {key}", f"recreate it: ssh-keygen -y -f {key} > {pub}")
