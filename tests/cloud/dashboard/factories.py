"""Test data for the dashboard: a logged-in browser-like client, CSRF tokens from pages,
devices, published tasks and deployments through the real REST API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import ADMIN, ADMIN_TOKEN, device_headers, enrollment_key, register_device
from tests.task_factories import packed

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _TOKEN.search(html)
    assert found is not None, html[:2000]
    return found.group(1)


def log_in(client: TestClient, key: str = ADMIN_TOKEN) -> Any:
    """Submit the login form with ``key``; returns the response (redirects not followed)."""
    page = client.get("/dashboard/login")
    return client.post(
        "/dashboard/login",
        data={"admin_key": key, "csrf_token": csrf_token(page.text)},
        follow_redirects=False,
    )


def logged_in(client: TestClient) -> TestClient:
    response = log_in(client)
    assert response.status_code == 303, response.text
    return client


def page_token(client: TestClient, path: str = "/dashboard") -> str:
    return csrf_token(client.get(path).text)


def fleet(client: TestClient, n: int = 3, **attributes: Any) -> list[dict[str, Any]]:
    key = enrollment_key(client)
    return [
        register_device(client, key, platform="android", app_version="5.2.0", **attributes)
        for _ in range(n)
    ]


def publish(client: TestClient, tmp_path: Path, name: str = "hello", version: int = 1) -> None:
    bundle = packed(tmp_path, name=name, version=version)
    response = client.post("/v1/tasks", headers=ADMIN, files={"bundle": (f"{name}.tar.gz", bundle)})
    assert response.status_code == 201, response.text


def deploy(client: TestClient, name: str = "hello", version: int = 1, **policy: Any) -> int:
    body = {"task": name, "version": version, "target": {"everyone": True}, **policy}
    response = client.post("/v1/deployments", headers=ADMIN, json=body)
    assert response.status_code == 201, response.text
    deployment_id: int = response.json()["id"]
    return deployment_id


def report(client: TestClient, device: dict[str, Any], state: str, name: str = "hello") -> None:
    response = client.post(
        "/v1/devices/me/status",
        headers=device_headers(device),
        json={"reports": [{"task": name, "version": 1, "state": state}]},
    )
    assert response.status_code in (200, 202), response.text
