"""The fake cloud the SDK's own tests use: the public one, :mod:`device_sdk.testing`."""

from __future__ import annotations

from device_sdk.testing import (
    DEVICE_ID,
    DEVICE_TOKEN,
    ENROLLMENT_KEY,
    FakeCloud,
    RecordedRequest,
    make_task,
    public_key_b64,
)

__all__ = [
    "DEVICE_ID",
    "DEVICE_TOKEN",
    "ENROLLMENT_KEY",
    "FakeCloud",
    "RecordedRequest",
    "make_task",
    "public_key_b64",
]
