"""Deployments end to end in one app: policies, desired state, stages, gates, actions."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from cloud.deploy import service
from cloud.deploy.schemas import CreateDeployment
from cloud.devices.service import remove
from device_sdk.bundle import verify_signature
from device_sdk.wire import TaskManifest
from tests.cloud.deploy.deploy_factories import act, deploy, desired, publish, report
from tests.factories import ADMIN, device_headers, enrollment_key, register_device


def test_released_task_appears_in_desired_state_signed(client: TestClient, tmp_path: Path) -> None:
    """After a release to everyone, a device's desired state names the version, the bundle
    digest and a manifest whose signature verifies with the device's pinned key."""
    published = publish(client, tmp_path)
    device = register_device(client)
    deploy(client)
    body = client.get("/v1/devices/me/desired", headers=device_headers(device)).json()
    (task,) = body["tasks"]
    assert (task["name"], task["version"]) == ("hello", 1)
    assert task["bundle_sha256"] == published["bundle_sha256"]
    verify_signature(
        TaskManifest.model_validate(task["manifest"]),
        task["signature"],
        device["platform_public_key"],
    )


def test_desired_state_etag_gives_304_until_it_changes(client: TestClient, tmp_path: Path) -> None:
    """The desired state's ETag answers 304 while nothing changes, and changes on a release."""
    publish(client, tmp_path)
    device = register_device(client)
    first = client.get("/v1/devices/me/desired", headers=device_headers(device))
    tag = first.headers["etag"]
    again = client.get(
        "/v1/devices/me/desired", headers={**device_headers(device), "If-None-Match": tag}
    )
    assert again.status_code == 304
    deploy(client)
    after = client.get(
        "/v1/devices/me/desired", headers={**device_headers(device), "If-None-Match": tag}
    )
    assert after.status_code == 200
    assert after.headers["etag"] != tag


def test_device_registering_after_release_gets_it(client: TestClient, tmp_path: Path) -> None:
    """A device that registers after a deployment and matches it gets the task at once."""
    publish(client, tmp_path)
    deploy(client, target={"attr": "platform", "eq": "android"})
    late = register_device(client, platform="android")
    other = register_device(client, platform="ios")
    assert desired(client, late) == {"hello": 1}
    assert desired(client, other) == {}


def test_targeting_combines_attributes_semver_and_tags(client: TestClient, tmp_path: Path) -> None:
    """Only devices matching every clause of an `all` target receive the task."""
    publish(client, tmp_path)
    key = enrollment_key(client)
    hit = register_device(client, key, platform="android", app_version="5.3.1", tags=["beta"])
    old = register_device(client, key, platform="android", app_version="5.1.0", tags=["beta"])
    untagged = register_device(client, key, platform="android", app_version="5.3.1")
    target = {
        "all": [
            {"attr": "platform", "eq": "android"},
            {"attr": "app_version", "semver": ">=5.2.0 <6"},
            {"tag": "beta"},
        ]
    }
    deploy(client, target=target)
    assert [desired(client, d) for d in (hit, old, untagged)] == [{"hello": 1}, {}, {}]


def test_explicit_device_ids_and_not(client: TestClient, tmp_path: Path) -> None:
    """A `device_ids` target reaches exactly those devices; `not` excludes them."""
    publish(client, tmp_path)
    publish(client, tmp_path, name="other")
    key = enrollment_key(client)
    chosen, rest = register_device(client, key), register_device(client, key)
    deploy(client, target={"device_ids": [chosen["device_id"]]})
    deploy(client, task="other", target={"not": {"device_ids": [chosen["device_id"]]}})
    assert desired(client, chosen) == {"hello": 1}
    assert desired(client, rest) == {"other": 1}


def test_attribute_update_moves_device_into_a_deployment(
    client: TestClient, tmp_path: Path
) -> None:
    """When a device's app_version changes to match a deployment's range, it gets the task."""
    publish(client, tmp_path)
    device = register_device(client, app_version="5.1.0")
    deploy(client, target={"attr": "app_version", "semver": "^5.2"})
    assert desired(client, device) == {}
    client.put(
        "/v1/devices/me/attributes", headers=device_headers(device), json={"app_version": "5.2.4"}
    )
    assert desired(client, device) == {"hello": 1}


