"""The routing endpoints of :class:`device_sdk.testing.FakeCloud`.

An app that calls ``Device.predict(task, inputs, routing="auto")`` needs, from the cloud,
a router to download, somewhere to report decisions, and the cloud model to call. The
fake serves a router exported by a real cloud (``GET /v1/routers/{name}/export`` and the
ONNX file it names), records the decisions devices report, and answers
``POST /v1/models/{name}/infer`` with a Python function of the test's choosing::

    fake.routing.serve_router(export, onnx_bytes)   # saved from a real cloud
    fake.routing.serve_model("qa-large", lambda inputs: {"y": inputs["x"] * 2})
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pydantic import ValidationError

from device_sdk.router_wire import DecisionReceipt, DecisionReport, RouterExport

_EXPORT = re.compile(r"/v1/routers/([^/]+)/export")
_DECISIONS = re.compile(r"/v1/routers/([^/]+)/decisions")
_BLOB = re.compile(r"/v1/blobs/([0-9a-f]{64})")
_INFER = re.compile(r"/v1/models/([^/]+)/infer")
_NPZ = "application/x-npz"


class FakeRouting:
    """Routers, reported decisions and cloud models of a fake cloud. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routers: dict[str, tuple[RouterExport, bytes]] = {}
        self._models: dict[str, Callable[[dict[str, Any]], Mapping[str, Any]]] = {}
        self.decisions: list[tuple[str, DecisionReport]] = []
        """Every decision report received, as ``(router name, report)``, oldest first."""
        self.inferred: list[tuple[str, dict[str, Any]]] = []
        """Every cloud-model call, as ``(model name, inputs)``, oldest first."""

    def serve_router(self, export: RouterExport, onnx: bytes) -> None:
        """Serve router ``export.name`` with the ONNX file ``onnx`` (checked against the
        export's digest, as a device will)."""
        if hashlib.sha256(onnx).hexdigest() != export.onnx_sha256 or len(onnx) != export.onnx_size:
            raise ValueError(
                f"The ONNX bytes do not match router {export.name!r}'s export (digest or size); "
                "save both from the same version."
            )
        with self._lock:
            self._routers[export.name] = (
                export.model_copy(update={"download_url": f"/v1/blobs/{export.onnx_sha256}"}),
                onnx,
            )

    def serve_model(self, name: str, answer: Callable[[dict[str, Any]], Mapping[str, Any]]) -> None:
        """Answer ``POST /v1/models/{name}/infer`` with ``answer(inputs)`` (name -> array)."""
        with self._lock:
            self._models[name] = answer

    def reported(self, router: str) -> int:
        """How many decisions devices reported for ``router``."""
        with self._lock:
            return sum(len(r.decisions) for name, r in self.decisions if name == router)

    def handle(self, method: str, path: str, body: bytes) -> httpx.Response | None:
        """The answer to a routing request; None when the path is not a routing one."""
        if method == "GET" and (match := _EXPORT.fullmatch(path)):
            with self._lock:
                served = self._routers.get(match.group(1))
            if served is None:
                return _error(404, "router_not_found", f"No router named {match.group(1)!r}.")
            return httpx.Response(200, content=served[0].model_dump_json().encode())
        if method == "GET" and (match := _BLOB.fullmatch(path)):
            with self._lock:
                found = [o for e, o in self._routers.values() if e.onnx_sha256 == match.group(1)]
            return httpx.Response(200, content=found[0]) if found else None
        if method == "POST" and (match := _DECISIONS.fullmatch(path)):
            return self._decisions(match.group(1), body)
        if method == "POST" and (match := _INFER.fullmatch(path)):
            return self._infer(match.group(1), body)
        return None

    def _decisions(self, name: str, body: bytes) -> httpx.Response:
        with self._lock:
            served = self._routers.get(name)
        if served is None:
            return _error(404, "router_not_found", f"No router named {name!r}.")
        try:
            report = DecisionReport.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, "validation_error", f"Invalid decision report: {exc}.")
        with self._lock:
            self.decisions.append((name, report))
        receipt = DecisionReceipt(accepted=len(report.decisions), threshold=served[0].threshold)
        return httpx.Response(200, content=receipt.model_dump_json().encode())

    def _infer(self, name: str, body: bytes) -> httpx.Response:
        import numpy as np

        with self._lock:
            answer = self._models.get(name)
        if answer is None:
            return _error(404, "model_not_found", f"No model named {name!r}.")
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                inputs = {key: archive[key] for key in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            return _error(400, "invalid_tensor_body", f"The body is not an .npz archive: {exc}.")
        with self._lock:
            self.inferred.append((name, inputs))
        buffer = io.BytesIO()
        outputs: dict[str, Any] = {k: np.asarray(v) for k, v in answer(inputs).items()}
        np.savez(buffer, **outputs)
        return httpx.Response(200, content=buffer.getvalue(), headers={"Content-Type": _NPZ})


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})
