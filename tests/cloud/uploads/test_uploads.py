"""Device uploads: who may call, each (device, key) stored once, strict bodies, admin listing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.core.settings import Settings
from device_sdk.wire import MAX_UPLOAD_BODY_BYTES, MAX_UPLOAD_ITEMS, MAX_UPLOAD_PAYLOAD_BYTES
from tests.factories import ADMIN, changed, device_headers, register_device

UPLOAD = "/v1/devices/me/uploads/events"
LIST = "/v1/uploads/events"


def item(payload: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    return {"key": key or str(uuid.uuid4()), "payload": payload or {"n": 1}}


def post_raw(client: TestClient, device: dict[str, Any], payload_text: str) -> Any:
    """Upload one item whose payload is ``payload_text`` verbatim (JSON the client can't make)."""
    body = '{"items": [{"key": "' + str(uuid.uuid4()) + '", "payload": ' + payload_text + "}]}"
    headers = device_headers(device) | {"Content-Type": "application/json"}
    return client.post(UPLOAD, headers=headers, content=body)


def stored(client: TestClient, **params: str) -> list[dict[str, Any]]:
    """Every stored events item, following the cursor to the last page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {"limit": 2, **params}
        if cursor:
            query["cursor"] = cursor
        response = client.get(LIST, headers=ADMIN, params=query)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items


def test_device_upload_is_stored_and_counted(client: TestClient) -> None:
    """A new batch answers 200 with every item accepted; the admin list shows the items."""
    device = register_device(client)
    batch = [item({"n": n}) for n in range(3)]
    response = client.post(UPLOAD, headers=device_headers(device), json={"items": batch})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}
    listed = stored(client)
    assert [(i["key"], i["payload"]) for i in listed] == [(b["key"], b["payload"]) for b in batch]
    assert {i["device_id"] for i in listed} == {device["device_id"]}
    assert {i["channel"] for i in listed} == {"events"}


def test_retried_batch_is_stored_once(client: TestClient) -> None:
    """The same keys sent again are counted as duplicates and not stored a second time."""
    device = register_device(client)
    batch = [item() for _ in range(3)]
    client.post(UPLOAD, headers=device_headers(device), json={"items": batch})
    retried = client.post(UPLOAD, headers=device_headers(device), json={"items": [*batch, item()]})
    assert retried.json() == {"accepted": 1, "duplicates": 3}
    assert len(stored(client)) == 4


def test_key_repeated_within_one_batch_is_stored_once(client: TestClient) -> None:
    """Two items with one key in the same request: the first is stored, the second counted."""
    device = register_device(client)
    key = str(uuid.uuid4())
    response = client.post(
        UPLOAD,
        headers=device_headers(device),
        json={"items": [item({"n": 1}, key), item({"n": 2}, key)]},
    )
    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert [i["payload"] for i in stored(client)] == [{"n": 1}]


def test_keys_are_per_device(client: TestClient) -> None:
    """Another device's items with the same keys are its own: one device cannot block another."""
    first, second = register_device(client), register_device(client)
    batch = [item() for _ in range(2)]
    for device in (first, second):
        response = client.post(UPLOAD, headers=device_headers(device), json={"items": batch})
        assert response.json() == {"accepted": 2, "duplicates": 0}
    assert len(stored(client, device_id=second["device_id"])) == 2


def test_admin_token_is_refused_on_the_device_endpoint(client: TestClient) -> None:
    """An admin key may not upload as a device: 403."""
    response = client.post(UPLOAD, headers=ADMIN, json={"items": [item()]})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_device_token_is_refused_on_the_admin_list(client: TestClient) -> None:
    """A device may not list uploads: 403."""
    device = register_device(client)
    assert client.get(LIST, headers=device_headers(device)).status_code == 403


@pytest.mark.parametrize(("method", "path"), [("POST", UPLOAD), ("GET", LIST)])
def test_no_credentials_is_401(client: TestClient, method: str, path: str) -> None:
    """Both endpoints answer 401 without a token."""
    response = client.request(method, path, json={"items": [item()]})
    assert response.status_code == 401


def test_removed_device_cannot_upload(client: TestClient) -> None:
    """A removed device's token gets 401, which tells the SDK to stop uploading."""
    device = register_device(client)
    client.delete(f"/v1/devices/{device['device_id']}", headers=ADMIN)
    response = client.post(UPLOAD, headers=device_headers(device), json={"items": [item()]})
    assert response.status_code == 401


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_unknown_channel_is_422(client: TestClient, method: str) -> None:
    """A channel outside the fixed set is refused with 422, naming the channel field."""
    device = register_device(client)
    headers = device_headers(device) if method == "POST" else ADMIN
    path = "/v1/devices/me/uploads/nope" if method == "POST" else "/v1/uploads/nope"
    response = client.request(method, path, headers=headers, json={"items": [item()]})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "path.channel"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no items"),
        pytest.param({"items": []}, id="empty items"),
        pytest.param({"items": [item()], "extra": 1}, id="unknown field"),
        pytest.param({"items": [{"key": str(uuid.uuid4())}]}, id="no payload"),
        pytest.param({"items": [{"payload": {}}]}, id="no key"),
        pytest.param({"items": [item(key="not-a-uuid")]}, id="key not a uuid"),
        pytest.param({"items": [item(key=str(uuid.uuid4()).upper())]}, id="key not lowercase"),
        pytest.param({"items": [{"key": str(uuid.uuid4()), "payload": [1]}]}, id="payload list"),
        pytest.param({"items": [{"key": str(uuid.uuid4()), "payload": "x"}]}, id="payload str"),
        pytest.param({"items": [{**item(), "extra": 1}]}, id="unknown item field"),
        pytest.param({"items": [item() for _ in range(MAX_UPLOAD_ITEMS + 1)]}, id="501 items"),
    ],
)
def test_malformed_body_is_422(client: TestClient, body: dict[str, Any]) -> None:
    """A body that breaks the schema is refused whole with 422 and nothing is stored."""
    device = register_device(client)
    response = client.post(UPLOAD, headers=device_headers(device), json=body)
    assert response.status_code == 422, response.text
    assert stored(client) == []


