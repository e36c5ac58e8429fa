"""Hostile inference bodies: each gets a clear 4xx naming the problem, never a 500."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.cloud.serving import onnx_models
from tests.cloud.serving.helpers import NPZ, error_code, infer_json, infer_npz, npz_bytes
from tests.factories import ADMIN, upload_model


@pytest.fixture
def client_with_ranker(client: TestClient) -> TestClient:
    assert upload_model(client, name="ranker", data=onnx_models.recommender()).status_code == 201
    return client


def valid(rows: int = 1) -> dict[str, Any]:
    return {
        "item": [3] * rows,
        "history": [[1, 2, 3, 4, 5]] * rows,
        "dense": [[0.5, -1.0, 2.0]] * rows,
    }


def with_input(name: str, value: Any) -> dict[str, Any]:
    return {"inputs": {**valid(), name: value}}


def deep(depth: int) -> Any:
    value: Any = 1.0
    for _ in range(depth):
        value = [value]
    return value


# (case, body, the input the error must name)
JSON_CASES: list[tuple[str, Any, str | None]] = [
    ("missing input", {"inputs": {"item": [1], "history": [[1, 2, 3, 4, 5]]}}, "dense"),
    ("unknown input", {"inputs": {**valid(), "bogus": [1]}}, "bogus"),
    ("strings for ids", with_input("item", ["a"]), "item"),
    ("fractional ids", with_input("item", [1.5]), "item"),
    ("booleans for floats", with_input("dense", [[True, False, True]]), "dense"),
    ("nulls", with_input("dense", [[None, 1.0, 2.0]]), "dense"),
    ("NaN", with_input("dense", [[float("nan"), 1.0, 2.0]]), "dense"),
    ("infinity", with_input("dense", [[float("inf"), 1.0, 2.0]]), "dense"),
    ("float32 overflow", with_input("dense", [[1e300, 1.0, 2.0]]), "dense"),
    ("id past the table", with_input("item", [50]), "item"),
    ("negative id", with_input("history", [[1, 2, 3, 4, -1]]), "history"),
    ("integer past 64 bits", with_input("item", [2**70]), "item"),
    ("integer past int64", with_input("item", [2**63]), "item"),
    ("ragged rows", with_input("history", [[1, 2, 3, 4, 5], [1, 2]]), "history"),
    ("wrong rank", with_input("dense", [0.5, 1.0, 2.0]), "dense"),
    ("wrong width", with_input("dense", [[0.5, 1.0]]), "dense"),
    ("rows disagree", {"inputs": {**valid(2), "item": [1]}}, "history"),
    ("no rows", {"inputs": {"item": [], "history": [], "dense": []}}, "history"),
    ("too many rows", {"inputs": valid(1025)}, "item"),
    ("deep nesting", with_input("dense", deep(70)), "dense"),
    ("an object for an input", with_input("dense", {"a": 1}), "dense"),
    ("a string for an input", with_input("dense", "1,2,3"), "dense"),
]


@pytest.mark.parametrize(("case", "body", "culprit"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_hostile_json_inputs_are_422_naming_the_input(
    client_with_ranker: TestClient, case: str, body: Any, culprit: str | None
) -> None:
    """Each malformed input gets 422 invalid_model_input whose details name that input."""
    # NaN and Infinity are sent as Python's json writes them, which its parser accepts.
    response = raw(client_with_ranker, json.dumps(body).encode(), "application/json")
    assert response.status_code == 422, (case, response.text)
    error = response.json()["error"]
    assert error["code"] == "invalid_model_input"
    assert error["details"]["input"] == culprit, error


@pytest.mark.parametrize(
    "body",
    [[1, 2], "inputs", 7, {"inputs": [1]}, {"inputs": {}, "extra": 1}, {}],
    ids=["list", "string", "number", "inputs-list", "extra-field", "empty"],
)
def test_body_of_wrong_shape_is_422(client_with_ranker: TestClient, body: Any) -> None:
    """A body that is not {"inputs": {...}} gets 422 saying what the body must be."""
    response = infer_json(client_with_ranker, "ranker", body)
    assert response.status_code == 422 and error_code(response) == "invalid_model_input"


def raw(client: TestClient, content: bytes, content_type: str) -> Any:
    return client.post(
        "/v1/models/ranker/infer",
        content=content,
        headers={**ADMIN, "Content-Type": content_type},
    )


def test_invalid_and_absurdly_nested_json_is_400(client_with_ranker: TestClient) -> None:
    """Unparseable JSON, and nesting past the parser's recursion limit, get 400 invalid_json."""
    for content in (b"{not json", b"[" * 200_000 + b"]" * 200_000, b"\xff\xfe"):
        response = raw(client_with_ranker, content, "application/json")
        assert response.status_code == 400 and error_code(response) == "invalid_json"


