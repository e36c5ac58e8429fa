"""Federation test data: a tiny click model (movie embedding table + user embedding ->
linear head -> sigmoid), a validation set drawn from a known truth, and updates that move
the model toward (or away from) that truth."""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import numpy as np
import onnx
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from tests.factories import ADMIN, upload_model

MOVIES = 40
DIM = 4
TABLE = "movie_emb"
HEAD = "head.w"
BIAS = "head.b"


def truth(seed: int = 7) -> np.ndarray[Any, Any]:
    """The movie embeddings the labels come from: a click when a row's sum is positive."""
    return np.random.default_rng(seed).normal(0.0, 1.0, (MOVIES, DIM)).astype(np.float32)


def true_head() -> np.ndarray[Any, Any]:
    """A head that sums the movie embedding and ignores the user's."""
    return np.concatenate([np.ones(DIM), np.zeros(DIM)]).astype(np.float32).reshape(2 * DIM, 1)


def ctr_model(
    table: np.ndarray[Any, Any] | None = None,
    head: np.ndarray[Any, Any] | None = None,
) -> bytes:
    """p_click = sigmoid(concat(movie_emb[movie], user) @ head.w + head.b); zeros by default."""
    table = np.zeros((MOVIES, DIM), np.float32) if table is None else table
    head = np.zeros((2 * DIM, 1), np.float32) if head is None else head
    graph = helper.make_graph(
        [
            helper.make_node("Gather", [TABLE, "movie"], ["item"], axis=0),
            helper.make_node("Concat", ["item", "user"], ["features"], axis=1),
            helper.make_node("MatMul", ["features", HEAD], ["logit2d"]),
            helper.make_node("Add", ["logit2d", BIAS], ["biased"]),
            helper.make_node("Reshape", ["biased", "flat"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["p_click"]),
        ],
        "ctr",
        [
            helper.make_tensor_value_info("movie", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("user", TensorProto.FLOAT, ["batch", DIM]),
        ],
        [helper.make_tensor_value_info("p_click", TensorProto.FLOAT, ["batch"])],
        [
            numpy_helper.from_array(table.astype(np.float32), TABLE),
            numpy_helper.from_array(head.astype(np.float32), HEAD),
            numpy_helper.from_array(np.zeros(1, np.float32), BIAS),
            numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def validation_npz(rows: int = 400, seed: int = 1, **overrides: Any) -> bytes:
    """A validation set for :func:`ctr_model`: random movies and users, labels from the truth."""
    rng = np.random.default_rng(seed)
    movie = rng.integers(0, MOVIES, rows).astype(np.int64)
    user = rng.normal(0.0, 1.0, (rows, DIM)).astype(np.float32)
    label = (truth()[movie].sum(axis=1) > 0).astype(np.float32)
    arrays: dict[str, Any] = {"movie": movie, "user": user, "label": label, **overrides}
    out = io.BytesIO()
    np.savez(out, **{k: v for k, v in arrays.items() if v is not None})
    return out.getvalue()


def federated_model(client: TestClient, name: str = "recs") -> None:
    """Register the all-zeros model as version 1 of ``name`` and give it a validation set."""
    response = upload_model(client, name=name, target="device", data=ctr_model())
    assert response.status_code == 201, response.text
    put = put_validation(client, name, validation_npz())
    assert put.status_code == 200, put.text


def put_validation(client: TestClient, name: str, data: bytes, **kwargs: Any) -> Any:
    return client.put(
        f"/v1/federation/models/{name}/validation",
        headers={**ADMIN, "Content-Type": "application/octet-stream"},
        content=data,
        **kwargs,
    )


def update_body(
    *,
    model: str = "recs",
    base_version: int = 1,
    samples: int = 10,
    dense: list[dict[str, Any]] | None = None,
    sparse: list[dict[str, Any]] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "key": key or str(uuid.uuid4()),
        "model": model,
        "base_version": base_version,
        "samples": samples,
        "dense": dense if dense is not None else [],
        "sparse": sparse if sparse is not None else [],
    }


def toward_truth(seed: int, *, sign: float = 1.0, rows: int = 20, **fields: Any) -> dict[str, Any]:
    """An update that moves the head and ``rows`` random movie rows toward the truth
    (``sign`` -1: the rows away from it), as a device that watched those movies would."""
    rng = np.random.default_rng(seed)
    ids = sorted(int(i) for i in rng.choice(MOVIES, rows, replace=False))
    delta_rows = (sign * truth()[ids]).tolist()
    head = true_head()
    return update_body(
        dense=[{"name": HEAD, "shape": [2 * DIM, 1], "values": head.ravel().tolist()}],
        sparse=[{"name": TABLE, "ids": ids, "rows": delta_rows}],
        **fields,
    )


def upload(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post("/v1/federation/updates", headers=headers, json=body)


def open_round(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/federation/rounds", headers=ADMIN, json={"model": "recs", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def settled_round(client: TestClient, round_id: int) -> dict[str, Any]:
    """The round once its background aggregation has ended (polls; fails if it never does)."""
    for _ in range(600):
        body: dict[str, Any] = client.get(f"/v1/federation/rounds/{round_id}", headers=ADMIN).json()
        if body["status"] not in ("open", "aggregating"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"round {round_id} did not settle: {body}")
