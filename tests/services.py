"""Reaching the real PostgreSQL and Redis the tests run against.

Outside CI an unreachable service skips its test variants with the reason; with CI=true
it fails them, so a green CI run always means the real services were exercised.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "TANDEM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return None
    except OSError as exc:
        return str(exc)


def require(name: str, url: str, default_port: int) -> str:
    """``url`` if the service answers; otherwise skip (laptop) or fail (CI) with the reason."""
    problem = _reachable(url, default_port)
    if problem is not None:
        message = f"{name} not reachable at {url}: {problem}"
        if in_ci():
            pytest.fail(f"{message} (CI=true: the real service is required)")
        pytest.skip(message)
    return url


def require_postgres() -> str:
    return require("PostgreSQL", POSTGRES_URL, 5432)


def require_redis() -> str:
    return require("Redis", REDIS_URL, 6379)
