"""Routers over HTTP: create, observe, train, route, export, report, and refuse bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.cloud.router.factories import create_router, trained_router, workload
from tests.factories import ADMIN, device_headers, register_device


def route(client: TestClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return client.post("/v1/route", headers=headers or ADMIN, json={"router": "qa", **body})


def test_trained_router_sends_hard_requests_to_the_cloud(client: TestClient) -> None:
    """After training, a text with the hard word goes to the cloud and an easy one stays."""
    version = trained_router(client)
    assert version["version"] == 1
    assert version["training"]["metrics"]["correct"]["auc"] > 0.9
    hard = route(client, text="question 1000: river integral season")
    easy = route(client, text="question 1001: river capital season")
    assert hard.status_code == 200, hard.text
    assert hard.json()["decision"]["target"] == "cloud"
    assert easy.json()["decision"]["target"] == "edge"
    assert hard.json()["decision"]["prs"] < 0.5 < easy.json()["decision"]["prs"]


def test_route_explains_with_key_tokens(client: TestClient) -> None:
    """The hard word is the key token pushing the request towards the cloud."""
    trained_router(client)
    decision = route(client, text="river integral season").json()["decision"]
    top = decision["key_tokens"]["correct"][0]
    assert "integral" in top["token"]
    assert top["push"] < 0


def test_batch_route_answers_each_item_in_order(client: TestClient) -> None:
    """A batch gets one decision per item, in order, and no single `decision`."""
    trained_router(client)
    response = route(
        client,
        items=[
            {"text": "question 1000: river integral season"},
            {"text": "question 1001: river capital season"},
        ],
    )
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["decision"] is None
    assert [d["target"] for d in body["items"]] == ["cloud", "edge"]


def test_budget_caps_the_cloud_share_in_every_window(client: TestClient) -> None:
    """With every request hard, the cloud share over any window stays within the budget."""
    trained_router(client, budget=0.2, window=20)
    body = route(client, items=[{"text": f"integral {i}"} for i in range(200)]).json()
    cloud = [d["target"] == "cloud" for d in body["items"]]
    assert max(sum(cloud[i : i + 20]) for i in range(len(cloud) - 19)) <= 4
    assert any(d["capped"] for d in body["items"])


def test_several_metrics_combine_into_prs_with_their_weights(client: TestClient) -> None:
    """PRS is the weighted sum of the per-metric D_i."""
    create_router(
        client,
        metrics=[{"name": "correct", "weight": 0.75}, {"name": "helpful", "weight": 0.25}],
    )
    items = workload(60, metrics=("correct", "helpful"))
    for item in items[::2]:
        item["edge"]["helpful"] = 1.0  # on helpfulness the edge keeps up half the time
    client.post("/v1/routers/qa/observations", headers=ADMIN, json={"items": items})
    assert (
        client.post("/v1/routers/qa/train", headers=ADMIN, json={"epochs": 50}).status_code == 201
    )
    decision = route(client, text="integral river").json()["decision"]
    d = decision["d"]
    assert set(d) == {"correct", "helpful"}
    assert decision["prs"] == pytest.approx(0.75 * d["correct"] + 0.25 * d["helpful"], abs=1e-9)


def test_plain_feature_vectors_are_enough(client: TestClient) -> None:
    """A router with plain features learns from them without any text."""
    create_router(client, n_features=2)
    items = [
        {
            "features": [float(i % 2), 1.0],
            "edge": {"correct": float(i % 2)},
            "cloud": {"correct": 1.0},
        }
        for i in range(60)
    ]
    response = client.post("/v1/routers/qa/observations", headers=ADMIN, json={"items": items})
    assert response.status_code == 200, response.text
    assert (
        client.post("/v1/routers/qa/train", headers=ADMIN, json={"epochs": 100}).status_code == 201
    )
    weak = route(client, features=[0.0, 1.0]).json()["decision"]
    strong = route(client, features=[1.0, 1.0]).json()["decision"]
    assert weak["prs"] < 0.5 < strong["prs"]
    assert weak["key_tokens"] == {"correct": []}


def test_read_router_shows_versions_and_stats(client: TestClient) -> None:
    """GET shows each version and the decisions: share against the budget, PRS histogram."""
    trained_router(client)
    route(
        client,
        items=[
            {"text": f"question {i}: {w} river song"}
            for i, w in enumerate(["integral", "capital", "city"])
        ],
    )
    body = client.get("/v1/routers/qa", headers=ADMIN).json()
    assert [v["version"] for v in body["versions"]] == [1]
    stats = body["stats"]
    assert stats["requests"] == 3
    assert stats["cloud"] == 1
    assert sum(stats["prs_histogram"]) == 3
    assert sum(p["requests"] for p in stats["over_time"]) == 3
    assert {p["budget"] for p in stats["over_time"]} == {0.35}
    assert stats["observations"] == 90
    assert stats["threshold"] is not None


def test_training_again_makes_a_new_version(client: TestClient) -> None:
    """Each training run is a new immutable version; route answers name the one used."""
    trained_router(client)
    response = client.post("/v1/routers/qa/train", headers=ADMIN, json={"epochs": 20})
    assert response.json()["version"] == 2
    assert route(client, text="x").json()["version"] == 2
    assert route(client, text="x", version=1).json()["version"] == 1
    missing = route(client, text="x", version=9)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "router_version_not_found"


def test_device_routes_and_exports_but_cannot_administer(client: TestClient) -> None:
    """A device may route, export and report; creating or observing needs an admin key."""
    trained_router(client)
    headers = device_headers(register_device(client))
    assert route(client, headers=headers, text="integral").status_code == 200
    export = client.get("/v1/routers/qa/export", headers=headers)
    assert export.status_code == 200, export.text
    blob = client.get(export.json()["download_url"], headers=headers)
    assert blob.status_code == 200
    assert len(blob.content) == export.json()["onnx_size"]
    refused = client.post(
        "/v1/routers/qa/observations", headers=headers, json={"items": workload(1)}
    )
    assert refused.status_code == 403


def test_device_reports_count_in_the_stats(client: TestClient) -> None:
    """Decisions a device reports show up in the router's statistics."""
    trained_router(client)
    headers = device_headers(register_device(client))
    report = {
        "version": 1,
        "decisions": [{"prs": 0.2, "cloud": True}, {"prs": 0.9, "cloud": False}],
    }
    response = client.post("/v1/routers/qa/decisions", headers=headers, json=report)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    stats = client.get("/v1/routers/qa", headers=ADMIN).json()["stats"]
    assert (stats["requests"], stats["cloud"]) == (2, 1)


