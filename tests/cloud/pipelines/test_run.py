"""Running pipeline specs in the cloud: inline events, stored uploads, refusals."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import ADMIN, device_headers, register_device
from tests.task_factories import packed

RUN = "/v1/pipelines/run"
UPLOAD = "/v1/devices/me/uploads/events"


def spec(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1,
        "name": "shop",
        "stages": [
            {"op": "key_by", "attr": "user"},
            {"op": "aggregate", "feature": "views", "fn": "count"},
            {
                "op": "trigger",
                "name": "view_then_buy",
                "pattern": {"steps": [{"type": "view"}, {"type": "buy"}], "within": "10m"},
            },
        ],
    }
    base.update(overrides)
    return base


def event(n: int, kind: str = "view", user: str = "u1", ts: float | None = None) -> dict[str, Any]:
    return {
        "id": f"e{n}",
        "type": kind,
        "ts": 1000.0 + n if ts is None else ts,
        "attrs": {"user": user},
    }


def run(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post(RUN, headers=ADMIN, json=body)


def test_inline_events_give_features_and_firings(client: TestClient) -> None:
    """A run over inline events answers each feature's last value and every firing."""
    events = [event(1), event(2, user="u2"), event(3, "buy")]
    response = run(client, {"specs": [spec()], "events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["features"] == {
        "views:u1": {"value": 2, "type": "int", "ttl_s": None},
        "views:u2": {"value": 1, "type": "int", "ttl_s": None},
    }
    assert [(f["trigger"], f["key"], [e["id"] for e in f["events"]]) for f in body["firings"]] == [
        ("view_then_buy", "u1", ["e1", "e3"])
    ]
    assert body["events_read"] == 3 and body["stats"]["events"] == 3


def test_stored_uploads_of_a_device_run_in_arrival_order(client: TestClient) -> None:
    """Uploads on the events channel are read in order; items of another shape are skipped."""
    device = register_device(client)
    items = [
        {"key": str(uuid.uuid4()), "payload": {"events": [event(1)]}},
        {"key": str(uuid.uuid4()), "payload": {"note": "not events"}},
        {"key": str(uuid.uuid4()), "payload": {"events": [event(2, "buy"), {"id": 5}]}},
    ]
    stored = client.post(UPLOAD, headers=device_headers(device), json={"items": items})
    assert stored.status_code == 200, stored.text
    response = run(client, {"specs": [spec()], "uploads": {"device_id": device["device_id"]}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["upload_items_read"], body["skipped_items"], body["events_read"]) == (3, 1, 3)
    assert body["stats"]["invalid"] == 1
    assert [f["trigger"] for f in body["firings"]] == ["view_then_buy"]
    assert body["next_cursor"] is None


def test_uploads_are_paged_with_a_cursor(client: TestClient) -> None:
    """limit reads that many items; next_cursor continues after them."""
    device = register_device(client)
    items = [{"key": str(uuid.uuid4()), "payload": {"events": [event(n)]}} for n in range(3)]
    client.post(UPLOAD, headers=device_headers(device), json={"items": items})
    first = run(
        client, {"specs": [spec()], "uploads": {"device_id": device["device_id"], "limit": 2}}
    )
    assert first.json()["events_read"] == 2 and first.json()["next_cursor"]
    rest = run(
        client,
        {
            "specs": [spec()],
            "uploads": {"device_id": device["device_id"], "cursor": first.json()["next_cursor"]},
        },
    )
    assert rest.json()["events_read"] == 1 and rest.json()["next_cursor"] is None


def test_an_invalid_spec_is_refused_with_every_problem(client: TestClient) -> None:
    """A bad spec answers 422 invalid_pipeline_spec, each problem's path in details."""
    bad = spec(lateness="soon")
    bad["stages"][1]["window"] = {"kind": "tumbling", "size": "0s"}
    response = run(client, {"specs": [bad], "events": []})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_pipeline_spec"
    assert any(p.startswith("lateness: must be a non-negative duration") for p in error["details"])
    assert "stages[1].window.size: must be a positive duration" in " ".join(error["details"])


def test_an_unknown_device_is_404(client: TestClient) -> None:
    """Uploads of a device that does not exist answer 404 device_not_found."""
    response = run(client, {"specs": [spec()], "uploads": {"device_id": "nope"}})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "device_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"specs": [], "events": []},
        {"specs": [{"version": 1}], "events": [], "uploads": {"device_id": "x"}},
        {"specs": [{"version": 1}]},
        {"specs": [{"version": 1}], "events": [], "extra": 1},
        {"specs": [{"version": 1}], "uploads": {"device_id": "x", "limit": 0}},
        {"specs": [{"version": 1}], "uploads": {"device_id": "a\u0000b"}},
        {"specs": "all", "events": []},
    ],
)
def test_malformed_requests_are_422(client: TestClient, body: dict[str, Any]) -> None:
    """No specs, both or neither event source, unknown fields, bad limits: 422, no 500."""
    response = run(client, body)
    assert response.status_code == 422, response.text


