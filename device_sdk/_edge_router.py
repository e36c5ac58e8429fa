"""Routing on the device: the cloud's exported router, run with onnxruntime.

The text is featurized by :mod:`device_sdk.text_features` (the very code the cloud
trained with), scored by the exported ONNX graph, and decided by a local
:class:`~device_sdk.budget.BudgetController` that starts from the threshold the cloud
published. Every decision is kept until :meth:`EdgeRouter.take_report` hands it on, so
the cloud counts device decisions against the budget.

numpy and onnxruntime are imported on first use, so ``import device_sdk`` stays light.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from device_sdk._errors import InvalidBundle, InvalidModelInput
from device_sdk.budget import BudgetController
from device_sdk.router_wire import (
    MAX_REPORTED_DECISIONS,
    DecisionReport,
    ReportedDecision,
    RouterExport,
)
from device_sdk.text_features import featurize, pad_batch

# Decisions kept for the cloud while it cannot be reached; the oldest go first past this.
MAX_PENDING_DECISIONS = 10 * MAX_REPORTED_DECISIONS


@dataclass(frozen=True)
class LocalDecision:
    """Where one request goes (``target``: "edge" or "cloud"), its PRS, each metric's D_i,
    and whether the budget's window cap kept it on the edge (``capped``)."""

    target: str
    prs: float
    d: Mapping[str, float]
    capped: bool


class EdgeRouter:
    """An exported router version, ready to route requests on this device. Thread-safe.

    ``onnx_bytes`` must hash to ``export.onnx_sha256`` (else :class:`InvalidBundle`).
    """

    def __init__(
        self, export: RouterExport, onnx_bytes: bytes, *, intra_op_num_threads: int = 1
    ) -> None:
        if hashlib.sha256(onnx_bytes).hexdigest() != export.onnx_sha256:
            raise InvalidBundle(
                f"The ONNX file of router {export.name!r} version {export.version} does not "
                "match the digest the cloud announced; it was truncated or altered. Fetch "
                "the router again."
            )
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        options.inter_op_num_threads = 1
        self.export = export
        self._session = onnxruntime.InferenceSession(
            onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._metrics = [m.name for m in export.metrics]
        self.controller = BudgetController(
            budget=export.budget, alpha=export.threshold, window=export.window
        )
        self._pending: list[ReportedDecision] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.export.name

    @property
    def version(self) -> int:
        return self.export.version

    def score(
        self, texts: Sequence[str | None], features: Sequence[Sequence[float] | None] | None = None
    ) -> tuple[Any, Any]:
        """``(d, prs)`` for a batch: arrays of shape (n, metrics) and (n,), float32."""
        import numpy as np

        spec = self.export.feature_spec
        hashed = [featurize(text or "", spec) for text in texts]
        indices, values = pad_batch(hashed)
        feed: dict[str, Any] = {"indices": indices, "values": values}
        n_features = self.export.n_features
        if n_features:
            rows = features or [None] * len(texts)
            dense = np.zeros((len(texts), n_features), dtype=np.float32)
            for r, vector in enumerate(rows):
                if vector is None:
                    continue
                if len(vector) != n_features:
                    raise InvalidModelInput(
                        f"Router {self.name!r} takes {n_features} plain features per "
                        f"request; request {r} has {len(vector)}."
                    )
                dense[r] = np.asarray(vector, dtype=np.float32)
            feed["features"] = dense
        d, prs = self._session.run(["d", "prs"], feed)
        return d, prs

    def decide(
        self, text: str | None = None, features: Sequence[float] | None = None
    ) -> LocalDecision:
        """Score one request and decide edge or cloud under the budget; the decision is
        kept for :meth:`take_report`."""
        d, prs = self.score([text], None if features is None else [features])
        value = float(prs[0])
        decision = self.controller.decide(value)
        with self._lock:
            if len(self._pending) >= MAX_PENDING_DECISIONS:
                del self._pending[:MAX_REPORTED_DECISIONS]
            self._pending.append(
                ReportedDecision(prs=min(max(value, 0.0), 1.0), cloud=decision.cloud)
            )
        return LocalDecision(
            target="cloud" if decision.cloud else "edge",
            prs=value,
            d={name: float(d[0, i]) for i, name in enumerate(self._metrics)},
            capped=decision.capped,
        )

    def pending(self) -> int:
        """Decisions not yet handed on for reporting."""
        with self._lock:
            return len(self._pending)

    def take_report(self) -> DecisionReport | None:
        """The oldest pending decisions (at most one report's worth), removed from the
        pending list; None when there are none. Give them back with :meth:`restore` if the
        report could not be delivered."""
        with self._lock:
            if not self._pending:
                return None
            taken = self._pending[:MAX_REPORTED_DECISIONS]
            del self._pending[:MAX_REPORTED_DECISIONS]
        return DecisionReport(version=self.version, decisions=taken)

    def restore(self, report: DecisionReport) -> None:
        """Put an undelivered report's decisions back in front of the pending ones."""
        with self._lock:
            self._pending[:0] = report.decisions
            del self._pending[:-MAX_PENDING_DECISIONS]

    def follow(self, threshold: float) -> None:
        """Adopt the threshold the cloud publishes (it sees every device's traffic)."""
        self.controller.reset_alpha(threshold)
