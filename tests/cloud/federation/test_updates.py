"""POST /v1/federation/updates: devices add anonymous updates to their model's open round."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.cloud.federation.factories import (
    DIM,
    HEAD,
    MOVIES,
    TABLE,
    ctr_model,
    federated_model,
    toward_truth,
    update_body,
    upload,
)
from tests.factories import ADMIN, changed, device_headers, register_device, upload_model


def _code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_an_update_opens_a_round_and_joins_it(client: TestClient, device: dict[str, str]) -> None:
    """The first update of a model opens its round; the receipt counts it."""
    federated_model(client)
    response = upload(client, device, toward_truth(0))
    assert response.status_code == 201, response.text
    assert response.json() == {"round": 1, "received": 1, "k": 3, "duplicate": False}
    second = upload(client, device, toward_truth(1)).json()
    assert second["round"] == 1 and second["received"] == 2


def test_a_replayed_key_counts_once(client: TestClient, device: dict[str, str]) -> None:
    """Sending the same key again answers duplicate and does not count it twice."""
    federated_model(client)
    body = toward_truth(0)
    assert upload(client, device, body).json()["duplicate"] is False
    again = upload(client, device, body)
    assert again.status_code == 201
    assert again.json() == {"round": 1, "received": 1, "k": 3, "duplicate": True}
    detail = client.get("/v1/federation/rounds/1", headers=ADMIN).json()
    assert detail["received"] == 1


def test_an_unknown_model_is_not_found(client: TestClient, device: dict[str, str]) -> None:
    """An update for a model nobody registered gets 404 model_not_found."""
    response = upload(client, device, toward_truth(0, model="nope"))
    assert response.status_code == 404 and _code(response) == "model_not_found"


def test_a_model_without_validation_set_takes_no_updates(
    client: TestClient, device: dict[str, str]
) -> None:
    """Until an admin gives the model a validation set, updates get 409."""
    upload_model(client, name="recs", target="device", data=ctr_model())
    response = upload(client, device, toward_truth(0))
    assert response.status_code == 409 and _code(response) == "federation_not_enabled"


def test_an_update_on_another_base_version_conflicts(
    client: TestClient, device: dict[str, str]
) -> None:
    """An update trained on a version other than the round's base gets 409."""
    federated_model(client)
    response = upload(client, device, toward_truth(0, base_version=2))
    assert response.status_code == 409 and _code(response) == "base_version_mismatch"
    assert response.json()["error"]["details"]["base_version"] == 1


def test_deltas_must_fit_the_models_trainable_tensors(
    client: TestClient, device: dict[str, str]
) -> None:
    """Unknown tensors, wrong shapes or widths, and rows past the table get stable 422s."""
    federated_model(client)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("unknown_parameter", {"dense": [{"name": "nope", "shape": [1], "values": [1.0]}]}),
        ("unknown_parameter", {"sparse": [{"name": "flat", "ids": [0], "rows": [[1.0]]}]}),
        ("parameter_shape_mismatch", {"dense": [{"name": HEAD, "shape": [2], "values": [1, 2]}]}),
        ("parameter_shape_mismatch", {"sparse": [{"name": TABLE, "ids": [0], "rows": [[1.0]]}]}),
        (
            "parameter_shape_mismatch",
            {"sparse": [{"name": HEAD, "ids": [0], "rows": [[1.0] * DIM]}]},
        ),
        (
            "row_id_out_of_range",
            {"sparse": [{"name": TABLE, "ids": [MOVIES], "rows": [[1.0] * DIM]}]},
        ),
    ]
    for code, fields in cases:
        response = upload(client, device, update_body(**fields))
        assert response.status_code == 422, (code, response.text)
        assert _code(response) == code
    # Nothing was written, not even the round the first update would have opened.
    assert client.get("/v1/federation/rounds", headers=ADMIN).json()["items"] == []


