"""A session's runs on onnxruntime's own thread (run_async) answer as its direct runs do."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from cloud.serving.sessions import SessionOptions, dummy_feeds, load_session
from tests.cloud.serving import onnx_models


def started(session: Any, feeds: dict[str, np.ndarray[Any, Any]]) -> tuple[Any, Any]:
    finished = threading.Event()
    box: list[Any] = []

    def done(outputs: Any, error: Any) -> None:
        box.extend((outputs, error))
        finished.set()

    session.start(feeds, done)
    assert finished.wait(10)
    return box[0], box[1]


def test_a_started_run_gives_the_direct_runs_outputs() -> None:
    session = load_session(onnx_models.recommender(), SessionOptions(run_async=True))
    feeds = {k: v for k, v in onnx_models.recommender_inputs(5).items()}
    outputs, error = started(session, feeds)
    assert error is None
    direct = session.run(feeds)
    assert outputs.keys() == direct.keys()
    for name, array in direct.items():
        np.testing.assert_array_equal(outputs[name], array)


def test_a_failed_started_run_reports_onnxruntimes_message() -> None:
    session = load_session(onnx_models.hidden_lookup(), SessionOptions(run_async=True))
    feeds = dummy_feeds(session.signature, 2)
    name = next(n for n, v in feeds.items() if v.dtype.kind == "i")
    feeds[name] = np.full_like(feeds[name], 10**6)  # beyond the table the graph looks up
    outputs, error = started(session, feeds)
    assert outputs is None and isinstance(error, RuntimeError)
    assert "out of" in str(error) or "bounds" in str(error)


def test_a_failing_hand_back_still_reaches_the_caller() -> None:
    """onnxruntime swallows what a callback raises: an error while handing back the
    outputs is handed over instead, so the run's requests never wait forever."""
    session = load_session(onnx_models.recommender(), SessionOptions(run_async=True))
    calls: list[Any] = []
    finished = threading.Event()

    def done(outputs: Any, error: Any) -> None:
        calls.append((outputs, error))
        if len(calls) == 1 and error is None:
            raise MemoryError("while handing back")
        finished.set()

    session.start(dict(onnx_models.recommender_inputs(2)), done)
    assert finished.wait(10)
    assert calls[-1][0] is None and isinstance(calls[-1][1], MemoryError)
