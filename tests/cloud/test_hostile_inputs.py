"""Hostile input across the API: every refusal is a 4xx in the error envelope, never a 500,
and a refused write leaves nothing behind.

Each test pins a problem found by fuzzing the API (schemathesis and hand-made requests), so
it cannot come back; both database backends run every case.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from onnx import TensorProto, helper

from cloud.core.blobstore import BlobStore
from cloud.core.settings import Settings
from tests.factories import (
    ADMIN,
    device_headers,
    enrollment_key,
    onnx_linear,
    register_device,
    upload_model,
)

# One past the largest signed 64-bit integer: too big for SQLite and for PostgreSQL.
PAST_INT64 = 2**63


def _error_code(response: Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def _device_count(client: TestClient) -> int:
    return len(client.get("/v1/devices", headers=ADMIN, params={"limit": 500}).json()["items"])


def _onnx_identity(*, elem_type: int = TensorProto.FLOAT, input_name: str = "x") -> bytes:
    """A checker-valid ONNX model y = x whose input has ``elem_type`` and ``input_name``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["y"])],
        "identity",
        [helper.make_tensor_value_info(input_name, elem_type, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _multipart(boundary: str, parts: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body of (field name, value, filename or None) parts."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


# --- JSON bodies ------------------------------------------------------------------------


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    """A body of 100,000 nested arrays gets 400 in the error envelope and creates nothing."""
    response = client.post(
        "/v1/devices", content=b"[" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _error_code(response)
    assert _device_count(client) == 0


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"enrollment_key": ' + b"9" * 5000 + b"}", b'{"enrollment_key": "\xff"}'],
    ids=["deep-nesting", "5000-digit-number", "invalid-utf8"],
)
def test_every_unparseable_json_body_gets_invalid_json(client: TestClient, body: bytes) -> None:
    """Every JSON body that cannot be parsed gets the same 400 `invalid_json` code."""
    response = client.post(
        "/v1/devices", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _error_code(response) == "invalid_json"


def test_lone_surrogate_in_json_string_is_422(client: TestClient) -> None:
    r"""A JSON string with an unpaired surrogate (\ud800) gets 422 and creates nothing."""
    key = enrollment_key(client)
    body = f'{{"enrollment_key": "{key}", "attributes": {{"platform": "\\ud800"}}}}'
    response = client.post(
        "/v1/devices", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert _error_code(response) == "validation_error"
    assert _device_count(client) == 0


def test_json_sent_as_text_plain_is_415(client: TestClient) -> None:
    """A JSON body with Content-Type text/plain gets 415 `unsupported_media_type`."""
    body = json.dumps({"enrollment_key": enrollment_key(client)}).encode()
    response = client.post("/v1/devices", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert _error_code(response) == "unsupported_media_type"


@pytest.mark.parametrize(
    ("content_type", "named"),
    [(None, "no Content-Type"), ("application/x-www-form-urlencoded", "x-www-form-urlencoded")],
    ids=["no-content-type", "form-urlencoded"],
)
def test_json_sent_without_a_json_content_type_is_415(
    client: TestClient, content_type: str | None, named: str
) -> None:
    """A JSON body sent with no Content-Type or a form one gets 415 naming what was sent."""
    body = json.dumps({"enrollment_key": enrollment_key(client)}).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/v1/devices", content=body, headers=headers)
    assert response.status_code == 415
    assert named in response.json()["error"]["message"]
    assert _device_count(client) == 0


def test_chunked_json_over_the_limit_is_413_and_creates_nothing(client: TestClient) -> None:
    """A registration streamed without Content-Length past the limit gets 413, creating nothing."""
    key = enrollment_key(client)

    def chunks() -> Iterator[bytes]:
        yield b'{"enrollment_key": "%s", "attributes": {"model": "' % key.encode()
        for _ in range(40):
            yield b" " * (128 * 1024)
        yield b'"}}'

    response = client.post(
        "/v1/devices", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert _error_code(response) == "payload_too_large"
    assert _device_count(client) == 0


# --- Integers past what the database stores ---------------------------------------------


def test_max_devices_past_the_column_range_is_422(client: TestClient) -> None:
    """An enrollment key with max_devices of 2**63 is refused with 422 and not created."""
    response = client.post("/v1/enrollment-keys", headers=ADMIN, json={"max_devices": PAST_INT64})
    assert response.status_code == 422
    assert client.get("/v1/enrollment-keys", headers=ADMIN).json()["items"] == []


def test_version_past_the_column_range_is_4xx(client: TestClient) -> None:
    """Asking for version 2**63 of a model gets a 404 or 422, not a 500."""
    upload_model(client)
    response = client.get(f"/v1/models/ranker/versions/{PAST_INT64}", headers=ADMIN)
    assert response.status_code in (404, 422)
    assert _error_code(response)


def test_enrollment_key_id_past_the_column_range_is_4xx(client: TestClient) -> None:
    """Revoking enrollment key 2**63 gets a 404 or 422, not a 500."""
    response = client.delete(f"/v1/enrollment-keys/{PAST_INT64}", headers=ADMIN)
    assert response.status_code in (404, 422)
    assert _error_code(response)


def test_cursor_with_position_past_the_column_range_is_400(client: TestClient) -> None:
    """A forged cursor pointing past 2**63 gets 400 `invalid_cursor`, not a 500."""
    cursor = base64.urlsafe_b64encode(json.dumps({"after": PAST_INT64}).encode()).decode()
    response = client.get("/v1/devices", headers=ADMIN, params={"cursor": cursor.rstrip("=")})
    assert response.status_code == 400
    assert _error_code(response) == "invalid_cursor"


def test_metric_too_large_for_a_float_is_422(client: TestClient) -> None:
    """A metric of 10**400 is refused with 422 `invalid_input` and no version is created."""
    response = upload_model(client, metrics='{"auc": 1' + "0" * 400 + "}")
    assert response.status_code == 422
    assert _error_code(response) == "invalid_input"
    assert client.get("/v1/models", headers=ADMIN).json()["items"] == []


def test_boolean_max_devices_is_422(client: TestClient) -> None:
    """max_devices: true is refused with 422 rather than read as 1."""
    response = client.post("/v1/enrollment-keys", headers=ADMIN, json={"max_devices": True})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "body", [{"max_devices": "5"}, {"expires_in_s": True}], ids=["string-count", "boolean-expiry"]
)
def test_enrollment_key_numbers_must_be_json_integers(
    client: TestClient, body: dict[str, Any]
) -> None:
    """max_devices "5" and expires_in_s true are refused with 422 rather than coerced."""
    response = client.post("/v1/enrollment-keys", headers=ADMIN, json=body)
    assert response.status_code == 422
    assert client.get("/v1/enrollment-keys", headers=ADMIN).json()["items"] == []


# --- NUL bytes ---------------------------------------------------------------------------


def test_nul_in_registration_attributes_is_422(client: TestClient) -> None:
    """A NUL byte in a device attribute is refused with 422 and no device is created."""
    key = enrollment_key(client)
    response = client.post(
        "/v1/devices", json={"enrollment_key": key, "attributes": {"platform": "and\x00roid"}}
    )
    assert response.status_code == 422
    assert _device_count(client) == 0


def test_nul_in_attribute_update_is_422(client: TestClient) -> None:
    """A device updating its model to a string with a NUL byte gets 422 and keeps its attributes."""
    device = register_device(client, model="Pixel 8")
    response = client.put(
        "/v1/devices/me/attributes", headers=device_headers(device), json={"model": "Pixel\x00"}
    )
    assert response.status_code == 422
    me = client.get("/v1/devices/me", headers=device_headers(device)).json()
    assert me["attributes"]["model"] == "Pixel 8"


def test_nul_in_model_description_is_422(client: TestClient) -> None:
    """A model description with a NUL byte is refused with 422 and no version is created."""
    response = upload_model(client, description="first\x00cut")
    assert response.status_code == 422
    assert client.get("/v1/models", headers=ADMIN).json()["items"] == []


def test_model_description_keeps_tabs_and_line_breaks(client: TestClient) -> None:
    """A description may span lines: tab, LF and CR are stored as sent."""
    response = upload_model(client, description="first cut\r\n\tsecond line")
    assert response.status_code == 201
    assert response.json()["description"] == "first cut\r\n\tsecond line"


@pytest.mark.parametrize("path", ["/v1/models/a%00b", "/v1/devices/a%00b"])
def test_nul_in_path_segment_is_a_4xx(client: TestClient, path: str) -> None:
    """A NUL byte in a name or id in the path gets a 404 or 422, not a 500."""
    response = client.get(path, headers=ADMIN)
    assert response.status_code in (404, 422)
    assert _error_code(response)


@pytest.mark.parametrize("params", [{"platform": "a\x00"}, {"tag": "a\x00"}])
def test_nul_in_list_filter_is_not_a_500(client: TestClient, params: dict[str, str]) -> None:
    """A NUL byte in a device-list filter gets an empty page or a 422, not a 500."""
    response = client.get("/v1/devices", headers=ADMIN, params=params)
    assert response.status_code in (200, 422)


# --- ONNX files that pass the checker ----------------------------------------------------


def test_unknown_tensor_element_type_is_422(client: TestClient) -> None:
    """A model whose input has element type 9999 is refused with 422 `invalid_onnx_model`."""
    response = upload_model(client, data=_onnx_identity(elem_type=9999))
    assert response.status_code == 422
    assert _error_code(response) == "invalid_onnx_model"


def test_non_utf8_tensor_name_is_422(client: TestClient) -> None:
    """A model whose input name is not valid UTF-8 is refused with 422 `invalid_onnx_model`."""
    data = _onnx_identity(input_name="QQQQ").replace(b"QQQQ", b"\xff\xfe\xfd\xfc")
    response = upload_model(client, data=data)
    assert response.status_code == 422
    assert _error_code(response) == "invalid_onnx_model"


# --- Refused writes leave nothing --------------------------------------------------------


def test_refused_upload_leaves_no_blob_file(client: TestClient, settings: Settings) -> None:
    """An upload refused with 409 (the name keeps its target) leaves no file in the blob store."""
    upload_model(client, target="cloud")
    data = onnx_linear(seed=9)
    response = upload_model(client, target="device", data=data)
    assert response.status_code == 409
    digest = hashlib.sha256(data).hexdigest()
    assert not BlobStore(settings.blob_dir).exists(digest)


def test_upload_under_another_target_gets_model_target_mismatch(client: TestClient) -> None:
    """A device upload under a cloud model's name gets 409 `model_target_mismatch`."""
    upload_model(client, target="cloud")
    response = upload_model(client, target="device", data=onnx_linear(seed=9))
    assert response.status_code == 409
    assert _error_code(response) == "model_target_mismatch"


# --- Multipart ---------------------------------------------------------------------------


def test_duplicate_file_parts_are_422(client: TestClient) -> None:
    """An upload carrying two `file` parts is refused with 422 and registers nothing."""
    body = _multipart(
        "b0undary",
        [
            ("name", b"ranker", None),
            ("target", b"cloud", None),
            ("file", onnx_linear(seed=1), "a.onnx"),
            ("file", onnx_linear(seed=2), "b.onnx"),
        ],
    )
    response = client.post(
        "/v1/models",
        headers={**ADMIN, "Content-Type": "multipart/form-data; boundary=b0undary"},
        content=body,
    )
    assert response.status_code == 422
    assert client.get("/v1/models", headers=ADMIN).json()["items"] == []


def test_duplicate_name_parts_are_422_naming_the_field(client: TestClient) -> None:
    """An upload carrying two `name` parts is refused with 422 that names `name`."""
    body = _multipart(
        "b0undary",
        [
            ("name", b"ranker", None),
            ("name", b"other", None),
            ("target", b"cloud", None),
            ("file", onnx_linear(), "a.onnx"),
        ],
    )
    response = client.post(
        "/v1/models",
        headers={**ADMIN, "Content-Type": "multipart/form-data; boundary=b0undary"},
        content=body,
    )
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["name"]
    assert client.get("/v1/models", headers=ADMIN).json()["items"] == []


def test_multipart_without_boundary_is_400(client: TestClient) -> None:
    """A multipart upload whose Content-Type has no boundary gets 400 in the error envelope."""
    response = client.post(
        "/v1/models",
        headers={**ADMIN, "Content-Type": "multipart/form-data"},
        content=b"--x\r\nContent-Disposition: form-data; name=name\r\n\r\nm\r\n--x--\r\n",
    )
    assert response.status_code == 400
    assert _error_code(response) == "bad_request"


# --- Blob downloads ----------------------------------------------------------------------


def _stored_blob(client: TestClient) -> tuple[str, bytes]:
    data = onnx_linear(n_in=16, n_out=16)
    digest: str = upload_model(client, data=data).json()["sha256"]
    return digest, data


def test_if_none_match_star_gets_304(client: TestClient) -> None:
    """`If-None-Match: *` on an existing blob gets 304 and no body."""
    digest, _ = _stored_blob(client)
    response = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "If-None-Match": "*"})
    assert response.status_code == 304
    assert response.content == b""


def test_head_on_a_blob_gives_its_size(client: TestClient) -> None:
    """HEAD on a blob answers 200 with its Content-Length and no body."""
    digest, data = _stored_blob(client)
    response = client.head(f"/v1/blobs/{digest}", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert response.content == b""


def test_if_none_match_list_with_the_weak_tag_gets_304(client: TestClient) -> None:
    """`If-None-Match` listing another tag and the blob's own as weak gets 304."""
    digest, _ = _stored_blob(client)
    header = f'"other", W/"{digest}"'
    response = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "If-None-Match": header})
    assert response.status_code == 304


def test_head_on_healthz_is_200_without_a_body(client: TestClient) -> None:
    """HEAD /healthz answers 200 with no body, for probes that send HEAD."""
    response = client.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-1,4-5",
        "bytes=0-1," * 1000 + "0-1",
        "bytes=5-3",
        "bytes=0x1-2",
        "items=0-1",
        "bytes=",
        "bytes=-",
        "bytes=0-1;x",
    ],
    ids=[
        "two-ranges",
        "thousand-ranges",
        "backwards",
        "hex",
        "other-unit",
        "empty",
        "lone-dash",
        "trailing-junk",
    ],
)
def test_unhonoured_range_gets_the_whole_blob(client: TestClient, range_header: str) -> None:
    """A Range header the server will not honour is ignored: 200 with every byte."""
    digest, data = _stored_blob(client)
    response = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "Range": range_header})
    assert response.status_code == 200
    assert response.content == data


