"""POST /v1/models/{name}/infer: JSON and .npz bodies, auth, versions, errors."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from tests.cloud.serving import onnx_models
from tests.cloud.serving.helpers import (
    NPZ,
    error_code,
    infer_json,
    infer_npz,
    npz_bytes,
    read_npz,
    to_json,
    until_version,
)
from tests.factories import ADMIN, device_headers, onnx_linear, register_device, upload_model


def reference_scores(model: bytes, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    scores: np.ndarray = session.run(None, inputs)[0]
    return scores


@pytest.fixture
def ranker(client: TestClient) -> bytes:
    """The recommender registered as model 'ranker' version 1."""
    model = onnx_models.recommender()
    assert upload_model(client, name="ranker", data=model).status_code == 201
    return model


def test_json_inference_matches_onnxruntime(client: TestClient, ranker: bytes) -> None:
    """A JSON request of 3 rows answers the model's outputs, as onnxruntime computes them."""
    inputs = onnx_models.recommender_inputs(3)
    response = infer_json(client, "ranker", to_json(inputs))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "ranker" and body["version"] == 1
    np.testing.assert_allclose(body["outputs"]["score"], reference_scores(ranker, inputs), 1e-6)
    assert response.headers["x-tandem-model-version"] == "1"


def test_npz_inference_round_trips(client: TestClient, ranker: bytes) -> None:
    """An .npz body with Accept .npz gets an .npz of the outputs, exact float32."""
    inputs = onnx_models.recommender_inputs(5, seed=3)
    response = infer_npz(client, "ranker", npz_bytes(**inputs))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == NPZ
    assert response.headers["x-tandem-model"] == "ranker"
    outputs = read_npz(response.content)
    assert outputs["score"].dtype == np.float32
    np.testing.assert_array_equal(outputs["score"], reference_scores(ranker, inputs))


def test_response_format_follows_accept(client: TestClient, ranker: bytes) -> None:
    """A JSON request may ask for .npz and an .npz request for JSON; */* keeps the request's."""
    inputs = onnx_models.recommender_inputs(1)
    as_npz = infer_json(client, "ranker", to_json(inputs), headers={**ADMIN, "Accept": NPZ})
    assert as_npz.headers["content-type"] == NPZ
    star = infer_npz(client, "ranker", npz_bytes(**inputs), headers={**ADMIN, "Accept": "*/*"})
    assert star.headers["content-type"] == NPZ
    explicit = client.post(
        "/v1/models/ranker/infer",
        content=npz_bytes(**inputs),
        headers={**ADMIN, "Content-Type": NPZ, "Accept": "application/json"},
    )
    assert explicit.json()["version"] == 1


def test_unacceptable_accept_is_406(client: TestClient, ranker: bytes) -> None:
    """An Accept header that allows neither JSON nor .npz gets 406 before anything runs."""
    inputs = to_json(onnx_models.recommender_inputs(1))
    response = infer_json(client, "ranker", inputs, headers={**ADMIN, "Accept": "text/csv"})
    assert response.status_code == 406 and error_code(response) == "not_acceptable"


def test_device_token_may_infer(client: TestClient, ranker: bytes) -> None:
    """A registered device's token is enough to run a model."""
    device = register_device(client)
    inputs = to_json(onnx_models.recommender_inputs(1))
    response = infer_json(client, "ranker", inputs, headers=device_headers(device))
    assert response.status_code == 200, response.text


def test_device_target_models_are_served_too(client: TestClient) -> None:
    """A model registered for devices can also be run in the cloud (the devices' fallback)."""
    upload_model(client, name="edge", target="device", data=onnx_linear(4, 2))
    response = infer_json(client, "edge", {"inputs": {"x": [[1, 2, 3, 4]]}})
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"]["y"][0]) == 2


def test_credentials_are_required(client: TestClient, ranker: bytes) -> None:
    """No token gets 401; an unknown token gets 401 too."""
    inputs = to_json(onnx_models.recommender_inputs(1))
    assert infer_json(client, "ranker", inputs, headers={}).status_code == 401
    wrong = {"Authorization": "Bearer not-a-real-token"}
    assert infer_json(client, "ranker", inputs, headers=wrong).status_code == 401


