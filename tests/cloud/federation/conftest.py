"""Federation tests run with small rounds, a generous upload limit and no timed sweeps."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cloud.core.settings import Settings
from tests.factories import changed, device_headers, register_device


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return changed(
        settings,
        federation_k=3,
        federation_updates_burst=1000,
        federation_sweep_s=3600.0,
        federation_max_update_bytes=400_000,
    )


@pytest.fixture
def device(client: TestClient) -> dict[str, str]:
    """A registered device's auth headers."""
    return device_headers(register_device(client))