def test_wrong_content_type_is_415(client_with_ranker: TestClient) -> None:
    """A body sent as text/plain or a form gets 415 naming the accepted types."""
    for kind in ("text/plain", "multipart/form-data; boundary=x", "application/x-npy"):
        response = raw(client_with_ranker, b"{}", kind)
        assert response.status_code == 415 and error_code(response) == "unsupported_media_type"
        assert NPZ in response.json()["error"]["message"]


def test_oversize_body_is_413(client_with_ranker: TestClient) -> None:
    """A body over TANDEM_SERVING_MAX_BODY_BYTES gets 413 before it is parsed."""
    response = raw(client_with_ranker, b" " * (8 * 1024 * 1024 + 1), "application/json")
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


def npz_with(**overrides: Any) -> bytes:
    arrays: dict[str, Any] = {
        "item": np.array([1], dtype=np.int64),
        "history": np.array([[1, 2, 3, 4, 5]], dtype=np.int64),
        "dense": np.array([[0.5, 1.0, 2.0]], dtype=np.float32),
    }
    arrays.update(overrides)
    return npz_bytes(**arrays)


def test_npz_casts_compatible_dtypes(client_with_ranker: TestClient) -> None:
    """int32 ids, float64 and big-endian floats are cast to what the model takes."""
    body = npz_with(
        item=np.array([1], dtype=np.int32),
        dense=np.array([[0.5, 1.0, 2.0]], dtype=">f8"),
    )
    response = infer_npz(client_with_ranker, "ranker", body)
    assert response.status_code == 200, response.text


def pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, item=np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def truncated_member_npz() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        full = io.BytesIO()
        np.save(full, np.zeros((1000,), dtype=np.float32))
        archive.writestr("dense.npy", full.getvalue()[:200])
    return buffer.getvalue()


def member_named(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, b"data")
    return buffer.getvalue()


def bomb_npz() -> bytes:
    """A compressed member whose header claims a 4 GiB array."""
    buffer = io.BytesIO()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 30,)}
    )
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dense.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 4096)
    return buffer.getvalue()


NPZ_CASES: list[tuple[str, bytes, int, str]] = [
    ("truncated archive", npz_with()[:-40], 400, "invalid_tensor_body"),
    ("not a zip", b"\x93NUMPY not an archive", 400, "invalid_tensor_body"),
    ("empty body", b"", 400, "invalid_tensor_body"),
    ("truncated array", truncated_member_npz(), 400, "invalid_tensor_body"),
    ("member not .npy", member_named("evil.pkl"), 400, "invalid_tensor_body"),
    ("member not an array", member_named("item.npy"), 400, "invalid_tensor_body"),
    ("pickled objects", pickled_npz(), 422, "invalid_model_input"),
    ("unicode array", npz_with(item=np.array(["1"])), 422, "invalid_model_input"),
    ("float ids", npz_with(item=np.array([1.0])), 422, "invalid_model_input"),
    ("NaN", npz_with(dense=np.full((1, 3), np.nan, dtype=np.float32)), 422, "invalid_model_input"),
    ("wrong rank", npz_with(item=np.array([[1]])), 422, "invalid_model_input"),
    ("claims 4 GiB", bomb_npz(), 413, "payload_too_large"),
    (
        "zero rows",
        npz_with(
            item=np.zeros(0, dtype=np.int64),
            history=np.zeros((0, 5), dtype=np.int64),
            dense=np.zeros((0, 3), dtype=np.float32),
        ),
        422,
        "invalid_model_input",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code"), NPZ_CASES, ids=[c[0] for c in NPZ_CASES]
)
def test_hostile_npz_bodies_are_refused(
    client_with_ranker: TestClient, case: str, body: bytes, status: int, code: str
) -> None:
    """Truncated, pickled, mistyped or oversized .npz bodies get their 4xx, never a 500."""
    response = infer_npz(client_with_ranker, "ranker", body)
    assert response.status_code == status, (case, response.text)
    assert error_code(response) == code