def test_budget_can_be_changed(client: TestClient) -> None:
    """PATCH changes the budget; later stats compare against the new one."""
    trained_router(client)
    response = client.patch("/v1/routers/qa", headers=ADMIN, json={"budget": 0.1})
    assert response.status_code == 200, response.text
    assert client.get("/v1/routers/qa", headers=ADMIN).json()["stats"]["budget"] == 0.1


def test_routing_before_training_says_what_to_do(client: TestClient) -> None:
    """A router without a version answers 409 router_not_trained, naming the train call."""
    create_router(client)
    response = route(client, text="hello")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "router_not_trained"
    assert "/v1/routers/qa/train" in response.json()["error"]["message"]


def test_training_with_too_few_observations_is_refused(client: TestClient) -> None:
    """Training needs at least ten observations: 409 not_enough_observations."""
    create_router(client)
    client.post("/v1/routers/qa/observations", headers=ADMIN, json={"items": workload(3)})
    response = client.post("/v1/routers/qa/train", headers=ADMIN)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_enough_observations"


def test_unknown_router_is_404(client: TestClient) -> None:
    """Every endpoint answers 404 router_not_found for a name nobody created."""
    assert route(client, text="x").json()["error"]["code"] == "router_not_found"
    assert client.get("/v1/routers/nope", headers=ADMIN).status_code == 404
    response = client.post("/v1/routers/nope/train", headers=ADMIN)
    assert response.json()["error"]["code"] == "router_not_found"


