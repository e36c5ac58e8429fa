"""The serving fast path answers device inference exactly as the full application does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.core.settings import Settings
from tests.cloud.serving import onnx_models
from tests.cloud.serving.helpers import NPZ, npz_bytes, read_npz, to_json
from tests.factories import ADMIN, changed, device_headers, register_device, upload_model

FAST = "tandem_serving_fast_path_requests_total"


@pytest.fixture
def pair(settings: Settings) -> Iterator[tuple[TestClient, TestClient, dict[str, str]]]:
    """Two apps on one database and blob store, fast path on and off, a device token that
    both have cached (the full path caches it on first use)."""
    fast = TestClient(create_app(settings), raise_server_exceptions=False)
    slow = TestClient(
        create_app(changed(settings, serving_fast_path=False)), raise_server_exceptions=False
    )
    with fast, slow:
        upload_model(fast, name="ranker", data=onnx_models.recommender())
        headers = device_headers(register_device(fast))
        for client in (fast, slow):  # caches the token, loads the model
            post(client, "/v1/models/ranker/infer", headers, json.dumps(valid()).encode())
        yield fast, slow, headers


def valid(rows: int = 2) -> dict[str, Any]:
    return to_json(onnx_models.recommender_inputs(rows))


def post(
    client: TestClient,
    path: str,
    headers: dict[str, str],
    content: bytes,
    content_type: str = "application/json",
    **extra: str,
) -> httpx.Response:
    return client.post(
        path, content=content, headers={**headers, "Content-Type": content_type, **extra}
    )


def fast_count(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(FAST) and "infer" in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


CASES: list[tuple[str, str, bytes, str, dict[str, str]]] = [
    ("json", "/v1/models/ranker/infer", json.dumps(valid()).encode(), "application/json", {}),
    (
        "pinned",
        "/v1/models/ranker/infer?version=1",
        json.dumps(valid()).encode(),
        "application/json",
        {},
    ),
    (
        "npz",
        "/v1/models/ranker/infer",
        npz_bytes(**onnx_models.recommender_inputs(3)),
        NPZ,
        {"Accept": NPZ},
    ),
    (
        "bad input",
        "/v1/models/ranker/infer",
        json.dumps({"inputs": {"item": ["x"]}}).encode(),
        "application/json",
        {},
    ),
    ("bad json", "/v1/models/ranker/infer", b"{", "application/json", {}),
    ("bad npz", "/v1/models/ranker/infer", b"PK\x05\x06junk", NPZ, {}),
    (
        "unknown model",
        "/v1/models/nope/infer",
        json.dumps(valid()).encode(),
        "application/json",
        {},
    ),
    (
        "unknown version",
        "/v1/models/ranker/infer?version=9",
        json.dumps(valid()).encode(),
        "application/json",
        {},
    ),
    ("noop", "/v1/models/-/noop", b'{"inputs": {}}', "application/json", {}),
]


@pytest.mark.parametrize(
    ("case", "path", "content", "content_type", "extra"), CASES, ids=[c[0] for c in CASES]
)
def test_fast_and_full_paths_answer_alike(
    pair: tuple[TestClient, TestClient, dict[str, str]],
    case: str,
    path: str,
    content: bytes,
    content_type: str,
    extra: dict[str, str],
) -> None:
    """Status, body and content type are the same with the fast path on and off."""
    fast, slow, headers = pair
    a = post(fast, path, headers, content, content_type, **extra)
    b = post(slow, path, headers, content, content_type, **extra)
    assert a.status_code == b.status_code, (case, a.text, b.text)
    assert a.headers["content-type"] == b.headers["content-type"]
    if a.headers["content-type"] == NPZ:
        assert read_npz(a.content).keys() == read_npz(b.content).keys()
        for name, array in read_npz(a.content).items():
            assert (array == read_npz(b.content)[name]).all()
    else:
        assert a.json() == b.json(), case
    for header in ("x-tandem-model", "x-tandem-model-version"):
        assert a.headers.get(header) == b.headers.get(header)


def test_device_requests_take_the_fast_path(
    pair: tuple[TestClient, TestClient, dict[str, str]],
) -> None:
    """A cached device token's inference request is answered and counted by the fast path."""
    fast, _, headers = pair
    before = fast_count(fast)
    response = post(fast, "/v1/models/ranker/infer", headers, json.dumps(valid()).encode())
    assert response.status_code == 200
    assert fast_count(fast) == before + 1


@pytest.mark.parametrize(
    ("headers", "path", "content_type"),
    [
        (ADMIN, "/v1/models/ranker/infer", "application/json"),
        (None, "/v1/models/ranker/infer?version=1&x=2", "application/json"),
        (None, "/v1/models/ranker/infer?version=0", "application/json"),
        (None, "/v1/models/ranker/infer", "text/plain"),
        ({"Authorization": "Bearer unknown-token"}, "/v1/models/ranker/infer", "application/json"),
    ],
    ids=["admin", "extra-query", "version-0", "text-plain", "unknown-token"],
)
def test_other_requests_go_to_the_full_app(
    pair: tuple[TestClient, TestClient, dict[str, str]],
    headers: dict[str, str] | None,
    path: str,
    content_type: str,
) -> None:
    """Admin keys, odd queries, other content types and uncached tokens are answered by the
    full application (as before), not the fast path."""
    fast, _, device = pair
    before = fast_count(fast)
    response = post(fast, path, headers or device, json.dumps(valid()).encode(), content_type)
    assert response.status_code in (200, 401, 415, 422), response.text
    assert fast_count(fast) == before
