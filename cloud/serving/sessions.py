"""onnxruntime sessions for serving: built from a model's bytes, configured, warmed.

Providers come from ``TANDEM_SERVING_PROVIDERS`` (CPU by default). A provider this
onnxruntime build lacks (CUDA on a CPU-only wheel, say) is skipped with a warning, and the
CPU provider is always kept last, so a misconfigured GPU replica still serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from cloud.core.errors import ModelLoadFailed
from cloud.serving.signature import Signature, read_signature

log = logging.getLogger("tandem.serving")

CPU = "CPUExecutionProvider"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    providers: tuple[str, ...] = (CPU,)
    intra_op_threads: int = 1
    warm_rows: tuple[int, ...] = (1,)
    # Runs go to onnxruntime's own thread (LoadedSession.start) rather than to a worker.
    run_async: bool = False


def choose_providers(requested: tuple[str, ...]) -> list[str]:
    """``requested`` in order, less those this build lacks, with the CPU provider last."""
    available = set(ort.get_available_providers())
    chosen = []
    for provider in requested:
        if provider in available:
            chosen.append(provider)
        else:
            log.warning(
                "execution provider not available; skipped",
                extra={"provider": provider, "available": sorted(available)},
            )
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


@dataclass(frozen=True, slots=True)
class LoadedSession:
    """A ready session: its signature, and the providers it actually runs on."""

    session: Any
    signature: Signature
    providers: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        results = self.session.run(None, feeds)
        return dict(zip(self.signature.outputs, results, strict=True))

    def start(self, feeds: dict[str, np.ndarray[Any, Any]], done: Done) -> None:
        """Start a run on onnxruntime's own thread; ``done(outputs, None)`` or
        ``done(None, error)`` is called from that thread when it ends. The error carries
        onnxruntime's message only (run_async reports no status code): :meth:`run` the same
        feeds to get its typed exception."""
        outputs = self.signature.outputs

        def finished(results: list[Any], _: object, error: str) -> None:
            # onnxruntime swallows what a callback raises: anything going wrong here must
            # still reach ``done``, or the run's requests would wait forever.
            try:
                if error:
                    done(None, RuntimeError(error))
                else:
                    done(dict(zip(outputs, results, strict=True)), None)
            except BaseException as exc:  # (handed over, not swallowed)
                try:
                    done(None, exc)
                except BaseException:  # (the last resort, on a thread of onnxruntime's)
                    log.exception("a model run's result could not be handed back")

        self.session.run_async(None, feeds, finished, None)


Done = Callable[[dict[str, np.ndarray[Any, Any]] | None, BaseException | None], None]


def dummy_feeds(signature: Signature, rows: int) -> dict[str, np.ndarray[Any, Any]]:
    """Zeros of the right dtype and shape (free dimensions: ``rows`` first, 1 elsewhere).

    Zero is a valid id for every index input, so the dummy batch runs on any model.
    """
    feeds = {}
    for spec in signature.inputs:
        shape = [
            (rows if axis == 0 else 1) if dim is None else dim
            for axis, dim in enumerate(spec.shape)
        ]
        feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feeds


def load_session(data: bytes, options: SessionOptions) -> LoadedSession:
    """Build a session for the ONNX model ``data`` and warm it with dummy batches.

    Blocking (seconds for a large model): call it from a worker thread.
    """
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    if options.run_async and options.intra_op_threads > 0:
        # run_async runs on the intra-op pool, which must have a thread beside the caller's
        # slot; not spinning, that thread sleeps between runs instead of taking a core.
        session_options.intra_op_num_threads = options.intra_op_threads + 1
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            data, sess_options=session_options, providers=choose_providers(options.providers)
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for unsupported graphs
        raise ModelLoadFailed(
            f"onnxruntime cannot load this model ({exc.__class__.__name__}: {str(exc)[:200]}); "
            "export it with operators this onnxruntime supports and register a new version."
        ) from exc
    loaded = LoadedSession(session, read_signature(session, data), tuple(session.get_providers()))
    rows_to_warm = options.warm_rows if loaded.signature.batchable else (1,)
    try:
        for rows in rows_to_warm:
            loaded.run(dummy_feeds(loaded.signature, rows))
    except Exception as exc:
        # Zeros with free dimensions of 1 are a guess; a model that needs other shapes
        # still serves real requests, only its first one pays for the allocations.
        log.warning(
            "model could not be warmed with a batch of zeros",
            extra={"error": f"{exc.__class__.__name__}: {exc}"[:300]},
        )
    return loaded
