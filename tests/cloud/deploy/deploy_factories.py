"""Test data for deployments: published tasks, released deployments, device reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import ADMIN, device_headers
from tests.task_factories import packed


def publish(client: TestClient, tmp_path: Path, name: str = "hello", version: int = 1) -> Any:
    bundle = packed(tmp_path, name=name, version=version)
    response = client.post(
        "/v1/tasks", headers=ADMIN, files={"bundle": (f"{name}-{version}.tar.gz", bundle)}
    )
    assert response.status_code == 201, response.text
    return response.json()


def deploy(client: TestClient, task: str = "hello", version: int = 1, **policy: Any) -> Any:
    response = client.post(
        "/v1/deployments", headers=ADMIN, json={"task": task, "version": version, **policy}
    )
    assert response.status_code == 201, response.text
    return response.json()


def desired(client: TestClient, device: dict[str, Any]) -> dict[str, int]:
    """task name -> version the device should run."""
    response = client.get("/v1/devices/me/desired", headers=device_headers(device))
    assert response.status_code == 200, response.text
    return {t["name"]: t["version"] for t in response.json()["tasks"]}


def report(client: TestClient, device: dict[str, Any], task: str, version: int, state: str) -> Any:
    body = {"reports": [{"task": task, "version": version, "state": state, "reason": state}]}
    return client.post("/v1/devices/me/status", headers=device_headers(device), json=body)


def act(client: TestClient, deployment_id: int, action: str) -> Any:
    return client.post(f"/v1/deployments/{deployment_id}/{action}", headers=ADMIN)
