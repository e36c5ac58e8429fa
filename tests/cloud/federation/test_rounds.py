"""Rounds: opening, closing at k (released or rejected), deadlines, and reading them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import onnx
from fastapi.testclient import TestClient
from onnx import numpy_helper

from cloud.core.db import utcnow
from cloud.federation import rounds
from tests.cloud.federation.factories import (
    MOVIES,
    TABLE,
    ctr_model,
    federated_model,
    open_round,
    settled_round,
    toward_truth,
    truth,
    upload,
)
from tests.factories import ADMIN, upload_model


def _fill(client: TestClient, device: dict[str, str], n: int, **fields: Any) -> int:
    round_id = 0
    for i in range(n):
        response = upload(client, device, toward_truth(i, **fields))
        assert response.status_code == 201, response.text
        round_id = response.json()["round"]
    return round_id


def _initializer(data: bytes, name: str) -> np.ndarray[Any, Any]:
    model = onnx.load_model_from_string(data)
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_a_full_round_releases_a_better_version(client: TestClient, device: dict[str, str]) -> None:
    """k updates toward the truth make a new version whose AUC beats the base's."""
    federated_model(client)
    detail = settled_round(client, _fill(client, device, 3))
    assert detail["status"] == "released" and detail["released_version"] == 2
    assert detail["clients"] == 3 and detail["received"] == 3
    assert detail["metrics"]["base_auc"] == 0.5 and detail["metrics"]["auc"] > 0.9
    version = client.get("/v1/models/recs/versions/2", headers=ADMIN).json()
    assert version["metrics"] == detail["metrics"] and version["target"] == "device"


def test_the_released_model_holds_the_fedsubavg_aggregate(
    client: TestClient, device: dict[str, str]
) -> None:
    """Each touched row of the new version is the mean over the devices that touched it."""
    federated_model(client)
    bodies = [toward_truth(i, rows=5 + i) for i in range(3)]
    for body in bodies:
        upload(client, device, body)
    settled_round(client, 1)
    sha = client.get("/v1/models/recs/versions/2", headers=ADMIN).json()["sha256"]
    table = _initializer(client.get(f"/v1/blobs/{sha}", headers=ADMIN).content, TABLE)
    touched = sorted({i for b in bodies for i in b["sparse"][0]["ids"]})
    # Every update moves its rows to the truth, so their mean over holders is the truth.
    np.testing.assert_allclose(table[touched], truth()[touched], rtol=1e-5)
    untouched = sorted(set(range(MOVIES)) - set(touched))
    assert np.all(table[untouched] == 0.0)


def test_a_worse_candidate_is_rejected(client: TestClient, device: dict[str, str]) -> None:
    """Updates away from the truth lower the AUC: rejected, no new version."""
    federated_model(client)
    detail = settled_round(client, _fill(client, device, 3, sign=-1.0))
    assert detail["status"] == "rejected" and detail["released_version"] is None
    assert detail["metrics"]["auc"] < detail["metrics"]["base_auc"]
    versions = client.get("/v1/models/recs", headers=ADMIN).json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_min_gain_holds_back_a_small_improvement(
    client: TestClient, device: dict[str, str]
) -> None:
    """A candidate better by less than the round's min_gain is rejected."""
    federated_model(client)
    created = open_round(client, k=2, min_gain=0.6)
    _fill(client, device, 2)
    detail = settled_round(client, created["id"])
    assert detail["status"] == "rejected" and detail["metrics"]["auc"] > 0.9


def test_an_admin_round_sets_k_and_its_settings(client: TestClient, device: dict[str, str]) -> None:
    """An admin-opened round takes its k, clip, noise and lr; updates join it."""
    federated_model(client)
    created = open_round(client, k=2, clip=100.0, noise_std=0.0, lr=0.5, deadline_s=60)
    assert created["status"] == "open" and created["k"] == 2 and created["base_version"] == 1
    assert created["clip"] == 100.0 and created["lr"] == 0.5
    receipt = upload(client, device, toward_truth(0)).json()
    assert receipt == {"round": created["id"], "received": 1, "k": 2, "duplicate": False}
    upload(client, device, toward_truth(1))
    detail = settled_round(client, created["id"])
    assert detail["status"] == "released"
    sha = client.get("/v1/models/recs/versions/2", headers=ADMIN).json()["sha256"]
    table = _initializer(client.get(f"/v1/blobs/{sha}", headers=ADMIN).content, TABLE)
    touched = toward_truth(0)["sparse"][0]["ids"]
    only_first = sorted(set(touched) - set(toward_truth(1)["sparse"][0]["ids"]))
    np.testing.assert_allclose(table[only_first], 0.5 * truth()[only_first], rtol=1e-5)


