"""Creating and steering deployments from the dashboard's forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.cloud.dashboard.factories import deploy, fleet, logged_in, page_token, publish
from tests.factories import ADMIN


def deployments(client: TestClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/v1/deployments", headers=ADMIN).json()["items"]
    return items


def create(client: TestClient, **fields: str) -> Any:
    form = {
        "task_version": "hello:1",
        "target": '{"attr": "platform", "eq": "android"}',
        "stages": "50, 100",
        "priority": "0",
        "csrf_token": page_token(client, "/dashboard/deployments"),
        **fields,
    }
    return client.post("/dashboard/deployments", data=form, follow_redirects=False)


def test_the_form_creates_a_deployment_with_its_policy(client: TestClient, tmp_path: Path) -> None:
    """A valid form creates the deployment with its targeting, stages and gates."""
    fleet(client, 2)
    publish(client, tmp_path)
    logged_in(client)
    response = create(client, gates="on", min_healthy="1", max_failure_rate="0.5", min_reports="2")
    assert response.status_code == 303, response.text
    (created,) = deployments(client)
    assert response.headers["location"] == f"/dashboard/deployments/{created['id']}"
    assert created["target"] == {"attr": "platform", "eq": "android"}
    assert created["stages"] == [50.0, 100.0]
    assert created["gates"]["max_failure_rate"] == 0.5 and created["gates"]["min_reports"] == 2
    assert sum(s["targeted"] for s in created["progress"]) == 2


def test_the_task_version_choice_lists_published_versions(
    client: TestClient, tmp_path: Path
) -> None:
    """The create form offers each published task version."""
    publish(client, tmp_path, "hello", 1)
    publish(client, tmp_path, "hello", 2)
    html = logged_in(client).get("/dashboard/deployments").text
    assert '<option value="hello:2"' in html and '<option value="hello:1"' in html


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"target": "{not json"}, "target: not valid JSON"),
        ({"target": '{"attr": "colour", "eq": "red"}'}, "target"),
        ({"stages": "50, 20"}, "stages"),
        ({"stages": "ten"}, "stages"),
        ({"priority": "99999"}, "priority"),
        ({"task_version": "hello:7"}, "no version 7"),
        ({"task_version": "nonsense"}, "task"),
        ({"gates": "on", "max_failure_rate": "3"}, "max_failure_rate"),
        ({"target": "[" * 5000}, "target"),
    ],
)
def test_an_invalid_policy_is_a_form_error_and_writes_nothing(
    client: TestClient, tmp_path: Path, fields: dict[str, str], problem: str
) -> None:
    """An invalid form comes back with its problems listed and no deployment is made."""
    publish(client, tmp_path)
    logged_in(client)
    response = create(client, **fields)
    assert response.status_code == 422, response.text
    assert "The deployment was not created" in response.text and problem in response.text
    assert deployments(client) == []


def test_a_create_without_the_csrf_token_is_refused(client: TestClient, tmp_path: Path) -> None:
    """Creating without the form's token gets 403 and writes nothing."""
    publish(client, tmp_path)
    logged_in(client)
    response = create(client, csrf_token="")
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"
    assert deployments(client) == []


def steer(client: TestClient, deployment_id: int, action: str, token: str | None = None) -> Any:
    path = f"/dashboard/deployments/{deployment_id}"
    return client.post(
        f"{path}/{action}",
        data={"csrf_token": token if token is not None else page_token(client, path)},
        follow_redirects=False,
    )


@pytest.mark.parametrize(("action", "state"), [("pause", "paused"), ("rollback", "rolled_back")])
def test_actions_change_the_deployment(
    client: TestClient, tmp_path: Path, action: str, state: str
) -> None:
    """Pause and roll back from the page change the deployment's state."""
    publish(client, tmp_path)
    deployment_id = deploy(client)
    response = steer(logged_in(client), deployment_id, action)
    assert response.status_code == 303
    assert deployments(client)[0]["state"] == state


def test_advance_moves_to_the_next_stage(client: TestClient, tmp_path: Path) -> None:
    """Advance from the page moves the rollout to its next stage."""
    publish(client, tmp_path)
    deployment_id = deploy(client, stages=[10, 100])
    assert steer(logged_in(client), deployment_id, "advance").status_code == 303
    assert deployments(client)[0]["stage"] == 1


def test_an_action_that_does_not_apply_is_explained(client: TestClient, tmp_path: Path) -> None:
    """Resuming an active deployment answers 409 with the reason on the page."""
    publish(client, tmp_path)
    deployment_id = deploy(client)
    response = steer(logged_in(client), deployment_id, "resume")
    assert response.status_code == 409 and "is not paused" in response.text


def test_an_action_without_the_csrf_token_is_refused(client: TestClient, tmp_path: Path) -> None:
    """A rollback post with a wrong token gets 403 and the deployment stays active."""
    publish(client, tmp_path)
    deployment_id = deploy(client)
    response = steer(logged_in(client), deployment_id, "rollback", token="forged")
    assert response.status_code == 403
    assert deployments(client)[0]["state"] == "active"


def test_an_unknown_action_is_a_4xx(client: TestClient, tmp_path: Path) -> None:
    """An action that does not exist is refused before anything runs."""
    publish(client, tmp_path)
    deployment_id = deploy(client)
    response = steer(logged_in(client), deployment_id, "explode")
    assert 400 <= response.status_code < 500
