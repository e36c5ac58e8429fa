"""PUT /v1/federation/models/{name}/validation and the AUC it is judged by."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from cloud.federation.evaluation import auc
from tests.cloud.federation.factories import DIM, ctr_model, put_validation, validation_npz
from tests.factories import ADMIN, upload_model


def _model(client: TestClient) -> None:
    assert upload_model(client, name="recs", target="device", data=ctr_model()).status_code == 201


def test_a_raw_npz_becomes_the_validation_set(client: TestClient) -> None:
    """A raw .npz body that fits the model's inputs is stored and described."""
    _model(client)
    response = put_validation(client, "recs", validation_npz(rows=300))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "recs" and body["rows"] == 300 and len(body["sha256"]) == 64
    view = client.get("/v1/federation/models/recs", headers=ADMIN).json()
    assert view["validation"]["sha256"] == body["sha256"]


def test_a_multipart_upload_is_accepted_and_replaces_the_set(client: TestClient) -> None:
    """The .npz may come as a form's `file` part; a new set replaces the old."""
    _model(client)
    put_validation(client, "recs", validation_npz(rows=300))
    response = client.put(
        "/v1/federation/models/recs/validation",
        headers=ADMIN,
        files={"file": ("val.npz", validation_npz(rows=200, seed=3), "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == 200


def test_sets_that_do_not_fit_the_model_are_refused(client: TestClient) -> None:
    """Missing or extra arrays, wrong dtypes or shapes, bad labels, NaN, garbage: 422."""
    _model(client)
    rows = 50
    bad = [
        validation_npz(rows, user=None),
        validation_npz(rows, extra=np.zeros(rows)),
        validation_npz(rows, movie=np.zeros(rows, np.float32)),
        validation_npz(rows, user=np.zeros((rows, DIM + 1), np.float32)),
        validation_npz(rows, user=np.zeros((rows - 1, DIM), np.float32)),
        validation_npz(rows, label=np.full(rows, 2.0)),
        validation_npz(rows, label=np.ones(rows)),
        validation_npz(rows, user=np.full((rows, DIM), np.nan, np.float32)),
        validation_npz(rows, movie=np.full(rows, 10_000, np.int64)),
        b"not an npz at all",
        b"",
    ]
    for data in bad:
        response = put_validation(client, "recs", data)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_validation_set"
    assert client.get("/v1/federation/models/recs", headers=ADMIN).json()["validation"] is None


def test_a_validation_set_needs_a_registered_model(client: TestClient) -> None:
    """A set for a model nobody registered gets 404."""
    response = put_validation(client, "nope", validation_npz())
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_auc_counts_ties_as_half() -> None:
    """AUC is 1 for a perfect ranking, 0.5 for constant scores, and ties count half."""
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.zeros(4)) == 0.5
    assert auc(labels, np.array([0.1, 0.5, 0.5, 0.9])) == 0.875
