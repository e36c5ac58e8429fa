"""Health, readiness, metrics, request ids and the error envelope."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.core.db import Database, make_engine
from cloud.core.settings import Settings
from tests.factories import ADMIN, changed


def test_healthz_is_ok(client: TestClient) -> None:
    """GET /healthz answers 200 without touching dependencies."""
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_ready_with_database_and_broker(client: TestClient) -> None:
    """GET /readyz answers 200 and names each check when all dependencies answer."""
    body = client.get("/readyz").json()
    assert body == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_is_503_when_redis_is_unreachable(settings: Settings) -> None:
    """With the broker pointed at a dead Redis, /readyz answers 503 naming the broker."""
    broken = changed(settings, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["broker"] != "ok"


def test_readyz_is_503_when_database_is_unreachable(settings: Settings) -> None:
    """If the database goes away after start, /readyz answers 503 naming the database."""
    with TestClient(create_app(settings)) as client:
        context = client.app.state.context  # type: ignore[attr-defined]
        original = context.db
        original.dispose()
        context.db = Database(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/gone"))
        response = client.get("/readyz")
    # Background workers that captured the original database may have reconnected.
    original.dispose()
    assert response.status_code == 503
    assert response.json()["checks"]["database"] != "ok"
    assert response.json()["checks"]["broker"] == "ok"


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    """/metrics reports requests under the route template, not the raw path."""
    client.get("/v1/models/abc", headers=ADMIN)
    text = client.get("/metrics").text
    assert (
        'tandem_http_requests_total{method="GET",route="/v1/models/{name}",status="404"} 1.0'
        in text
    )
    assert "tandem_http_request_duration_seconds_bucket" in text


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    """A safe X-Request-ID is echoed back; an unsafe one is replaced by a fresh id."""
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    replaced = client.get("/healthz", headers={"X-Request-ID": "evil\nheader"}).headers[
        "x-request-id"
    ]
    assert replaced != "evil\nheader" and len(replaced) == 32


def test_unknown_route_and_method_use_the_error_envelope(client: TestClient) -> None:
    """404 and 405 from routing carry the same {"error": {"code", "message"}} body."""
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.patch("/healthz")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_openapi_documents_every_route(client: TestClient) -> None:
    """Every /v1 route has a description in the OpenAPI document."""
    spec = client.get("/openapi.json").json()
    undocumented = [
        f"{method.upper()} {path}"
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if not operation.get("description")
    ]
    assert undocumented == []
