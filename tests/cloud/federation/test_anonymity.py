"""An uploaded update is stored, and logged, without anything that identifies its device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, table, text

from cloud.app import create_app
from cloud.core.secrets import hash_token
from cloud.core.settings import Settings
from tests.cloud.federation.factories import federated_model, settled_round, toward_truth, upload
from tests.factories import changed, device_headers, register_device


def _identifiers(device: dict[str, Any]) -> list[str]:
    return [device["device_id"], device["token"], hash_token(device["token"])]


def _all_rows(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of every table, as tuples."""
    rows: dict[str, set[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for name in inspect(engine).get_table_names():
            result = connection.execute(select(text("*")).select_from(table(name)))
            rows[name] = {tuple(_hashable(v) for v in row) for row in result}
    return rows


def _hashable(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    return repr(value) if isinstance(value, list | dict) else value


def _mentions(value: Any, needles: list[str]) -> bool:
    if isinstance(value, bytes | memoryview):
        data = bytes(value)
        return any(n.encode() in data for n in needles)
    return any(n in str(value) for n in needles)


def test_update_rows_hold_no_device_identity(client: TestClient) -> None:
    """The update table has only the random key, the round, the sample count and deltas."""
    columns = {
        c["name"]
        for c in inspect(client.app.state.context.db.engine).get_columns(  # type: ignore[attr-defined]
            "federation_updates"
        )
    }
    assert columns == {"key", "round_id", "samples", "payload"}


def test_nothing_identifying_is_persisted_by_an_upload(client: TestClient) -> None:
    """After uploads, no new or changed row, and no blob, holds the device id, token or hash."""
    federated_model(client)
    device = register_device(client)
    headers = device_headers(device)
    engine = client.app.state.context.db.engine  # type: ignore[attr-defined]
    # A first call authenticates the device (and stamps its last_seen) before the snapshot.
    assert client.get("/v1/devices/me", headers=headers).status_code == 200
    before = _all_rows(engine)
    bodies = [toward_truth(i) for i in range(3)]
    for body in bodies:
        assert upload(client, headers, body).status_code == 201
    assert settled_round(client, 1)["status"] == "released"
    after = _all_rows(engine)
    needles = _identifiers(device)
    for name, rows in after.items():
        new = rows - before.get(name, set())
        for row in new:
            assert not any(_mentions(value, needles) for value in row), (name, row)
        if name.startswith("federation_"):
            for row in rows:
                assert not any(_mentions(value, needles) for value in row), (name, row)
    blob_dir: Path = client.app.state.context.settings.blob_dir  # type: ignore[attr-defined]
    for path in blob_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n.encode() in data for n in needles), path


def test_closed_rounds_keep_no_deltas(client: TestClient, device: dict[str, str]) -> None:
    """Once a round is over, its updates' deltas are deleted; only the keys remain."""
    federated_model(client)
    for i in range(3):
        upload(client, device, toward_truth(i))
    settled_round(client, 1)
    engine = client.app.state.context.db.engine  # type: ignore[attr-defined]
    with engine.connect() as connection:
        payloads = list(connection.execute(text("SELECT payload FROM federation_updates")))
    assert len(payloads) == 3 and all(p[0] is None for p in payloads)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_request_logs_of_uploads_name_no_device(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """The request log line of an upload names the route, not the device or its token."""
    with TestClient(
        create_app(changed(settings, log_requests=True)), raise_server_exceptions=False
    ) as logged:
        federated_model(logged)
        device = register_device(logged)
        capfd.readouterr()
        assert upload(logged, device_headers(device), toward_truth(0)).status_code == 201
        output = capfd.readouterr().err
    assert "/v1/federation/updates" in output
    assert not any(n in output for n in _identifiers(device))
