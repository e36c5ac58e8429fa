"""Dashboard login, session cookie, CSRF and logout."""

from __future__ import annotations

from fastapi.testclient import TestClient

from cloud.auth.service import create_admin_key, revoke_admin_key
from tests.cloud.dashboard.factories import csrf_token, fleet, log_in, logged_in, page_token
from tests.factories import ADMIN


def test_login_with_the_admin_key_opens_the_overview(client: TestClient) -> None:
    """The admin key logs in and the overview then renders."""
    response = log_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    assert "<h1>Overview</h1>" in client.get("/dashboard").text


def test_a_wrong_key_is_refused_with_the_form_again(client: TestClient) -> None:
    """A key nobody issued gets 401 and the login form, and no session cookie."""
    response = log_in(client, "tdm_admin_not-a-real-key")
    assert response.status_code == 401
    assert 'id="admin_key"' in response.text and "not valid" in response.text
    assert "tandem_session" not in client.cookies


def test_a_device_token_cannot_log_in(client: TestClient) -> None:
    """A device token is a valid credential but gets 403 at the dashboard."""
    device = fleet(client, 1)[0]
    response = log_in(client, device["token"])
    assert response.status_code == 403 and "device token" in response.text


def test_the_session_cookie_is_httponly_strict_and_not_secure_over_http(
    client: TestClient,
) -> None:
    """The cookie is HttpOnly and SameSite=Strict, and not Secure on plain http."""
    cookie = log_in(client).headers["set-cookie"]
    assert "tandem_session=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie


def test_the_session_cookie_is_secure_over_https(client: TestClient) -> None:
    """Served over https, the session cookie is marked Secure."""
    client.base_url = client.base_url.copy_with(scheme="https")
    cookie = log_in(client).headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_the_cookie_holds_no_admin_key(client: TestClient) -> None:
    """The session value is signed data, not the key that logged in."""
    log_in(client)
    value = client.cookies["tandem_session"]
    assert "test-admin-token" not in value and "." in value


def test_pages_redirect_to_login_without_a_session(client: TestClient) -> None:
    """Without a session a page redirects to the login form."""
    response = client.get("/dashboard/devices", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"


def test_json_endpoints_answer_401_without_a_session(client: TestClient) -> None:
    """The refresh endpoints refuse a caller without a session with a stable code."""
    response = client.get("/dashboard/api/overview")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "dashboard_login_required"


def test_a_bearer_admin_key_is_not_a_dashboard_session(client: TestClient) -> None:
    """The dashboard reads only its own cookie, never the API's bearer header."""
    response = client.get("/dashboard/api/overview", headers=ADMIN)
    assert response.status_code == 401


def test_a_forged_session_cookie_is_refused(client: TestClient) -> None:
    """A cookie whose signature does not match is no session."""
    logged_in(client)
    payload, _ = client.cookies["tandem_session"].split(".")
    client.cookies.clear()
    client.cookies.set("tandem_session", f"{payload}.AAAA", path="/dashboard")
    assert client.get("/dashboard/api/overview").status_code == 401


def test_revoking_the_admin_key_ends_its_sessions(client: TestClient) -> None:
    """A session of a revoked admin key no longer opens pages."""
    db = client.app.state.context.db  # type: ignore[attr-defined]
    with db.session() as session:
        key = create_admin_key(session, "ops")
    assert log_in(client, key).status_code == 303
    assert client.get("/dashboard/api/overview").status_code == 200
    with db.session() as session:
        revoke_admin_key(session, "ops")
    assert client.get("/dashboard/api/overview").status_code == 401
    assert 'id="admin_key"' in client.get("/dashboard/login").text  # the form, not a loop


def test_login_without_the_csrf_token_is_refused(client: TestClient) -> None:
    """A login post without the form's CSRF token gets 403 csrf_failed."""
    client.get("/dashboard/login")
    response = client.post("/dashboard/login", data={"admin_key": "x"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"


def test_a_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    """A logged-in POST with no token gets 403 csrf_failed and changes nothing."""
    logged_in(client)
    response = client.post("/dashboard/logout", follow_redirects=False)
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"
    assert client.get("/dashboard/api/overview").status_code == 200


def test_a_post_with_a_wrong_csrf_token_is_refused(client: TestClient) -> None:
    """A token of another session does not pass."""
    logged_in(client)
    other = page_token(client)[:-2] + "xx"
    response = client.post("/dashboard/logout", data={"csrf_token": other})
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"


def test_a_token_from_an_earlier_session_does_not_pass(client: TestClient) -> None:
    """Logging in again makes a new session whose forms need a new token."""
    logged_in(client)
    old = page_token(client)
    client.cookies.clear()
    logged_in(client)
    response = client.post("/dashboard/logout", data={"csrf_token": old})
    assert response.status_code == 403


def test_logout_clears_the_session(client: TestClient) -> None:
    """Logging out clears the cookie; pages then redirect to the login form."""
    logged_in(client)
    response = client.post(
        "/dashboard/logout", data={"csrf_token": page_token(client)}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_every_form_on_a_page_carries_the_csrf_token(client: TestClient) -> None:
    """The logout form of a page carries the session's token."""
    logged_in(client)
    html = client.get("/dashboard/deployments").text
    assert html.count('name="csrf_token"') >= 2
    assert csrf_token(html)


def test_pages_forbid_framing_and_inline_scripts(client: TestClient) -> None:
    """Pages carry a CSP with no inline scripts and deny framing."""
    logged_in(client)
    response = client.get("/dashboard")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