def test_hostile_events_are_counted_not_fatal(client: TestClient) -> None:
    """Events of the wrong shape (no id, NaN-free junk, nested objects) are counted invalid."""
    events: list[Any] = [
        "text",
        {"id": "x", "type": "view", "ts": "yesterday", "attrs": {}},
        {"id": "y", "type": "view", "ts": 1.0, "attrs": {"user": {"deep": [1]}}},
        {"id": "", "type": "view", "ts": 1.0, "attrs": {}},
        event(1),
    ]
    response = run(client, {"specs": [spec()], "events": events})
    assert response.status_code == 200, response.text
    assert response.json()["stats"]["invalid"] == 3
    assert response.json()["features"]["views:u1"]["value"] == 1


def test_the_run_needs_an_admin(client: TestClient) -> None:
    """A device token may not run pipelines: 403; no credentials: 401."""
    device = register_device(client)
    body = {"specs": [spec()], "events": []}
    assert client.post(RUN, headers=device_headers(device), json=body).status_code == 403
    assert client.post(RUN, json=body).status_code == 401


def test_publishing_a_task_with_an_invalid_pipeline_is_refused(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle whose manifest pipeline is invalid answers 422 naming every bad path (the
    bundle packed without pack's own check, as a hand-made upload would be)."""
    monkeypatch.setattr("device_sdk.bundle.check_pipeline", lambda manifest: None)
    bad = spec()
    bad["stages"][1]["window"] = {"kind": "sliding", "size": "1h", "slide": "7m"}
    bad["stages"][2]["pattern"]["within"] = -1
    data = packed(tmp_path, name="bad-pipe", pipeline=bad)
    response = client.post(
        "/v1/tasks", headers=ADMIN, files={"bundle": ("task.tar.gz", data, "application/gzip")}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_pipeline_spec"
    assert "pipeline.stages[1].window.slide: must divide size into 1 to 1000 equal panes" in (
        " ".join(error["details"])
    )
    assert any(d.startswith("pipeline.stages[2].pattern.within:") for d in error["details"])
    assert client.get("/v1/tasks/bad-pipe/versions/1", headers=ADMIN).status_code == 404


def test_publishing_a_task_with_a_valid_pipeline_keeps_it(
    client: TestClient, tmp_path: Path
) -> None:
    """A valid pipeline is published as part of the signed manifest."""
    data = packed(tmp_path, name="good-pipe", pipeline=spec())
    response = client.post(
        "/v1/tasks", headers=ADMIN, files={"bundle": ("task.tar.gz", data, "application/gzip")}
    )
    assert response.status_code == 201, response.text
    assert response.json()["manifest"]["pipeline"] == spec()


def test_too_many_stored_events_are_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads holding more events than one run processes answer 422, saying how to page."""
    from cloud.pipelines import service

    monkeypatch.setattr(service, "MAX_EVENTS", 2)
    device = register_device(client)
    items = [
        {"key": str(uuid.uuid4()), "payload": {"events": [event(n), event(n + 10)]}}
        for n in range(2)
    ]
    client.post(UPLOAD, headers=device_headers(device), json={"items": items})
    response = run(client, {"specs": [spec()], "uploads": {"device_id": device["device_id"]}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "pipeline_input_too_large"
    assert "next_cursor" in error["message"]


def test_too_many_inline_events_are_refused(client: TestClient) -> None:
    """More than 10,000 inline events answer 422 before anything runs."""
    response = run(client, {"specs": [spec()], "events": [event(0)] * 10_001})
    assert response.status_code == 422