def test_raising_a_stage_keeps_earlier_devices(client: TestClient, tmp_path: Path) -> None:
    """Advancing from 20 % to 60 % keeps every device of the first 20 % and adds more."""
    publish(client, tmp_path)
    key = enrollment_key(client)
    devices = [register_device(client, key) for _ in range(40)]
    created = deploy(client, stages=[20, 60, 100])
    first = {d["device_id"] for d in devices if desired(client, d)}
    act(client, created["id"], "advance")
    second = {d["device_id"] for d in devices if desired(client, d)}
    assert first < second
    assert 0 < len(first) < len(second) < len(devices)
    progress = client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()["progress"]
    assert sum(stage["targeted"] for stage in progress) == len(devices)


def test_priority_then_recency_resolves_two_deployments(client: TestClient, tmp_path: Path) -> None:
    """v2 for everyone and v3 for beta at higher priority: beta runs v3, the rest v2;
    rolling v3 back returns beta devices to v2."""
    publish(client, tmp_path, version=2)
    publish(client, tmp_path, version=3)
    key = enrollment_key(client)
    beta, plain = register_device(client, key, tags=["beta"]), register_device(client, key)
    deploy(client, version=2)
    v3 = deploy(client, version=3, target={"tag": "beta"}, priority=10)
    assert (desired(client, beta), desired(client, plain)) == ({"hello": 3}, {"hello": 2})
    assert act(client, v3["id"], "rollback").json()["state"] == "rolled_back"
    assert desired(client, beta) == {"hello": 2}


def test_newer_deployment_wins_at_equal_priority(client: TestClient, tmp_path: Path) -> None:
    """Between two deployments of one task with equal priority, the newer one wins."""
    publish(client, tmp_path, version=1)
    publish(client, tmp_path, version=2)
    device = register_device(client)
    deploy(client, version=1)
    deploy(client, version=2)
    assert desired(client, device) == {"hello": 2}


def test_rollback_of_the_only_deployment_empties_desired_state(
    client: TestClient, tmp_path: Path
) -> None:
    """Rolling back the only deployment of a task removes the task from desired state."""
    publish(client, tmp_path)
    device = register_device(client)
    created = deploy(client)
    act(client, created["id"], "rollback")
    assert desired(client, device) == {}


def test_gate_advances_after_healthy_activations(client: TestClient, tmp_path: Path) -> None:
    """With min_healthy gates, enough `active` reports in a stage advance the rollout."""
    publish(client, tmp_path)
    key = enrollment_key(client)
    devices = [register_device(client, key) for _ in range(30)]
    created = deploy(client, stages=[30, 100], gates={"min_healthy": 2, "min_soak_s": 0})
    in_first = [d for d in devices if desired(client, d)]
    assert len(in_first) >= 2
    for device in in_first[:2]:
        assert report(client, device, "hello", 1, "active").status_code == 200
    state = client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()
    assert state["stage"] == 1
    assert "advanced automatically" in state["state_reason"]
    assert all(desired(client, d) == {"hello": 1} for d in devices)


def test_gate_rolls_back_above_failure_rate(client: TestClient, tmp_path: Path) -> None:
    """Failures above max_failure_rate among min_reports reports roll the deployment back."""
    publish(client, tmp_path)
    key = enrollment_key(client)
    devices = [register_device(client, key) for _ in range(6)]
    gates = {"min_healthy": 100, "max_failure_rate": 0.5, "min_reports": 3}
    created = deploy(client, gates=gates)
    report(client, devices[0], "hello", 1, "active")
    report(client, devices[1], "hello", 1, "failed")
    report(client, devices[2], "hello", 1, "failed")
    state = client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()
    assert state["state"] == "rolled_back"
    assert "2 of 3 devices" in state["state_reason"]
    assert desired(client, devices[3]) == {}
    progress = state["progress"][0]
    assert (progress["active"], progress["failed"], progress["targeted"]) == (1, 2, 6)


def test_paused_deployment_does_not_advance(client: TestClient, tmp_path: Path) -> None:
    """A paused deployment keeps its stage despite healthy reports; resume lets it move on."""
    publish(client, tmp_path)
    key = enrollment_key(client)
    devices = [register_device(client, key) for _ in range(10)]
    created = deploy(client, stages=[50, 100], gates={"min_healthy": 1})
    assert act(client, created["id"], "pause").json()["state"] == "paused"
    reached = [d for d in devices if desired(client, d)]
    report(client, reached[0], "hello", 1, "active")
    assert client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()["stage"] == 0
    assert act(client, created["id"], "resume").json()["state"] == "active"
    report(client, reached[0], "hello", 1, "active")
    assert client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()["stage"] == 1


