"""A round with `deploy`: the released version ships as the task's next version."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.cloud.federation.factories import (
    ctr_model,
    federated_model,
    open_round,
    settled_round,
    toward_truth,
    upload,
)
from tests.factories import ADMIN
from tests.task_factories import MAIN_PY, packed


def _publish(client: TestClient, tmp_path: Path, name: str, files: dict[str, Any]) -> None:
    models = [{"name": "ranker", "file": "model.onnx"}] if "model.onnx" in files else []
    data = packed(tmp_path, name=name, files=files, models=models)
    response = client.post(
        "/v1/tasks", headers=ADMIN, files={"bundle": ("b.tar.gz", data, "application/gzip")}
    )
    assert response.status_code == 201, response.text


def test_a_release_publishes_and_deploys_the_task(
    client: TestClient, device: dict[str, str], tmp_path: Path
) -> None:
    """After release the task's next version carries the new model and is deployed."""
    federated_model(client)
    _publish(client, tmp_path, "recs-task", {"main.py": MAIN_PY, "model.onnx": ctr_model()})
    policy = {"stages": [10, 100], "priority": 5}
    created = open_round(client, k=2, deploy={"task": "recs-task", "policy": policy})
    for i in range(2):
        assert upload(client, device, toward_truth(i)).status_code == 201
    detail = settled_round(client, created["id"])
    assert detail["status"] == "released" and detail["task_version"] == 2, detail
    released = client.get("/v1/models/recs/versions/2", headers=ADMIN).json()
    task = client.get("/v1/tasks/recs-task/versions/2", headers=ADMIN).json()
    assert task["manifest"]["files"]["model.onnx"]["sha256"] == released["sha256"]
    assert (
        task["manifest"]["files"]["main.py"]["sha256"]
        == hashlib.sha256(MAIN_PY.encode()).hexdigest()
    )
    deployment = client.get(f"/v1/deployments/{detail['deployment_id']}", headers=ADMIN).json()
    assert deployment["task"] == "recs-task" and deployment["version"] == 2
    assert deployment["stages"] == [10, 100] and deployment["priority"] == 5


def test_deploy_needs_a_task_that_ships_the_model(client: TestClient, tmp_path: Path) -> None:
    """A task without the model is refused (422); an unknown task is 404."""
    federated_model(client)
    _publish(client, tmp_path, "other", {"main.py": MAIN_PY})
    response = client.post(
        "/v1/federation/rounds", headers=ADMIN, json={"model": "recs", "deploy": {"task": "other"}}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_deploy_task"
    missing = client.post(
        "/v1/federation/rounds", headers=ADMIN, json={"model": "recs", "deploy": {"task": "gone"}}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"
