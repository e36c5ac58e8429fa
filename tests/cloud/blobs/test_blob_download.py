"""Blob downloads over HTTP: Range, conditional requests, hostile digests."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import ADMIN, onnx_linear, upload_model


def _stored(client: TestClient) -> tuple[str, bytes]:
    data = onnx_linear(n_in=64, n_out=64)
    return upload_model(client, data=data).json()["sha256"], data


def test_range_request_returns_206_with_the_slice(client: TestClient) -> None:
    """`Range: bytes=10-99` answers 206 with exactly those bytes and a Content-Range."""
    digest, data = _stored(client)
    response = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "Range": "bytes=10-99"})
    assert response.status_code == 206
    assert response.content == data[10:100]
    assert response.headers["content-range"] == f"bytes 10-99/{len(data)}"


def test_resuming_from_an_offset_completes_the_file(client: TestClient) -> None:
    """An open-ended range from where a download broke off returns the rest of the file."""
    digest, data = _stored(client)
    cut = len(data) // 3
    rest = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "Range": f"bytes={cut}-"}).content
    assert data[:cut] + rest == data


def test_unsatisfiable_range_is_416(client: TestClient) -> None:
    """A range starting past the end gets 416 with `Content-Range: bytes */size`."""
    digest, data = _stored(client)
    response = client.get(
        f"/v1/blobs/{digest}", headers={**ADMIN, "Range": f"bytes={len(data) + 5}-"}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


def test_if_none_match_gets_304(client: TestClient) -> None:
    """Asking again with the blob's ETag gets 304 and no body."""
    digest, _ = _stored(client)
    response = client.get(f"/v1/blobs/{digest}", headers={**ADMIN, "If-None-Match": f'"{digest}"'})
    assert response.status_code == 304
    assert response.content == b""


def test_stale_if_range_gets_the_whole_file(client: TestClient) -> None:
    """A Range with an If-Range that does not match is answered with the full 200."""
    digest, data = _stored(client)
    response = client.get(
        f"/v1/blobs/{digest}", headers={**ADMIN, "Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert response.status_code == 200
    assert response.content == data


def test_hostile_digests_are_400_or_404(client: TestClient) -> None:
    """Non-digests get 400 `invalid_digest`; well-formed unknown digests get 404."""
    for bad in ("abc", "A" * 64, "g" * 64, "..%2F..%2Fetc%2Fpasswd", "0" * 63 + "%00"):
        response = client.get(f"/v1/blobs/{bad}", headers=ADMIN)
        assert response.status_code in (400, 404), bad
        assert response.status_code != 500
    assert client.get("/v1/blobs/" + "a" * 64, headers=ADMIN).status_code == 404
    assert (
        client.get("/v1/blobs/" + "A" * 64, headers=ADMIN).json()["error"]["code"]
        == "invalid_digest"
    )
