"""Every dashboard page renders the data that is there, and hostile parameters get a 4xx
or a clean page, never a 500."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.dashboard import queries
from tests.cloud.dashboard.factories import deploy, fleet, logged_in, publish, report
from tests.cloud.router.factories import trained_router
from tests.factories import ADMIN, upload_model


def test_overview_shows_fleet_breakdowns_and_releases(client: TestClient, tmp_path: Path) -> None:
    """The overview counts devices per platform and app version and lists live releases."""
    devices = fleet(client, 3)
    fleet(client, 2, region="eu")
    publish(client, tmp_path)
    deployment_id = deploy(client)
    report(client, devices[0], "active")
    html = logged_in(client).get("/dashboard").text
    assert '<span class="value" data-field="fleet-total">5</span>' in html
    assert "<td>android</td><td>5</td>" in html and "<td>5.2.0</td><td>5</td>" in html
    assert f"#{deployment_id} hello v1" in html
    assert f'data-field="dep-{deployment_id}-0-active">1<' in html


def test_overview_json_has_the_live_figures(client: TestClient, tmp_path: Path) -> None:
    """The overview's refresh endpoint returns the fleet counts and release progress."""
    devices = fleet(client, 2)
    publish(client, tmp_path)
    deployment_id = deploy(client)
    report(client, devices[1], "failed")
    body = logged_in(client).get("/dashboard/api/overview").json()
    assert body["fleet"]["total"] == 2
    (release,) = body["deployments"]
    assert release["id"] == deployment_id and release["stages"][0]["failed"] == 1
    assert release["health"] == "failing"


def test_devices_page_lists_and_filters(client: TestClient) -> None:
    """Filtering by region shows only matching devices and their count."""
    fleet(client, 2, region="eu", tags=["beta"])
    fleet(client, 3, region="us")
    logged_in(client)
    html = client.get("/dashboard/devices", params={"region": "eu"}).text
    assert '<span id="device-total">2</span>' in html and html.count("<td>eu</td>") == 2
    assert "<td>us</td>" not in html
    tagged = client.get("/dashboard/devices", params={"tag": "beta"}).text
    assert '<span id="device-total">2</span>' in tagged


def test_devices_page_searches_by_id_prefix(client: TestClient) -> None:
    """A device id's beginning finds that device."""
    devices = fleet(client, 3)
    wanted = devices[1]["device_id"]
    html = logged_in(client).get("/dashboard/devices", params={"q": wanted[:13]}).text
    assert wanted in html