def test_range_positions_with_thousands_of_digits_are_clamped(client: TestClient) -> None:
    """A last position or suffix with 10,000 digits is clamped to the blob's end: 206, not 500."""
    digest, data = _stored_blob(client)
    huge = "9" * 10_000
    tail = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "Range": f"bytes=3-{huge}"})
    suffix = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "Range": f"bytes=-{huge}"})
    assert (tail.status_code, tail.content) == (206, data[3:])
    assert (suffix.status_code, suffix.content) == (206, data)


# --- Concurrency -------------------------------------------------------------------------


def _in_parallel(count: int, call: Any) -> list[Response]:
    results: list[Response | None] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def test_concurrent_uploads_of_one_name_get_contiguous_versions(client: TestClient) -> None:
    """Eight simultaneous uploads of one name leave versions 1..N, each once, N = the 201s."""
    models = [onnx_linear(seed=100 + i) for i in range(8)]
    responses = _in_parallel(8, lambda i: upload_model(client, name="raced", data=models[i]))
    created = sorted(r.json()["version"] for r in responses if r.status_code == 201)
    assert all(r.status_code in (201, 409) for r in responses)
    assert created == list(range(1, len(created) + 1))
    stored = client.get("/v1/models/raced", headers=ADMIN).json()["versions"]
    assert [v["version"] for v in stored] == created