@pytest.mark.parametrize(
    "payload_text",
    [
        pytest.param('{"x": NaN}', id="NaN"),
        pytest.param('{"x": -Infinity}', id="Infinity"),
        pytest.param('{"x": "\\ud800"}', id="lone surrogate"),
    ],
)
def test_payload_that_is_not_portable_json_is_422(client: TestClient, payload_text: str) -> None:
    """NaN, Infinity and lone surrogates are no valid UTF-8 JSON: refused, naming the item."""
    device = register_device(client)
    response = post_raw(client, device, payload_text)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "items.0.payload"


def test_oversized_payload_is_422_naming_the_item(client: TestClient) -> None:
    """A payload over the size limit is refused with 422 whose details name that item."""
    device = register_device(client)
    big = item({"blob": "x" * MAX_UPLOAD_PAYLOAD_BYTES})
    response = client.post(UPLOAD, headers=device_headers(device), json={"items": [item(), big]})
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["items.1.payload"]


def test_payload_at_the_size_limit_is_stored(client: TestClient) -> None:
    """A payload of exactly the limit, measured as compact JSON, is accepted."""
    device = register_device(client)
    filler = "x" * (MAX_UPLOAD_PAYLOAD_BYTES - len('{"blob":""}'))
    response = client.post(
        UPLOAD, headers=device_headers(device), json={"items": [item({"blob": filler})]}
    )
    assert response.status_code == 200, response.text


def test_body_over_the_upload_limit_is_413(settings: Settings) -> None:
    """A body over the uploads' own limit is refused with 413, even under a larger
    server-wide limit."""
    roomy = changed(settings, max_upload_bytes=4 * MAX_UPLOAD_BODY_BYTES)
    with TestClient(create_app(roomy), raise_server_exceptions=False) as client:
        device = register_device(client)
        per_item = MAX_UPLOAD_PAYLOAD_BYTES - 100
        count = MAX_UPLOAD_BODY_BYTES // per_item + 1
        batch = [item({"blob": "x" * per_item}) for _ in range(count)]
        response = client.post(UPLOAD, headers=device_headers(device), json={"items": batch})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert stored(client) == []


def test_nul_and_deep_nesting_are_stored_as_sent(client: TestClient) -> None:
    """A NUL in text and nested arrays and objects survive the round trip on both backends."""
    device = register_device(client)
    response = post_raw(
        client, device, '{"nul": "a\\u0000b", "deep": [[[[{"k": [1.5, null, true, -3]}]]]]}'
    )
    assert response.status_code == 200, response.text
    assert stored(client)[0]["payload"] == {
        "nul": "a\x00b",
        "deep": [[[[{"k": [1.5, None, True, -3]}]]]],
    }


def test_list_filters_by_device(client: TestClient) -> None:
    """device_id narrows the list to one device's items; an unknown id lists nothing."""
    first, second = register_device(client), register_device(client)
    client.post(UPLOAD, headers=device_headers(first), json={"items": [item()]})
    client.post(UPLOAD, headers=device_headers(second), json={"items": [item(), item()]})
    assert len(stored(client, device_id=second["device_id"])) == 2
    assert stored(client, device_id=str(uuid.uuid4())) == []


def test_removing_a_device_removes_its_uploads(client: TestClient) -> None:
    """A removed device's items go with it (the foreign key cascades)."""
    device = register_device(client)
    client.post(UPLOAD, headers=device_headers(device), json={"items": [item()]})
    client.delete(f"/v1/devices/{device['device_id']}", headers=ADMIN)
    assert stored(client) == []


def test_foreign_cursor_is_400(client: TestClient) -> None:
    """A cursor the server did not issue is refused with 400 invalid_cursor."""
    response = client.get(LIST, headers=ADMIN, params={"cursor": "bm9wZQ"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"