def test_hostile_bodies_get_validation_errors(client: TestClient, device: dict[str, str]) -> None:
    """NaN, huge shapes, duplicate ids, ragged rows, extra fields: 422, nothing stored."""
    federated_model(client)
    hostile = [
        update_body(dense=[{"name": HEAD, "shape": [65537, 1], "values": [0.0]}]),
        update_body(sparse=[{"name": TABLE, "ids": [1, 1], "rows": [[0.0] * DIM] * 2}]),
        update_body(sparse=[{"name": TABLE, "ids": [1, 2], "rows": [[0.0] * DIM, [0.0]]}]),
        {**toward_truth(0), "device_id": "abc"},
        {**toward_truth(0), "samples": -1},
        update_body(),
    ]
    for body in hostile:
        response = upload(client, device, body)
        assert response.status_code == 422, response.text
        assert _code(response) == "validation_error"
    nan = '{"key": "%s", "model": "recs", "base_version": 1, "samples": 1, "dense": [{"name": "%s", "shape": [1], "values": [NaN]}]}'  # noqa: E501
    response = client.post(
        "/v1/federation/updates",
        headers={**device, "Content-Type": "application/json"},
        content=nan % (update_body()["key"], HEAD),
    )
    assert response.status_code == 422 and response.json()["error"]["details"][0]["type"] == (
        "finite_number"
    )
    assert client.get("/v1/federation/rounds", headers=ADMIN).json()["items"] == []


def test_malformed_json_and_other_media_types_are_refused(
    client: TestClient, device: dict[str, str]
) -> None:
    """Broken JSON gets 400 invalid_json; a non-JSON Content-Type gets 415."""
    federated_model(client)
    broken = client.post(
        "/v1/federation/updates",
        headers={**device, "Content-Type": "application/json"},
        content=b'{"key": ',
    )
    assert broken.status_code == 400 and _code(broken) == "invalid_json"
    form = client.post(
        "/v1/federation/updates",
        headers={**device, "Content-Type": "text/plain"},
        content=b"{}",
    )
    assert form.status_code == 415


def test_an_oversized_update_is_refused(client: TestClient, device: dict[str, str]) -> None:
    """A body over TANDEM_FEDERATION_MAX_UPDATE_BYTES gets 413 before it is parsed."""
    federated_model(client)
    body = toward_truth(0)
    body["dense"][0]["values"] = [0.123456789] * (2 * DIM)
    body["pad"] = "x" * 500_000
    response = upload(client, device, body)
    assert response.status_code == 413 and _code(response) == "payload_too_large"


def test_admin_keys_cannot_upload_updates(client: TestClient) -> None:
    """The update endpoint is for device tokens: an admin key gets 403."""
    federated_model(client)
    response = upload(client, ADMIN, toward_truth(0))
    assert response.status_code == 403


def test_uploads_without_credentials_are_unauthorized(client: TestClient) -> None:
    """No token, no upload: 401."""
    federated_model(client)
    assert upload(client, {}, toward_truth(0)).status_code == 401


def test_each_device_token_is_rate_limited(client: TestClient) -> None:
    """Past its burst a device gets 429 with Retry-After; another device is unaffected."""
    with TestClient(
        _app(client, federation_updates_burst=2, federation_updates_per_minute=0.01),
        raise_server_exceptions=False,
    ) as limited:
        federated_model(limited)
        first = device_headers(register_device(limited))
        second = device_headers(register_device(limited))
        assert upload(limited, first, toward_truth(0)).status_code == 201
        assert upload(limited, first, toward_truth(1)).status_code == 201
        refused = upload(limited, first, toward_truth(2))
        assert refused.status_code == 429 and _code(refused) == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        assert upload(limited, second, toward_truth(3)).status_code == 201


def _app(client: TestClient, **changes: Any) -> Any:
    from cloud.app import create_app

    return create_app(changed(client.app.state.context.settings, **changes))  # type: ignore[attr-defined]