def test_one_open_round_per_model(client: TestClient) -> None:
    """Opening a second round while one is open conflicts."""
    federated_model(client)
    open_round(client)
    again = client.post("/v1/federation/rounds", headers=ADMIN, json={"model": "recs"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "round_already_open"


def test_round_requests_are_validated(client: TestClient) -> None:
    """k below 2, unknown models and versions, no validation set: clear 4xx codes."""
    federated_model(client)
    upload_model(client, name="bare", target="device", data=ctr_model())
    cases = [
        ({"model": "recs", "k": 1}, 422, "validation_error"),
        ({"model": "recs", "lr": 0}, 422, "validation_error"),
        ({"model": "recs", "deadline_s": -1}, 422, "validation_error"),
        ({"model": "recs", "surprise": 1}, 422, "validation_error"),
        ({"model": "nope"}, 404, "model_not_found"),
        ({"model": "recs", "base_version": 9}, 404, "model_version_not_found"),
        ({"model": "bare"}, 409, "federation_not_enabled"),
    ]
    for body, status, code in cases:
        response = client.post("/v1/federation/rounds", headers=ADMIN, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code


def test_a_round_short_of_k_is_discarded_at_its_deadline(
    client: TestClient, device: dict[str, str]
) -> None:
    """Past its deadline with fewer than k updates, a round is discarded, its deltas deleted,
    and the next update opens a new round."""
    federated_model(client)
    round_id = _fill(client, device, 2)
    context = client.app.state.context  # type: ignore[attr-defined]
    assert rounds.sweep(context, now=utcnow() + timedelta(days=2)) == []
    detail = client.get(f"/v1/federation/rounds/{round_id}", headers=ADMIN).json()
    assert detail["status"] == "discarded" and detail["released_version"] is None
    assert "2 of 3" in detail["reason"]
    receipt = upload(client, device, toward_truth(5)).json()
    assert receipt["round"] == round_id + 1 and receipt["received"] == 1


def test_a_sweep_before_the_deadline_leaves_rounds_open(
    client: TestClient, device: dict[str, str]
) -> None:
    """The sweeper does not touch a round whose deadline is still ahead."""
    federated_model(client)
    round_id = _fill(client, device, 1)
    context = client.app.state.context  # type: ignore[attr-defined]
    assert rounds.sweep(context) == []
    assert client.get(f"/v1/federation/rounds/{round_id}", headers=ADMIN).json()["status"] == (
        "open"
    )


def test_rounds_are_listed_newest_first_in_pages(
    client: TestClient, device: dict[str, str]
) -> None:
    """The list filters by model and status and pages with next_cursor."""
    federated_model(client)
    context = client.app.state.context  # type: ignore[attr-defined]
    for i in range(3):
        upload(client, device, toward_truth(i))
        rounds.sweep(context, now=utcnow() + timedelta(days=2))
    open_round(client)
    first = client.get("/v1/federation/rounds?limit=2", headers=ADMIN).json()
    assert [r["id"] for r in first["items"]] == [4, 3]
    rest = client.get(
        f"/v1/federation/rounds?limit=2&cursor={first['next_cursor']}", headers=ADMIN
    ).json()
    assert [r["id"] for r in rest["items"]] == [2, 1] and rest["next_cursor"] is None
    discarded = client.get("/v1/federation/rounds?status=discarded&model=recs", headers=ADMIN)
    assert [r["id"] for r in discarded.json()["items"]] == [3, 2, 1]
    bad = client.get("/v1/federation/rounds?cursor=forged", headers=ADMIN)
    assert bad.status_code == 400


def test_a_missing_round_is_not_found(client: TestClient) -> None:
    """An id no round has gets 404 round_not_found."""
    response = client.get("/v1/federation/rounds/99", headers=ADMIN)
    assert response.status_code == 404 and response.json()["error"]["code"] == "round_not_found"


def test_admin_routes_refuse_device_tokens(client: TestClient, device: dict[str, str]) -> None:
    """Devices get 403 on every round and model route."""
    federated_model(client)
    calls = [
        ("GET", "/v1/federation/rounds"),
        ("GET", "/v1/federation/rounds/1"),
        ("POST", "/v1/federation/rounds"),
        ("GET", "/v1/federation/models/recs"),
        ("PUT", "/v1/federation/models/recs/validation"),
    ]
    for method, path in calls:
        response = client.request(method, path, headers=device, json={"model": "recs"})
        assert response.status_code == 403, (method, path, response.text)


def test_the_model_view_shows_auc_per_version(client: TestClient, device: dict[str, str]) -> None:
    """After a release the model view lists both versions' validation AUC and the rounds."""
    federated_model(client)
    settled_round(client, _fill(client, device, 3))
    view = client.get("/v1/federation/models/recs", headers=ADMIN).json()
    assert [v["version"] for v in view["versions"]] == [1, 2]
    assert view["versions"][0]["auc"] == 0.5 and view["versions"][1]["auc"] > 0.9
    assert view["rounds"] == {"released": 1} and view["open_round"] is None
    assert view["validation"]["rows"] == 400
    assert client.get("/v1/federation/models/nope", headers=ADMIN).status_code == 404


def test_the_next_round_trains_the_released_version(
    client: TestClient, device: dict[str, str]
) -> None:
    """After a release, an update for the old base conflicts; one for the new joins."""
    federated_model(client)
    settled_round(client, _fill(client, device, 3))
    stale = upload(client, device, toward_truth(9))
    assert stale.status_code == 409
    fresh = upload(client, device, toward_truth(9, base_version=2))
    assert fresh.status_code == 201 and fresh.json()["round"] > 1
    detail = client.get(f"/v1/federation/rounds/{fresh.json()['round']}", headers=ADMIN).json()
    assert detail["base_version"] == 2 and detail["received"] == 1


def test_a_round_that_cannot_aggregate_fails_with_a_reason(
    client: TestClient, device: dict[str, str]
) -> None:
    """A failure while aggregating ends the round as failed and keeps the service up."""
    federated_model(client)
    created = open_round(client, k=2)
    _fill(client, device, 1)
    # The validation blob disappears underneath the round.
    context = client.app.state.context  # type: ignore[attr-defined]
    sha = client.get("/v1/federation/models/recs", headers=ADMIN).json()["validation"]["sha256"]
    context.blobs.path_for(sha).unlink()
    upload(client, device, toward_truth(1))
    detail = settled_round(client, created["id"])
    assert detail["status"] == "failed" and "Aggregation failed" in detail["reason"]
    assert client.get("/v1/federation/rounds", headers=ADMIN).status_code == 200


def test_one_sweep_discards_every_expired_round(client: TestClient, device: dict[str, str]) -> None:
    """Rounds of several models past their deadline are all discarded by one sweep."""
    federated_model(client)
    federated_model(client, name="other")
    first = _fill(client, device, 1)
    second = _fill(client, device, 1, model="other")
    context = client.app.state.context  # type: ignore[attr-defined]
    rounds.sweep(context, now=utcnow() + timedelta(days=2))
    for round_id in (first, second):
        detail = client.get(f"/v1/federation/rounds/{round_id}", headers=ADMIN).json()
        assert detail["status"] == "discarded"


def test_a_lost_aggregation_is_claimed_again(client: TestClient, device: dict[str, str]) -> None:
    """A round left aggregating (its replica stopped) is reclaimed by a later sweep and
    finished."""
    federated_model(client)
    created = open_round(client, k=2, deadline_s=3600)
    context = client.app.state.context  # type: ignore[attr-defined]
    runner = client.app.state.federation.runner  # type: ignore[attr-defined]
    runner.close_soon = lambda round_id: None  # this replica "stops" before aggregating
    _fill(client, device, 2)
    detail = client.get(f"/v1/federation/rounds/{created['id']}", headers=ADMIN).json()
    assert detail["status"] == "aggregating"
    assert rounds.sweep(context) == []  # the claim is fresh: another replica may be at it
    later = utcnow() + timedelta(seconds=rounds.STALE_CLAIM_S + 1)
    assert rounds.sweep(context, now=later) == [created["id"]]
    assert rounds.sweep(context, now=later) == []  # claimed once
    assert rounds.aggregate_round(context, created["id"]).status == "released"
    assert settled_round(client, created["id"])["released_version"] == 2
