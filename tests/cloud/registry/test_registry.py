"""The model registry: validation, versioning, signatures, immutability, downloads."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.factories import ADMIN, onnx_failing_checker, onnx_linear, upload_model


def test_upload_records_digest_size_and_signature(client: TestClient) -> None:
    """A valid upload answers 201 with sha256, size and the graph's inputs and outputs."""
    data = onnx_linear(n_in=4, n_out=2)
    response = upload_model(client, name="ranker", target="cloud", data=data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "ranker" and body["version"] == 1 and body["target"] == "cloud"
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size"] == len(data)
    assert body["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert body["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", 2]}]
    assert body["opset"] == 17


def test_each_upload_of_a_name_gets_the_next_version(client: TestClient) -> None:
    """Three different uploads of one name become versions 1, 2 and 3, all still readable."""
    for seed in range(3):
        assert upload_model(client, data=onnx_linear(seed=seed)).json()["version"] == seed + 1
    versions = client.get("/v1/models/ranker", headers=ADMIN).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert client.get("/v1/models/ranker/versions/2", headers=ADMIN).json()["version"] == 2


def test_identical_reupload_conflicts(client: TestClient) -> None:
    """Uploading the latest version's exact bytes again gets 409 and creates no version."""
    upload_model(client)
    again = upload_model(client)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_model_content"
    assert len(client.get("/v1/models/ranker", headers=ADMIN).json()["versions"]) == 1


def test_name_keeps_its_target(client: TestClient) -> None:
    """A device upload under a cloud model's name gets 409 and changes nothing."""
    upload_model(client, target="cloud")
    response = upload_model(client, target="device", data=onnx_linear(seed=5))
    assert response.status_code == 409
    assert "another name" in response.json()["error"]["message"]


def test_invalid_onnx_is_422_and_writes_nothing(client: TestClient) -> None:
    """Garbage, empty files and checker failures get 422 `invalid_onnx_model`; no version exists."""
    for data in (b"definitely not onnx", b"", onnx_failing_checker(), b"\x08" * 100):
        response = upload_model(client, data=data)
        assert response.status_code == 422, data[:20]
        assert response.json()["error"]["code"] == "invalid_onnx_model"
    assert client.get("/v1/models", headers=ADMIN).json()["items"] == []
    assert client.get("/v1/models/ranker", headers=ADMIN).status_code == 404


def test_bad_form_fields_are_422(client: TestClient) -> None:
    """Bad names, unknown targets, missing files and malformed metrics get 422."""
    cases = [
        {"name": "Upper"},
        {"name": "../etc"},
        {"name": "x" * 65},
        {"target": "edge"},
        {"metrics": "not json"},
        {"metrics": '{"auc": "high"}'},
        {"metrics": "[1, 2]"},
        {"metrics": '{"auc": Infinity}'},
    ]
    for case in cases:
        response = upload_model(client, **case)
        assert response.status_code == 422, case
    missing_file = client.post("/v1/models", headers=ADMIN, data={"name": "m", "target": "cloud"})
    assert missing_file.status_code == 422
    assert "file" in missing_file.json()["error"]["message"]


def test_metrics_are_recorded(client: TestClient) -> None:
    """The optional metrics form field is stored with the version."""
    response = upload_model(client, metrics='{"auc": 0.78}', description="first cut")
    assert response.json()["metrics"] == {"auc": 0.78}
    assert response.json()["description"] == "first cut"


def test_oversize_upload_is_413_and_writes_nothing(client: TestClient) -> None:
    """An upload over TANDEM_MAX_UPLOAD_BYTES gets 413 `payload_too_large`; no version exists."""
    response = upload_model(client, data=b"\0" * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert client.get("/v1/models", headers=ADMIN).json()["items"] == []


def test_chunked_oversize_upload_is_413(client: TestClient) -> None:
    """A body streamed without Content-Length is cut off at the limit with the same 413."""

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"\0" * (128 * 1024)

    response = client.post(
        "/v1/models",
        headers={**ADMIN, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=chunks(),
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_unknown_model_and_version_are_404(client: TestClient) -> None:
    """Missing names and versions get 404s whose message lists what exists."""
    assert client.get("/v1/models/none", headers=ADMIN).json()["error"]["code"] == "model_not_found"
    upload_model(client)
    missing = client.get("/v1/models/ranker/versions/7", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"].endswith("published versions are 1.")


def test_models_list_shows_latest_version(client: TestClient) -> None:
    """GET /v1/models lists each name once with its latest version and count."""
    upload_model(client, name="a", data=onnx_linear(seed=1))
    upload_model(client, name="a", data=onnx_linear(seed=2))
    upload_model(client, name="b", target="device")
    items = client.get("/v1/models", headers=ADMIN).json()["items"]
    assert [(m["name"], m["latest_version"], m["versions"], m["target"]) for m in items] == [
        ("a", 2, 2, "cloud"),
        ("b", 1, 1, "device"),
    ]


def test_download_by_digest_returns_the_exact_bytes(client: TestClient) -> None:
    """GET /v1/blobs/{sha256} returns the uploaded file with an immutable cache header."""
    data = onnx_linear()
    digest = upload_model(client, data=data).json()["sha256"]
    response = client.get(f"/v1/blobs/{digest}", headers=ADMIN)
    assert response.status_code == 200
    assert response.content == data
    assert "immutable" in response.headers["cache-control"]
    assert response.headers["etag"] == f'"{digest}"'