def test_devices_page_paginates(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past a page of devices, a next link leads to the rest and nothing repeats."""
    devices = fleet(client, 3)
    monkeypatch.setattr(queries, "DEVICE_PAGE", 2)
    first = logged_in(client).get("/dashboard/devices").text
    assert 'rel="next"' in first
    link = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = client.get(link).text
    assert devices[2]["device_id"] in second and devices[0]["device_id"] not in second


def test_device_page_shows_attributes_tasks_and_reports(client: TestClient, tmp_path: Path) -> None:
    """A device's page shows its attributes, desired task and latest report."""
    device = fleet(client, 1, model="Pixel 8", tags=["staff"])[0]
    publish(client, tmp_path)
    deployment_id = deploy(client)
    report(client, device, "active")
    html = logged_in(client).get(f"/dashboard/devices/{device['device_id']}").text
    assert "Pixel 8" in html and '<span class="tag">staff</span>' in html
    assert f'<td>hello</td><td>1</td><td><a href="/dashboard/deployments/{deployment_id}">' in html
    assert '<span class="badge">active</span>' in html


def test_unknown_device_is_a_404_page(client: TestClient) -> None:
    """A device id nobody registered gets a 404 page."""
    response = logged_in(client).get("/dashboard/devices/not-a-device")
    assert response.status_code == 404 and "No device" in response.text


def test_models_page_shows_versions_signatures_and_metrics(client: TestClient) -> None:
    """Registered model versions appear with target, signature and their AUC."""
    response = upload_model(client, name="ctr", target="device", metrics='{"auc": 0.7812}')
    assert response.status_code == 201, response.text
    html = logged_in(client).get("/dashboard/models").text
    assert "<td>ctr</td><td>1</td><td>device</td>" in html
    assert "auc 0.7812" in html and "in <code>" in html


def test_deployment_page_shows_progress_and_controls(client: TestClient, tmp_path: Path) -> None:
    """A deployment's page shows per-stage counts and its action forms."""
    devices = fleet(client, 2)
    publish(client, tmp_path)
    deployment_id = deploy(client, stages=[50, 100])
    report(client, devices[0], "downloaded")
    html = logged_in(client).get(f"/dashboard/deployments/{deployment_id}").text
    assert "Progress per stage" in html and 'data-chart="' in html
    assert f'action="/dashboard/deployments/{deployment_id}/rollback"' in html
    assert f'action="/dashboard/deployments/{deployment_id}/advance"' in html


def test_router_page_shows_budget_share_histogram_and_key_tokens(client: TestClient) -> None:
    """With a trained router that routed requests, the page shows the budget, the realised
    cloud share, PRS bins and the word that drives requests to the cloud."""
    trained_router(client, "qa")
    for text in ("river integral season", "river capital season"):
        routed = client.post("/v1/route", headers=ADMIN, json={"router": "qa", "text": text})
        assert routed.status_code == 200, routed.text
    html = logged_in(client).get("/dashboard/router").text
    assert "35.0 %" in html and "PRS histogram" in html
    assert '<span class="value" id="realised-share">50.0 %</span>' in html
    tokens = html.split("Top key tokens per metric")[1]
    assert "<h3>correct</h3>" in tokens
    pushing_to_cloud = re.findall(r"<code>([^<]+)</code></td><td>-", tokens)
    assert pushing_to_cloud and all("integral" in t for t in pushing_to_cloud)


def test_router_page_with_no_router_says_so(client: TestClient) -> None:
    """Without routers the page says how to create one."""
    assert "No router is configured" in logged_in(client).get("/dashboard/router").text


def test_learning_page_shows_coda_pools(client: TestClient) -> None:
    """CoDA pools appear with their embedding length and sample counts."""
    created = client.post("/v1/coda/pools", headers=ADMIN, json={"name": "movies", "dim": 8})
    assert created.status_code == 201, created.text
    html = logged_in(client).get("/dashboard/learning").text
    assert "<td>movies" in html and "<td>8</td>" in html


HOSTILE = [
    ("/dashboard/devices", {"q": "' OR 1=1 --"}),
    ("/dashboard/devices", {"platform": "<script>alert(1)</script>"}),
    ("/dashboard/devices", {"region": "x" * 5000}),
    ("/dashboard/devices", {"cursor": "not-a-cursor"}),
    ("/dashboard/devices", {"cursor": "eyJhZnRlciI6IC0xfQ"}),
    ("/dashboard/devices", {"tag": "\x00"}),
    ("/dashboard/models", {"cursor": "%%%"}),
    ("/dashboard/deployments", {"state": "exploded"}),
    ("/dashboard/deployments", {"task": "../../etc"}),
    ("/dashboard/deployments", {"cursor": "e30"}),
    ("/dashboard/deployments/0", {}),
    ("/dashboard/deployments/99999999999", {}),
    ("/dashboard/deployments/abc", {}),
    ("/dashboard/deployments/424242", {}),
    ("/dashboard/router", {"name": "<b>nope</b>"}),
    ("/dashboard/router", {"hours": "-5"}),
    ("/dashboard/api/deployments", {"ids": "1,2;DROP"}),
    ("/dashboard/api/deployments", {"ids": "99999999999"}),
    ("/dashboard/devices/" + "a" * 300, {}),
]


@pytest.mark.parametrize(("path", "params"), HOSTILE)
def test_hostile_parameters_never_make_a_500(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    """Odd or hostile query and path values get a 4xx or a clean page, never a 500,
    and nothing they carry is echoed unescaped."""
    response = logged_in(client).get(path, params=params)
    assert response.status_code < 500, response.text
    assert "<script>alert(1)</script>" not in response.text
    assert "<b>nope</b>" not in response.text


def test_static_files_are_served(client: TestClient) -> None:
    """The stylesheet and the script are served from the package."""
    assert client.get("/dashboard/static/dashboard.css").status_code == 200
    assert "drawChart" in client.get("/dashboard/static/dashboard.js").text