def test_duplicate_router_name_conflicts(client: TestClient) -> None:
    """A second router with the same name is refused with 409 duplicate_name."""
    create_router(client)
    response = client.post(
        "/v1/routers", headers=ADMIN, json={"name": "qa", "metrics": [{"name": "m", "weight": 1}]}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_name"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "qa", "metrics": [{"name": "a", "weight": 0.5}]},
        {"name": "qa", "metrics": [{"name": "a", "weight": 0.5}, {"name": "a", "weight": 0.5}]},
        {"name": "qa", "metrics": []},
        {"name": "QA!", "metrics": [{"name": "a", "weight": 1}]},
        {"name": "qa", "metrics": [{"name": "a", "weight": 1}], "budget": 1.5},
        {"name": "qa", "metrics": [{"name": "a", "weight": 1}], "window": 0},
        {"name": "qa", "metrics": [{"name": "a\u0000", "weight": 1}]},
        {"name": "qa", "metrics": [{"name": "a", "weight": 1}], "feature_spec": {"dim": 2**30}},
        {"name": "qa", "metrics": [{"name": "a", "weight": 1}], "surprise": 1},
    ],
)
def test_bad_router_definitions_are_422(client: TestClient, body: dict[str, Any]) -> None:
    """Weights not summing to 1, repeated or bad names, out-of-range budget, window or
    featurizer, unknown fields: each is a 422 and nothing is created."""
    response = client.post("/v1/routers", headers=ADMIN, json=body)
    assert response.status_code == 422, response.text
    assert client.get("/v1/routers", headers=ADMIN).json()["items"] == []


@pytest.mark.parametrize(
    "item",
    [
        {"text": "x", "edge": {"other": 1.0}, "cloud": {"correct": 1.0}},
        {"text": "x", "edge": {"correct": 1.0}, "cloud": {}},
        {"edge": {"correct": 1.0}, "cloud": {"correct": 1.0}},
        {"text": "x", "features": [1.0], "edge": {"correct": 1.0}, "cloud": {"correct": 1.0}},
        {"text": "nul \u0000 inside", "edge": {"correct": 1.0}, "cloud": {"correct": 1.0}},
        {"text": "x", "edge": {"correct": "high"}, "cloud": {"correct": 1.0}},
        {"text": "x" * 100_001, "edge": {"correct": 1.0}, "cloud": {"correct": 1.0}},
    ],
)
def test_one_bad_observation_refuses_the_batch(client: TestClient, item: dict[str, Any]) -> None:
    """Wrong metrics, no text, features the router does not take, a NUL, a non-number, an
    over-long text: 422, and the good items beside it are not stored either."""
    create_router(client)
    response = client.post(
        "/v1/routers/qa/observations", headers=ADMIN, json={"items": [*workload(2), item]}
    )
    assert response.status_code == 422, response.text
    stats = client.get("/v1/routers/qa", headers=ADMIN).json()["stats"]
    assert stats["observations"] == 0


def test_observation_scores_must_be_finite(client: TestClient) -> None:
    """A NaN or infinite score (sent as raw JSON) is refused with 422."""
    create_router(client)
    body = '{"items": [{"text": "x", "edge": {"correct": NaN}, "cloud": {"correct": Infinity}}]}'
    response = client.post(
        "/v1/routers/qa/observations",
        headers=ADMIN | {"Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code in (400, 422), response.text


def test_too_many_observations_in_one_batch_are_refused(client: TestClient) -> None:
    """More than 1,000 items in one batch is a 422 telling the caller to split it."""
    create_router(client)
    response = client.post(
        "/v1/routers/qa/observations", headers=ADMIN, json={"items": workload(1001)}
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "x", "items": [{"text": "y"}]},
        {"items": []},
        {"text": "x", "features": [1.0, 2.0]},
        {"text": "x", "key_tokens": 999},
        {"items": [{"text": "x"}] * 1001},
    ],
)
def test_bad_route_requests_are_refused(client: TestClient, body: dict[str, Any]) -> None:
    """Nothing to route, both shapes at once, an empty batch, features the router does not
    take, too many key tokens or items: a 4xx, never a 500."""
    trained_router(client)
    response = route(client, **body)
    assert 400 <= response.status_code < 500, response.text