def test_unknown_model_and_version_are_404(client: TestClient, ranker: bytes) -> None:
    """An unknown name is 404 model_not_found; an unknown version 404 listing the real ones."""
    inputs = to_json(onnx_models.recommender_inputs(1))
    missing = infer_json(client, "nope", inputs)
    assert missing.status_code == 404 and error_code(missing) == "model_not_found"
    absent = infer_json(client, "ranker", inputs, version=7)
    assert absent.status_code == 404 and error_code(absent) == "model_version_not_found"
    assert "published versions are 1" in absent.json()["error"]["message"]


def test_version_pin_and_latest(client: TestClient, ranker: bytes) -> None:
    """Unpinned requests get the newest version; ?version=1 keeps answering from version 1."""
    inputs = onnx_models.recommender_inputs(2)
    assert infer_json(client, "ranker", to_json(inputs)).json()["version"] == 1
    second = onnx_models.recommender(seed=1)
    assert upload_model(client, name="ranker", data=second).json()["version"] == 2
    # The new version is loaded and warmed in the background; version 1 answers meanwhile.
    latest = until_version(client, "ranker", to_json(inputs), 2)
    np.testing.assert_allclose(latest["outputs"]["score"], reference_scores(second, inputs), 1e-6)
    pinned = infer_json(client, "ranker", to_json(inputs), version=1).json()
    assert pinned["version"] == 1
    np.testing.assert_allclose(pinned["outputs"]["score"], reference_scores(ranker, inputs), 1e-6)


def test_bad_version_parameter_is_422(client: TestClient, ranker: bytes) -> None:
    """version=0, a negative or a word is a validation error naming `version`."""
    inputs = to_json(onnx_models.recommender_inputs(1))
    for bad in ("0", "-1", "latest", "99999999999"):
        response = client.post(f"/v1/models/ranker/infer?version={bad}", json=inputs, headers=ADMIN)
        assert response.status_code == 422, bad
        assert "version" in response.json()["error"]["message"]


def test_model_that_fails_at_run_time_is_a_clear_error(client: TestClient) -> None:
    """An id the model's hidden table lacks is a 422 from the run, never an unhandled 500."""
    upload_model(client, name="lookup", data=onnx_models.hidden_lookup())
    ok = infer_json(client, "lookup", {"inputs": {"id": [1, 2]}})
    assert ok.json()["outputs"]["y"] == [[2.0, 3.0], [4.0, 5.0]]
    bad = infer_json(client, "lookup", {"inputs": {"id": [1, 99]}})
    assert bad.status_code == 422 and error_code(bad) == "invalid_model_input"
    assert "rejected these inputs" in bad.json()["error"]["message"]


def test_non_finite_outputs_need_the_binary_form(client: TestClient) -> None:
    """log(0) = -inf cannot be JSON: a clear model_run_failed; the .npz form carries it."""
    upload_model(client, name="log", data=onnx_models.log_model())
    response = infer_json(client, "log", {"inputs": {"x": [[0.0]]}})
    assert response.status_code == 500 and error_code(response) == "model_run_failed"
    assert "application/x-npz" in response.json()["error"]["message"]
    binary = infer_npz(client, "log", npz_bytes(x=np.zeros((1, 1), dtype=np.float32)))
    assert read_npz(binary.content)["y"][0, 0] == -np.inf


def test_fixed_shape_model_is_served(client: TestClient) -> None:
    """A model with no batch dimension is served request by request."""
    upload_model(client, name="fixed", data=onnx_models.fixed_batch())
    response = infer_json(client, "fixed", {"inputs": {"x": [[1, 2], [3, 4]]}})
    assert response.json()["outputs"]["y"] == [[2, 4], [6, 8]]
    wrong = infer_json(client, "fixed", {"inputs": {"x": [[1, 2]]}})
    assert wrong.status_code == 422 and "dimension 0 is 1, expected 2" in wrong.text


def test_serving_metrics_are_exported(client: TestClient, ranker: bytes) -> None:
    """/metrics shows batch sizes, queue time, run time, latency and outcomes per model."""
    infer_json(client, "ranker", to_json(onnx_models.recommender_inputs(2)))
    infer_json(client, "ranker", {"inputs": {}})
    text = client.get("/metrics").text
    for family in (
        'tandem_serving_batch_rows_bucket{le="2.0",model="ranker"}',
        "tandem_serving_queue_seconds_count",
        "tandem_serving_run_seconds_count",
        "tandem_serving_latency_seconds_count",
        'tandem_serving_requests_total{model="ranker",outcome="ok"} 1.0',
        'tandem_serving_requests_total{model="ranker",outcome="invalid_model_input"} 1.0',
        "tandem_serving_loaded_versions 1.0",
    ):
        assert family in text, family
