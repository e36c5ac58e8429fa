"""Calls to the inference endpoint, in JSON and .npz, for the serving tests."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from tests.factories import ADMIN

NPZ = "application/x-npz"


def to_json(arrays: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    return {"inputs": {name: array.tolist() for name, array in arrays.items()}}


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_npz(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def infer_json(
    client: TestClient,
    name: str,
    body: Any,
    *,
    version: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    params = {} if version is None else {"version": version}
    return client.post(
        f"/v1/models/{name}/infer",
        json=body,
        params=params,
        headers=ADMIN if headers is None else headers,
    )


def infer_npz(
    client: TestClient, name: str, data: bytes, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        f"/v1/models/{name}/infer",
        content=data,
        headers={"Content-Type": NPZ, "Accept": NPZ, **(ADMIN if headers is None else headers)},
    )


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def until_version(
    client: TestClient, name: str, body: Any, version: int, attempts: int = 400
) -> dict[str, Any]:
    """Unpinned requests until one is answered by ``version`` (loaded in the background);
    every answer on the way must be a 200 from an older version."""
    for _ in range(attempts):
        response = infer_json(client, name, body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        if answer["version"] == version:
            return answer
        assert answer["version"] < version
        time.sleep(0.025)
    raise AssertionError(f"{name} version {version} never answered")
