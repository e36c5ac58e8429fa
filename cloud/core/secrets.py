"""Bearer secrets: random 256-bit tokens, stored only as hashes, compared in constant time.

A token reads ``tdm_<kind>_<43 url-safe characters>``: the prefix lets people and secret
scanners tell an admin key from a device token at a glance; the random part carries the
256 bits. The database keeps ``sha256(token)``. A fast hash is right here (unlike for
passwords): the input is uniformly random, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

TOKEN_BYTES = 32  # 256 bits


class TokenKind(StrEnum):
    admin = "admin"
    device = "device"
    enrollment = "enroll"


def new_token(kind: TokenKind) -> str:
    return f"tdm_{kind.value}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_kind(token: str) -> TokenKind | None:
    """The kind a token claims by its prefix; None for a foreign or bootstrap token."""
    for kind in TokenKind:
        if token.startswith(f"tdm_{kind.value}_"):
            return kind
    return None


def hashes_match(stored_hash: str, token: str) -> bool:
    return hmac.compare_digest(stored_hash.encode("ascii"), hash_token(token).encode("ascii"))