def test_hostile_texts_route_fine(client: TestClient) -> None:
    """Emoji, right-to-left text, lone surrogates' neighbours, control characters and a
    very long text are routed like any other."""
    trained_router(client)
    texts = ["🤖 integral ∫", "مرحبا بالعالم", "\u202eevil\u202c", "tab\there\x01", "a " * 40_000]
    response = route(client, items=[{"text": t} for t in texts])
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == len(texts)


def test_route_needs_credentials(client: TestClient) -> None:
    """Routing without a token is 401."""
    response = client.post("/v1/route", json={"router": "qa", "text": "x"})
    assert response.status_code == 401


def test_budget_holds_across_versions(client: TestClient) -> None:
    """Requests alternating between a pinned old version and the latest share one window:
    the cloud share stays within the budget over every window."""
    trained_router(client, budget=0.2, window=20)
    client.post("/v1/routers/qa/train", headers=ADMIN, json={"epochs": 150})
    cloud = []
    for i in range(60):
        pinned = {"version": 1} if i % 2 else {}
        decision = route(client, text=f"question {i}: integral", **pinned).json()["decision"]
        cloud.append(decision["target"] == "cloud")
    assert max(sum(cloud[i : i + 20]) for i in range(len(cloud) - 19)) <= 4


def test_oldest_observations_go_past_the_retention_cap(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the per-router cap, the oldest observations are deleted; the newest stay."""
    monkeypatch.setattr("cloud.router.service.MAX_KEPT_OBSERVATIONS", 15)
    create_router(client)
    for _ in range(2):
        response = client.post(
            "/v1/routers/qa/observations", headers=ADMIN, json={"items": workload(10)}
        )
    assert response.json() == {"accepted": 10, "total": 15}
    assert client.get("/v1/routers/qa", headers=ADMIN).json()["stats"]["observations"] == 15


@pytest.mark.parametrize(
    ("report", "status"),
    [
        ({"version": 9, "decisions": [{"prs": 0.5, "cloud": False}]}, 404),
        ({"version": 2**31, "decisions": [{"prs": 0.5, "cloud": False}]}, 422),
        ({"version": 1, "decisions": []}, 422),
        ({"version": 1, "decisions": [{"prs": 1.5, "cloud": False}]}, 422),
        ({"version": 1, "decisions": [{"prs": 0.5, "cloud": False}] * 1001}, 422),
    ],
    ids=["unknown-version", "version-past-int32", "empty", "prs-out-of-range", "too-many"],
)
def test_bad_decision_reports_are_refused(
    client: TestClient, report: dict[str, Any], status: int
) -> None:
    """An unknown version, an out-of-range one, no decisions, a PRS outside [0, 1] or too
    many decisions: refused, and nothing is counted."""
    trained_router(client)
    headers = device_headers(register_device(client))
    response = client.post("/v1/routers/qa/decisions", headers=headers, json=report)
    assert response.status_code == status, response.text
    assert client.get("/v1/routers/qa", headers=ADMIN).json()["stats"]["requests"] == 0


def test_only_devices_report_decisions(client: TestClient) -> None:
    """An admin key cannot report device decisions: 403."""
    trained_router(client)
    report = {"version": 1, "decisions": [{"prs": 0.5, "cloud": False}]}
    response = client.post("/v1/routers/qa/decisions", headers=ADMIN, json=report)
    assert response.status_code == 403