def test_invalid_actions_conflict(client: TestClient, tmp_path: Path) -> None:
    """Resuming an active, advancing a final, and resuming a rolled-back deployment get 409."""
    publish(client, tmp_path)
    created = deploy(client)
    assert act(client, created["id"], "resume").status_code == 409
    assert act(client, created["id"], "advance").status_code == 409
    act(client, created["id"], "rollback")
    response = act(client, created["id"], "resume")
    assert response.status_code == 409
    assert "create a new deployment" in response.json()["error"]["message"]


def test_unknown_deployment_action_and_version(client: TestClient, tmp_path: Path) -> None:
    """Unknown deployments are 404, unknown actions 422, unpublished versions 404."""
    publish(client, tmp_path)
    assert (
        client.get("/v1/deployments/999", headers=ADMIN).json()["error"]["code"]
        == "deployment_not_found"
    )
    assert act(client, 999, "explode").status_code == 422
    missing = client.post("/v1/deployments", headers=ADMIN, json={"task": "hello", "version": 7})
    assert missing.status_code == 404
    assert "published versions are 1" in missing.json()["error"]["message"]


def test_hostile_policies_are_422_and_create_nothing(client: TestClient, tmp_path: Path) -> None:
    """Bad stages, ranges, unknown keys and absurdly deep targets get 422; nothing is created."""
    publish(client, tmp_path)
    deep: dict[str, object] = {"everyone": True}
    for _ in range(50):
        deep = {"not": deep}
    bodies = [
        {"stages": [50, 10]},
        {"stages": [0]},
        {"stages": [101]},
        {"stages": []},
        {"target": {"attr": "app_version", "semver": ">=>=1"}},
        {"target": {"attr": "platform", "semver": "1.0"}},
        {"target": {"colour": "red"}},
        {"target": deep},
        {"gates": {"max_failure_rate": 2}},
        {"gates": {"unknown": 1}},
        {"priority": 10**9},
        {"surprise": True},
    ]
    for extra in bodies:
        response = client.post(
            "/v1/deployments", headers=ADMIN, json={"task": "hello", "version": 1, **extra}
        )
        assert response.status_code == 422, extra
    assert client.get("/v1/deployments", headers=ADMIN).json()["items"] == []


def test_status_for_unknown_version_is_422(client: TestClient, tmp_path: Path) -> None:
    """A device reporting a version that was never published gets 422 `unknown_task_version`."""
    publish(client, tmp_path)
    device = register_device(client)
    response = report(client, device, "hello", 9, "active")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_task_version"


def test_status_reports_count_in_progress(client: TestClient, tmp_path: Path) -> None:
    """`downloaded` then `active` in one request counts the device once, as active."""
    publish(client, tmp_path)
    device = register_device(client)
    created = deploy(client)
    body = {
        "reports": [
            {"task": "hello", "version": 1, "state": "downloaded"},
            {"task": "hello", "version": 1, "state": "active"},
        ]
    }
    assert client.post(
        "/v1/devices/me/status", headers=device_headers(device), json=body
    ).json() == {"accepted": 2}
    (stage,) = client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()["progress"]
    assert (stage["targeted"], stage["downloaded"], stage["active"]) == (1, 0, 1)


def test_deployment_list_filters_and_paginates(client: TestClient, tmp_path: Path) -> None:
    """The list is newest first, filters by task and state, and pages with a cursor."""
    publish(client, tmp_path)
    ids = [deploy(client)["id"] for _ in range(3)]
    act(client, ids[0], "rollback")
    page = client.get("/v1/deployments", headers=ADMIN, params={"limit": 2}).json()
    assert [d["id"] for d in page["items"]] == [ids[2], ids[1]]
    rest = client.get(
        "/v1/deployments", headers=ADMIN, params={"cursor": page["next_cursor"]}
    ).json()
    assert [d["id"] for d in rest["items"]] == [ids[0]]
    rolled = client.get("/v1/deployments", headers=ADMIN, params={"state": "rolled_back"}).json()
    assert [d["id"] for d in rolled["items"]] == [ids[0]]


