"""The platform's Ed25519 signing key: made on first start, kept in the data directory.

Every replica shares the data directory, so all sign with one key; devices pin its public
half at registration. The private key file is created with mode 0600 and never leaves it.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "platform_ed25519.pem"


class PlatformKey:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_b64 = base64.b64encode(raw).decode()

    @classmethod
    def load_or_create(cls, key_dir: Path) -> PlatformKey:
        """Read the key, or create it. Exclusive creation makes replicas that start at
        the same moment agree on one key: the loser of the race reads the winner's."""
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = key_dir / KEY_FILE
        if not path.exists():
            candidate = Ed25519PrivateKey.generate()
            pem = candidate.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # mkstemp, not a PID-based name: replicas in containers are all PID 1.
            fd, name = tempfile.mkstemp(dir=key_dir, prefix=f".{KEY_FILE}.")
            temporary = Path(name)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)  # fails if another replica created it first
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key.")
        return cls(loaded)

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self._private.sign(payload)).decode()
