"""The admin dashboard in a real browser (Debian's chromium driven by Playwright) against a
live `tandem serve`: log in, see the fleet, create a deployment from the page, watch its
progress change as devices report, roll it back, log out. Screenshots of every page go to
``test-output/e2e/dashboard/<page>.png``."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cloud.federation.factories import ctr_model, toward_truth, validation_npz
from tests.cloud.router.factories import SMALL_SPEC, workload
from tests.e2e.live_server import LiveServer
from tests.factories import ADMIN, ADMIN_TOKEN, onnx_linear
from tests.services import in_ci
from tests.task_factories import packed

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "e2e" / "dashboard"
ENV = {
    "TANDEM_ADMIN_TOKEN": ADMIN_TOKEN,
    "TANDEM_DEPLOY_SWEEP_S": "0.2",
    "TANDEM_FEDERATION_K": "3",
    "TANDEM_FEDERATION_UPDATES_BURST": "100",
}
WAIT_MS = 20_000


def _browser_or_skip() -> Any:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing: apt-get install chromium (as .ci/run does)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "the playwright package is missing: pip install -e '.[dev]'"
    if problem is not None:
        if in_ci():
            pytest.fail(problem)
        pytest.skip(problem)
    return sync_playwright


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "cloud", env=ENV) as live:
        yield live


def seed(server: LiveServer, tmp_path: Path) -> list[dict[str, Any]]:
    """Three devices, a task, a model, a trained router that routed, a CoDA pool: all
    through the real REST API."""
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as api:
        key = api.post("/v1/enrollment-keys", json={}).json()["key"]
        devices = []
        for i, platform in enumerate(("android", "android", "ios")):
            attributes = {"platform": platform, "app_version": f"5.{i}.0", "region": "eu"}
            response = api.post(
                "/v1/devices", json={"enrollment_key": key, "attributes": attributes}
            )
            assert response.status_code == 201, response.text
            devices.append(response.json())
        bundle = packed(tmp_path, name="hello", version=1)
        published = api.post("/v1/tasks", files={"bundle": ("hello.tar.gz", bundle)})
        assert published.status_code == 201, published.text
        model = api.post(
            "/v1/models",
            data={"name": "ctr", "target": "device", "metrics": '{"auc": 0.781}'},
            files={"file": ("model.onnx", onnx_linear(), "application/octet-stream")},
        )
        assert model.status_code == 201, model.text
        router = {"name": "qa", "metrics": [{"name": "correct", "weight": 1.0}], "budget": 0.35}
        assert (
            api.post("/v1/routers", json={**router, "feature_spec": SMALL_SPEC}).status_code == 201
        )
        observed = api.post("/v1/routers/qa/observations", json={"items": workload(90)})
        assert observed.status_code == 200, observed.text
        assert api.post("/v1/routers/qa/train", json={"epochs": 150}).status_code == 201
        texts = [item["text"] for item in workload(20, seed=1)]
        routed = api.post("/v1/route", json={"router": "qa", "items": [{"text": t} for t in texts]})
        assert routed.status_code == 200, routed.text
        assert api.post("/v1/coda/pools", json={"name": "movies", "dim": 4}).status_code == 201
        rng = random.Random(0)  # noqa: S311  # test data
        samples = [
            {
                "features": {"x": float(i)},
                "label": 1.0,
                "embedding": [rng.random() for _ in range(4)],
            }
            for i in range(10)
        ]
        assert (
            api.post("/v1/coda/pools/movies/samples", json={"samples": samples}).status_code == 201
        )
        federate(api, devices[0])
    return devices


def federate(api: httpx.Client, device: dict[str, Any]) -> None:
    """A federated model whose first round gets k=3 updates and is settled."""
    model = api.post(
        "/v1/models",
        data={"name": "recs", "target": "device"},
        files={"file": ("recs.onnx", ctr_model(), "application/octet-stream")},
    )
    assert model.status_code == 201, model.text
    validation = api.put(
        "/v1/federation/models/recs/validation",
        content=validation_npz(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert validation.status_code == 200, validation.text
    for seed in range(3):
        sent = api.post(
            "/v1/federation/updates",
            json=toward_truth(seed),
            headers={"Authorization": f"Bearer {device['token']}"},
        )
        assert sent.status_code == 201, sent.text
    deadline = time.monotonic() + 60
    while api.get("/v1/federation/rounds/1").json()["status"] in ("open", "aggregating"):
        assert time.monotonic() < deadline, "the federation round never settled"
        time.sleep(0.1)


def report_active(server: LiveServer, device: dict[str, Any]) -> None:
    response = httpx.post(
        f"{server.url}/v1/devices/me/status",
        headers={"Authorization": f"Bearer {device['token']}"},
        json={"reports": [{"task": "hello", "version": 1, "state": "active"}]},
    )
    assert response.status_code in (200, 202), response.text


def test_operator_logs_in_deploys_watches_rolls_back_and_logs_out(
    server: LiveServer, tmp_path: Path
) -> None:
    """The whole operator flow works in chromium, keyboard and labels included."""
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    devices = seed(server, tmp_path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(WAIT_MS)
        try:
            # Log in, by label and keyboard alone.
            page.goto(f"{server.url}/dashboard")
            expect(page).to_have_url(f"{server.url}/dashboard/login")
            page.get_by_label("Admin key").fill("tdm_admin_wrong")
            page.keyboard.press("Enter")
            expect(page.get_by_role("alert")).to_contain_text("not valid")
            page.screenshot(path=str(SHOTS / "login.png"), full_page=True)
            page.get_by_label("Admin key").fill(ADMIN_TOKEN)
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            page.keyboard.press("Tab")
            expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

            # The fleet.
            expect(page.locator('[data-field="fleet-total"]')).to_have_text("3")
            expect(page.get_by_role("cell", name="android", exact=True)).to_be_visible()
            page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
            page.get_by_role("link", name="Devices", exact=True).click()
            expect(page.locator("#device-total")).to_have_text("3")
            page.get_by_label("Platform").fill("ios")
            page.get_by_role("button", name="Search").click()
            expect(page.locator("#device-total")).to_have_text("1")
            page.screenshot(path=str(SHOTS / "devices.png"), full_page=True)
            page.get_by_role("link", name=devices[2]["device_id"]).click()
            expect(page.get_by_text("5.2.0")).to_be_visible()
            page.screenshot(path=str(SHOTS / "device.png"), full_page=True)
            page.get_by_role("link", name="Models").click()
            expect(page.get_by_text("auc 0.781")).to_be_visible()
            page.screenshot(path=str(SHOTS / "models.png"), full_page=True)

            # Create a deployment from the page.
            page.get_by_role("link", name="Deployments").click()
            page.get_by_label("Task version").select_option("hello:1")
            page.get_by_label("Stages (cumulative %, comma separated)").fill("100")
            page.screenshot(path=str(SHOTS / "deployments.png"), full_page=True)
            page.get_by_role("button", name="Create deployment").click()
            expect(page.get_by_role("heading", name="Deployment #1: hello v1")).to_be_visible()
            active = page.locator('[data-field="dep-1-0-active"]')
            expect(active).to_have_text("0")
            expect(page.locator('[data-field="dep-1-0-targeted"]')).to_have_text("3")

            # Progress changes without a reload as simulated devices activate.
            for device in devices[:2]:
                report_active(server, device)
            expect(active).to_have_text("2")
            expect(page.locator('[data-field="dep-1-health"]')).to_have_text("ok")
            page.screenshot(path=str(SHOTS / "deployment.png"), full_page=True)
            page.get_by_role("link", name="Overview").click()
            expect(page.get_by_role("link", name="#1 hello v1")).to_be_visible()
            expect(page.locator('[data-field="dep-1-0-active"]')).to_have_text("2")
            page.screenshot(path=str(SHOTS / "overview-release.png"), full_page=True)
            page.get_by_role("link", name="#1 hello v1").click()

            # Roll back, through the confirmation dialog.
            dialogs: list[str] = []

            def accept(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.accept()

            page.once("dialog", accept)
            page.get_by_role("button", name="Roll back").click()
            expect(page.locator("#deployment-state")).to_have_text("rolled_back")
            assert dialogs and "Roll this deployment back" in dialogs[0]
            page.screenshot(path=str(SHOTS / "deployment-rolled-back.png"), full_page=True)

            # Router and learning pages show what the cloud holds.
            page.get_by_role("link", name="Router").click()
            expect(page.locator("#realised-share")).not_to_have_text("0.0 %")
            expect(page.get_by_role("heading", name="correct")).to_be_visible()
            page.screenshot(path=str(SHOTS / "router.png"), full_page=True)
            page.get_by_role("link", name="Learning").click()
            expect(page.get_by_role("cell", name="movies")).to_be_visible()
            expect(page.get_by_role("cell", name="3 / 3")).to_be_visible()
            page.screenshot(path=str(SHOTS / "learning.png"), full_page=True)

            # Log out: pages send the browser back to the login form.
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_label("Admin key")).to_be_visible()
            page.goto(f"{server.url}/dashboard/deployments")
            expect(page).to_have_url(f"{server.url}/dashboard/login")
        finally:
            browser.close()
