"""Test data: ONNX models, settings, registered devices."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from cloud.core.settings import Settings
from examples.tiny_model import tiny_model

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def onnx_linear(n_in: int = 4, n_out: int = 2, seed: int = 0) -> bytes:
    """A valid ONNX model y = x @ W + b with a symbolic batch dimension."""
    return tiny_model(n_in, n_out, seed).SerializeToString()


def onnx_failing_checker() -> bytes:
    """Parses as ONNX but fails the checker: a node uses an input nothing produces."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def upload_model(
    client: TestClient,
    *,
    name: str = "ranker",
    target: str = "cloud",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> Any:
    return client.post(
        "/v1/models",
        headers=ADMIN if headers is None else headers,
        data={"name": name, "target": target, **fields},
        files={
            "file": (
                "model.onnx",
                data if data is not None else onnx_linear(),
                "application/octet-stream",
            )
        },
    )


def enrollment_key(client: TestClient, **body: Any) -> str:
    response = client.post("/v1/enrollment-keys", headers=ADMIN, json=body or None)
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def register_device(
    client: TestClient, key: str | None = None, **attributes: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/devices",
        json={"enrollment_key": key or enrollment_key(client), "attributes": attributes},
    )
    assert response.status_code == 201, response.text
    device: dict[str, Any] = response.json()
    return device


def device_headers(device: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {device['token']}"}


def changed(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes``, validated like the original."""
    return Settings(**(settings.model_dump() | changes))