def test_concurrent_enrollments_respect_max_devices(client: TestClient) -> None:
    """Eight devices racing for a key with max_devices=1 leave exactly one registered."""
    key = enrollment_key(client, max_devices=1)
    responses = _in_parallel(8, lambda _: client.post("/v1/devices", json={"enrollment_key": key}))
    assert sorted(r.status_code for r in responses) == [201] + [403] * 7
    assert _device_count(client) == 1


# --- The published contract --------------------------------------------------------------


def test_openapi_documents_the_error_envelope(client: TestClient) -> None:
    """The 422 response in the OpenAPI document is the {"error": {...}} envelope the API sends."""
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/devices"]["post"]["responses"]["422"]
    ref = post["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "error" in spec["components"]["schemas"][ref]["properties"]


def test_oversized_status_version_is_422(client: TestClient) -> None:
    """A status report with a version beyond 32 bits gets 422, not a 500."""
    device = register_device(client)
    body = {"reports": [{"task": "t", "version": 2**63, "state": "active"}]}
    response = client.post("/v1/devices/me/status", headers=device_headers(device), json=body)
    assert response.status_code == 422


def test_nul_in_task_name_is_a_4xx(client: TestClient) -> None:
    """A NUL byte in a task name in the path gets a 4xx, not a 500."""
    response = client.get("/v1/tasks/a%00b", headers=ADMIN)
    assert response.status_code in (404, 422)
