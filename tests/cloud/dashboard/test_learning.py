"""The Learning page: CoDA pools and federation rounds with the AUC per model version."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cloud.core.settings import Settings
from tests.cloud.dashboard.factories import logged_in
from tests.cloud.federation.factories import federated_model, settled_round, toward_truth, upload
from tests.factories import changed, device_headers, register_device


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return changed(settings, federation_k=3, federation_updates_burst=1000)


def test_a_released_round_shows_its_updates_outcome_and_auc(client: TestClient) -> None:
    """A round that reached k and released shows k, its updates, and both versions' AUC."""
    federated_model(client)
    device = device_headers(register_device(client))
    for seed in range(3):
        assert upload(client, device, toward_truth(seed)).status_code == 201
    detail = settled_round(client, 1)
    assert detail["status"] == "released", detail
    html = logged_in(client).get("/dashboard/learning").text
    rounds = html.split("Federation rounds")[1]
    assert "<td>#1</td><td>recs</td><td>1</td>" in rounds
    assert '<span class="badge">released</span>' in rounds and "<td>3 / 3</td>" in rounds
    assert f"{detail['metrics']['auc']:.4f}" in rounds
    per_version = html.split("Validation AUC per model version")[1]
    assert "<td>recs</td><td>2</td>" in per_version and "<td>recs</td><td>1</td>" in per_version


def test_without_rounds_the_page_says_how_to_open_one(client: TestClient) -> None:
    """With no federation round the section says how to open one."""
    html = logged_in(client).get("/dashboard/learning").text
    assert "No round yet" in html and "No model version has been evaluated" in html