def test_device_cannot_report_on_a_deployment_it_was_never_sent(
    client: TestClient, tmp_path: Path
) -> None:
    """Failures reported by untargeted devices naming a deployment do not roll it back."""
    publish(client, tmp_path)
    key = enrollment_key(client)
    register_device(client, key, tags=["beta"])
    gates = {"min_healthy": 100, "max_failure_rate": 0.5, "min_reports": 3}
    created = deploy(client, target={"tag": "beta"}, gates=gates)
    for _ in range(3):
        outsider = register_device(client, key)
        body = {
            "reports": [
                {"task": "hello", "version": 1, "state": "failed", "deployment_id": created["id"]}
            ]
        }
        client.post("/v1/devices/me/status", headers=device_headers(outsider), json=body)
    state = client.get(f"/v1/deployments/{created['id']}", headers=ADMIN).json()
    assert state["state"] == "active"
    assert state["progress"][0]["failed"] == 0


def test_rolled_back_report_counts_for_the_deployment_left(
    client: TestClient, tmp_path: Path
) -> None:
    """After v2 is rolled back, a `rolled_back` report for v2 counts for v2's deployment."""
    publish(client, tmp_path, version=1)
    publish(client, tmp_path, version=2)
    device = register_device(client)
    deploy(client, version=1)
    v2 = deploy(client, version=2)
    report(client, device, "hello", 2, "active")
    act(client, v2["id"], "rollback")
    assert report(client, device, "hello", 2, "rolled_back").status_code == 200
    progress = client.get(f"/v1/deployments/{v2['id']}", headers=ADMIN).json()["progress"]
    assert progress[0]["rolled_back"] == 1


def test_removed_devices_report_is_404(client: TestClient, tmp_path: Path) -> None:
    """A report from a device removed moments before gets 404, not a 500."""
    publish(client, tmp_path)
    device = register_device(client)
    deploy(client)
    assert desired(client, device) == {"hello": 1}  # its token is now in the auth cache
    app_state = client.app.state  # type: ignore[attr-defined]
    with app_state.context.db.session() as session:
        remove(session, device["device_id"])
    # The token is still in this replica's cache, as it would be on another replica.
    response = report(client, device, "hello", 1, "active")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "device_not_found"


def test_gate_counts_only_devices_the_deployment_can_get(
    client: TestClient, tmp_path: Path
) -> None:
    """Devices served by a higher-priority deployment do not hold back another one's gate."""
    publish(client, tmp_path, version=1)
    publish(client, tmp_path, version=2)
    key = enrollment_key(client)
    beta = [register_device(client, key, tags=["beta"]) for _ in range(3)]
    plain = register_device(client, key)
    deploy(client, version=2, target={"tag": "beta"}, priority=10)
    everyone = deploy(client, version=1, stages=[50, 100], gates={"min_healthy": 2})
    state = client.get(f"/v1/deployments/{everyone['id']}", headers=ADMIN).json()
    assert sum(stage["targeted"] for stage in state["progress"]) == 1
    if desired(client, plain) == {"hello": 1}:
        report(client, plain, "hello", 1, "active")
        state = client.get(f"/v1/deployments/{everyone['id']}", headers=ADMIN).json()
        assert state["stage"] == 1
    assert all(desired(client, d) == {"hello": 2} for d in beta)


def test_deployment_filters_and_versions_are_bounded(client: TestClient) -> None:
    """A NUL in the task filter and a 40-bit version get 422, not a 500."""
    assert (
        client.get("/v1/deployments", headers=ADMIN, params={"task": "a\x00b"}).status_code == 422
    )
    big = client.post("/v1/deployments", headers=ADMIN, json={"task": "hello", "version": 2**40})
    assert big.status_code == 422


def test_gates_wait_until_a_new_deployment_is_materialised(
    client: TestClient, tmp_path: Path
) -> None:
    """A deployment committed but not yet worked out per device (nobody counted as targeted)
    is not advanced by its gates, as a sweeper passing in that moment would otherwise do."""
    publish(client, tmp_path)
    for _ in range(4):
        register_device(client)
    context = client.app.state.context  # type: ignore[attr-defined]
    body = CreateDeployment(task="hello", version=1, stages=[50, 100], gates={"min_healthy": 1})
    with context.db.session() as session:
        deployment_id = service.create(session, body).id
    with context.db.session() as session:
        assert service.apply_gates(session, deployment_id) is False
    assert client.get(f"/v1/deployments/{deployment_id}", headers=ADMIN).json()["stage"] == 0
