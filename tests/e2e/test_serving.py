"""Model serving against a live `tandem serve`: a device scores rows in JSON and .npz over
real HTTP, concurrent callers are merged, and the no-op answers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.cloud.serving import onnx_models
from tests.e2e.live_server import LiveServer
from tests.factories import ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.slow
NPZ = "application/x-npz"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    env = {"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN, "TANDEM_LOG_REQUESTS": "false"}
    with LiveServer(tmp_path / "data", env=env) as live:
        response = httpx.post(
            f"{live.url}/v1/models",
            headers=ADMIN,
            data={"name": "ranker", "target": "cloud"},
            files={"file": ("m.onnx", onnx_models.recommender(), "application/octet-stream")},
        )
        assert response.status_code == 201, response.text
        yield live


def device_token(server: LiveServer) -> dict[str, str]:
    key = httpx.post(f"{server.url}/v1/enrollment-keys", headers=ADMIN, json={}).json()["key"]
    device: dict[str, Any] = httpx.post(
        f"{server.url}/v1/devices", json={"enrollment_key": key}
    ).json()
    return {"Authorization": f"Bearer {device['token']}"}


def expected(inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(onnx_models.recommender(), providers=["CPUExecutionProvider"])
    scores: np.ndarray = session.run(None, inputs)[0]
    return scores


def test_device_scores_rows_in_json_and_npz(server: LiveServer) -> None:
    """Over real HTTP, JSON and .npz requests from a device get the model's scores."""
    auth = device_token(server)
    inputs = onnx_models.recommender_inputs(4, seed=2)
    url = f"{server.url}/v1/models/ranker/infer"
    as_json = httpx.post(
        url, headers=auth, json={"inputs": {k: v.tolist() for k, v in inputs.items()}}
    )
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(as_json.json()["outputs"]["score"], expected(inputs), 1e-6)
    buffer = io.BytesIO()
    np.savez(buffer, **inputs)
    for _ in range(2):  # the second request takes the fast path (token now cached)
        as_npz = httpx.post(
            url,
            headers={**auth, "Content-Type": NPZ, "Accept": NPZ},
            content=buffer.getvalue(),
        )
        assert as_npz.status_code == 200, as_npz.text
        with np.load(io.BytesIO(as_npz.content), allow_pickle=False) as outputs:
            np.testing.assert_array_equal(outputs["score"], expected(inputs))


def test_concurrent_devices_each_get_their_own_scores(server: LiveServer) -> None:
    """Thirty-two concurrent one-row requests all succeed, each with its own row's score."""
    auth = device_token(server)
    url = f"{server.url}/v1/models/ranker/infer"
    rows = [onnx_models.recommender_inputs(1, seed=i) for i in range(32)]

    def call(inputs: dict[str, np.ndarray]) -> list[list[float]]:
        body = {"inputs": {k: v.tolist() for k, v in inputs.items()}}
        response = httpx.post(url, headers=auth, json=body, timeout=30)
        assert response.status_code == 200, response.text
        scores: list[list[float]] = response.json()["outputs"]["score"]
        return scores

    with ThreadPoolExecutor(32) as threads:
        answers = list(threads.map(call, rows))
    for inputs, answer in zip(rows, answers, strict=True):
        np.testing.assert_allclose(answer, expected(inputs), 1e-6)


def test_noop_answers_without_running_a_model(server: LiveServer) -> None:
    """POST /v1/models/-/noop authenticates and answers {} (and refuses no credentials)."""
    auth = device_token(server)
    url = f"{server.url}/v1/models/-/noop"
    assert httpx.post(url, headers=auth, content=b"{}").json() == {}
    assert httpx.post(url, content=b"{}").status_code == 401
