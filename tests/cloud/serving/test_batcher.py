"""Dynamic micro-batching: merging, splitting, limits, back-pressure, failure isolation."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from cloud.core.errors import InvalidModelInput, ModelRunFailed, Overloaded, ServiceUnavailable
from cloud.serving.batcher import Arrays, BatchObserver, BatchPolicy, MicroBatcher

# Long enough that a batch runs only once it is full, in every test that relies on that.
NEVER_S = 60.0


class RecordingModel:
    """y = x * 2, recording the rows of every call; fails on any batch holding a negative."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate: asyncio.Event | None = None

    def __call__(self, feeds: Arrays) -> Arrays:
        x = feeds["x"]
        self.calls.append(x.shape[0])
        if (x < 0).any():
            raise RuntimeError("negative input")
        return {"y": x * 2, "n": np.full((x.shape[0], 1), x.shape[0])}


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


def batcher(
    model: Any,
    executor: ThreadPoolExecutor,
    *,
    batching: bool = True,
    max_batch: int = 8,
    max_delay_s: float = NEVER_S,
    max_queue_rows: int = 1000,
    batchable: bool = True,
    observer: BatchObserver | None = None,
    validate: Any = None,
    start: Any = None,
) -> MicroBatcher:
    return MicroBatcher(
        model,
        policy=BatchPolicy(
            batching=batching,
            max_batch=max_batch,
            max_delay_s=max_delay_s,
            max_queue_rows=max_queue_rows,
        ),
        executor=executor,
        batchable=batchable,
        observer=observer,
        validate=validate,
        start=start,
    )


def rows(*values: float) -> Arrays:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


async def test_concurrent_requests_of_different_sizes_merge_into_one_call(
    executor: ThreadPoolExecutor,
) -> None:
    """Requests of 1, 3 and 4 rows fill a batch of 8 and run as ONE call; each gets its rows."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=8)
    results = await asyncio.gather(
        b.submit(rows(1), 1), b.submit(rows(2, 3, 4), 3), b.submit(rows(5, 6, 7, 8), 4)
    )
    assert model.calls == [8]
    assert [r["y"].ravel().tolist() for r in results] == [[2], [4, 6, 8], [10, 12, 14, 16]]
    assert all(r["n"].ravel().tolist() == [8] * len(r["n"]) for r in results)
    await b.close()


async def test_a_batch_never_exceeds_max_batch(executor: ThreadPoolExecutor) -> None:
    """Six requests of 3 rows with max_batch 7 run as batches of at most 7 rows, in order."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=7, max_delay_s=0.0)
    results = await asyncio.gather(*(b.submit(rows(i, i, i), 3) for i in range(6)))
    assert all(n <= 7 for n in model.calls) and sum(model.calls) == 18
    assert [r["y"][0, 0] for r in results] == [2 * i for i in range(6)]
    await b.close()


async def test_max_delay_runs_a_partial_batch(executor: ThreadPoolExecutor) -> None:
    """A lone request does not wait for a full batch beyond the maximum delay."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=64, max_delay_s=0.001)
    result = await b.submit(rows(21), 1)
    assert result["y"].tolist() == [[42]] and model.calls == [1]
    await b.close()


async def test_a_lone_caller_does_not_wait(executor: ThreadPoolExecutor) -> None:
    """A request with no overlapping traffic runs at once, however long max_delay is."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=64, max_delay_s=NEVER_S)
    assert (await b.submit(rows(1), 1))["y"].tolist() == [[2]]
    assert (await b.submit(rows(2), 1))["y"].tolist() == [[4]]
    assert model.calls == [1, 1]
    await b.close()


async def test_after_overlapping_traffic_a_request_waits_for_company(
    executor: ThreadPoolExecutor,
) -> None:
    """Once requests have overlapped, a new one waits (up to max_delay) to fill its batch."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=2, max_delay_s=NEVER_S)
    await asyncio.gather(b.submit(rows(1), 1), b.submit(rows(2), 1))
    first = asyncio.ensure_future(b.submit(rows(3), 1))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not first.done()  # waiting for a second row
    second = await b.submit(rows(4), 1)
    assert (await first)["y"].tolist() == [[6]] and second["y"].tolist() == [[8]]
    assert model.calls == [2, 2]
    await b.close()


async def test_batching_off_runs_each_request_alone(executor: ThreadPoolExecutor) -> None:
    """With batching off, four concurrent requests make four calls of their own sizes."""
    model = RecordingModel()
    b = batcher(model, executor, batching=False)
    await asyncio.gather(*(b.submit(rows(*range(n)), n) for n in (1, 2, 3, 4)))
    assert sorted(model.calls) == [1, 2, 3, 4]
    await b.close()


async def test_unbatchable_model_runs_each_request_alone(executor: ThreadPoolExecutor) -> None:
    """A model with fixed dimensions is never fed a concatenation, even with batching on."""
    model = RecordingModel()
    b = batcher(model, executor, batchable=False, max_batch=4)
    await asyncio.gather(*(b.submit(rows(i), 1) for i in range(4)))
    assert model.calls == [1, 1, 1, 1]
    await b.close()


async def test_requests_with_different_trailing_shapes_are_not_merged(
    executor: ThreadPoolExecutor,
) -> None:
    """Inputs of width 1 and width 2 cannot be concatenated: they run in separate calls."""
    seen: list[tuple[int, ...]] = []

    def model(feeds: Arrays) -> Arrays:
        seen.append(feeds["x"].shape)
        return {"y": feeds["x"].sum(axis=1, keepdims=True)}

    b = batcher(model, executor, max_batch=2, max_delay_s=0.0)
    narrow = {"x": np.ones((1, 1), dtype=np.float32)}
    wide = {"x": np.ones((1, 2), dtype=np.float32)}
    results = await asyncio.gather(
        b.submit(narrow, 1), b.submit(wide, 1), b.submit(narrow, 1), b.submit(wide, 1)
    )
    assert [r["y"][0, 0] for r in results] == [1, 2, 1, 2]
    assert all(shape[0] <= 2 for shape in seen)
    await b.close()


async def test_full_queue_refuses_with_overloaded(executor: ThreadPoolExecutor) -> None:
    """Past max_queue_rows a request is refused at once with 429 and a Retry-After header."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=100, max_queue_rows=4)
    waiting = [asyncio.ensure_future(b.submit(rows(1, 2), 2)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as refused:
        await b.submit(rows(3), 1)
    assert refused.value.status_code == 429
    assert int(refused.value.headers["Retry-After"]) >= 1
    await b.close()
    for task in waiting:
        with pytest.raises(ServiceUnavailable):
            await task


async def test_a_failing_request_does_not_fail_its_batch_mates(
    executor: ThreadPoolExecutor,
) -> None:
    """When a merged call fails, each request is retried alone: only the culprit fails."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=3)
    good1, bad, good2 = await asyncio.gather(
        b.submit(rows(1), 1), b.submit(rows(-1), 1), b.submit(rows(2), 1), return_exceptions=True
    )
    assert isinstance(good1, dict) and good1["y"].tolist() == [[2]]
    assert isinstance(good2, dict) and good2["y"].tolist() == [[4]]
    assert isinstance(bad, ModelRunFailed) and bad.code == "model_run_failed"
    await b.close()


async def test_runtime_invalid_argument_is_reported_as_input_error(
    executor: ThreadPoolExecutor,
) -> None:
    """onnxruntime's InvalidArgument at run time is the input's fault: a 422, not a 500."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    def model(feeds: Arrays) -> Arrays:
        raise InvalidArgument("indices element out of data bounds")

    b = batcher(model, executor, max_batch=1)
    with pytest.raises(InvalidModelInput) as refused:
        await b.submit(rows(1), 1)
    assert "out of data bounds" in refused.value.message
    await b.close()


async def test_outputs_that_cannot_be_split_fail_clearly(executor: ThreadPoolExecutor) -> None:
    """A model whose output rows differ from its input rows cannot serve merged requests."""

    def model(feeds: Arrays) -> Arrays:
        return {"y": np.zeros((1, 1), dtype=np.float32)}  # one row whatever the batch

    b = batcher(model, executor, max_batch=2)
    first, second = await asyncio.gather(b.submit(rows(1), 1), b.submit(rows(2), 1))
    # Retried alone, each request's single row matches the single output row.
    assert first["y"].shape == (1, 1) and second["y"].shape == (1, 1)
    await b.close()


async def test_observer_sees_batch_rows_requests_and_queue_time(
    executor: ThreadPoolExecutor,
) -> None:
    """The observer is told each call's rows and request count, and, once a call, each
    request's wait and each answered request's latency (no shorter than its wait)."""
    batches: list[tuple[int, int]] = []
    waits: list[list[float]] = []
    latencies: list[list[float]] = []
    observer = BatchObserver(
        on_batch=lambda r, n, _s: batches.append((r, n)),
        on_queued=waits.append,
        on_answered=latencies.append,
    )
    b = batcher(RecordingModel(), executor, max_batch=4, observer=observer)
    await asyncio.gather(b.submit(rows(1, 2), 2), b.submit(rows(3), 1), b.submit(rows(4), 1))
    assert batches == [(4, 3)]
    assert len(waits) == 1 and len(waits[0]) == 3 and all(w >= 0 for w in waits[0])
    assert len(latencies) == 1 and len(latencies[0]) == 3
    assert all(lat >= w for lat, w in zip(latencies[0], waits[0], strict=True))
    await b.close()


async def test_latencies_are_reported_for_admitted_and_answered_requests_only(
    executor: ThreadPoolExecutor,
) -> None:
    """A request refused by validation, or whose caller went away while its batch ran, is
    not counted as answered: the latencies reported are those of the answered ones."""
    latencies: list[list[float]] = []
    observer = BatchObserver(on_answered=lambda values: latencies.append(list(values)))

    def validate(feeds: Arrays) -> None:
        if (feeds["x"] > 100).any():
            raise InvalidModelInput("too big", details={"input": "x"})

    model = RecordingModel()
    b = batcher(model, executor, max_batch=3, observer=observer, validate=validate)
    results = await asyncio.gather(
        b.submit(rows(1), 1), b.submit(rows(500), 1), b.submit(rows(2), 1), return_exceptions=True
    )
    assert isinstance(results[1], InvalidModelInput)
    assert [len(values) for values in latencies] == [2]

    gate = threading.Event()

    def slow(feeds: Arrays) -> Arrays:
        gate.wait(5)
        return model(feeds)

    latencies.clear()
    b2 = batcher(slow, executor, max_batch=2, observer=observer)
    kept = asyncio.ensure_future(b2.submit(rows(1), 1))
    dropped = asyncio.ensure_future(b2.submit(rows(2), 1))
    await asyncio.sleep(0.05)  # both are in the running batch
    dropped.cancel()
    gate.set()
    assert (await kept)["y"].tolist() == [[2]]
    assert [len(values) for values in latencies] == [1]
    await b.close()
    await b2.close()


async def test_a_retried_request_is_counted_once_in_queue_time(
    executor: ThreadPoolExecutor,
) -> None:
    """When a merged run fails and its requests are retried alone, each request's wait is
    still reported once (with the batch it first ran in)."""
    waits: list[int] = []
    observer = BatchObserver(on_queued=lambda values: waits.append(len(values)))
    b = batcher(RecordingModel(), executor, max_batch=2, observer=observer)
    await asyncio.gather(b.submit(rows(1), 1), b.submit(rows(-1), 1), return_exceptions=True)
    assert waits == [2]
    await b.close()


def test_outputs_split_per_request_alike_for_equal_and_unequal_sizes() -> None:
    """Equal sizes take numpy's views a request; unequal sizes (even those whose total is
    a multiple of the first) are sliced; both give each request exactly its rows."""
    outputs = {"y": np.arange(12.0).reshape(6, 2), "z": np.arange(6)}
    for sizes in ([2, 2, 2], [1, 1, 1, 1, 1, 1], [1, 3, 2], [2, 1, 3], [6]):
        parts = MicroBatcher._split(outputs, sizes)
        starts = np.cumsum([0, *sizes])[:-1]
        for part, start, size in zip(parts, starts, sizes, strict=True):
            assert part.keys() == outputs.keys()
            for name, array in outputs.items():
                assert np.array_equal(part[name], array[start : start + size])
                assert part[name].shape == (size, *array.shape[1:])


async def test_retired_batcher_finishes_queued_work_and_restarts_on_demand(
    executor: ThreadPoolExecutor,
) -> None:
    """Retiring lets queued requests finish; a later request starts a worker again."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=1)
    first = asyncio.ensure_future(b.submit(rows(1), 1))
    b.retire()
    assert (await first)["y"].tolist() == [[2]]
    assert (await b.submit(rows(2), 1))["y"].tolist() == [[4]]
    await b.close()


async def test_retiring_reports_once_its_last_worker_has_stopped(
    executor: ThreadPoolExecutor,
) -> None:
    """The pool lets an evicted version go when retire's callback comes: only once the
    queued requests are answered and the worker has stopped; at once when nothing runs."""
    b = batcher(RecordingModel(), executor, max_batch=1)
    queued = [b.enqueue(rows(1), 1), b.enqueue(rows(2), 1)]
    calls: list[int] = []
    b.retire(lambda: calls.append(sum(f.done() for f in queued)))
    assert calls == []
    assert [(await f)["y"].tolist() for f in queued] == [[[2]], [[4]]]
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == [2] and b.idle
    idle = batcher(RecordingModel(), executor)
    idle.retire(lambda: calls.append(-1))
    assert calls == [2, -1]
    await b.close()


async def test_closed_batcher_refuses_new_requests(executor: ThreadPoolExecutor) -> None:
    """After close, a request gets 503 instead of waiting forever."""
    b = batcher(RecordingModel(), executor)
    await b.close()
    with pytest.raises(ServiceUnavailable):
        await b.submit(rows(1), 1)


async def test_values_are_validated_per_batch_and_only_culprits_fail(
    executor: ThreadPoolExecutor,
) -> None:
    """The merged batch is validated once; when it fails, each request is validated alone
    and only the offending one gets the error, the others run together."""
    checked: list[int] = []

    def validate(feeds: Arrays) -> None:
        checked.append(len(feeds["x"]))
        if (feeds["x"] > 100).any():
            raise InvalidModelInput("too big", details={"input": "x"})

    model = RecordingModel()
    b = batcher(model, executor, max_batch=3, max_queue_rows=10, validate=validate)
    good1, bad, good2 = await asyncio.gather(
        b.submit(rows(1), 1), b.submit(rows(500), 1), b.submit(rows(2), 1), return_exceptions=True
    )
    assert isinstance(bad, InvalidModelInput)
    assert isinstance(good1, dict) and good1["y"].tolist() == [[2]]
    assert isinstance(good2, dict) and good2["y"].tolist() == [[4]]
    assert checked == [3, 1, 1, 1] and model.calls == [2]
    await b.close()


class ThreadStarter:
    """Starts each run on a thread of its own, as onnxruntime's run_async does, and calls
    back from it; a failing run reports text only (no typed error), as run_async does."""

    def __init__(self, model: RecordingModel) -> None:
        self.model = model
        self.started = 0

    def __call__(self, feeds: Arrays, done: Any) -> None:
        self.started += 1

        def run() -> None:
            try:
                outputs = self.model(feeds)
            except Exception as exc:
                done(None, RuntimeError(str(exc)))
                return
            done(outputs, None)

        threading.Thread(target=run).start()


async def test_runs_started_on_the_runtimes_thread_answer_each_its_rows(
    executor: ThreadPoolExecutor,
) -> None:
    model = RecordingModel()
    starter = ThreadStarter(model)
    b = batcher(model, executor, max_batch=8, max_queue_rows=99, start=starter)
    results = await asyncio.gather(
        b.submit(rows(1), 1), b.submit(rows(2, 3, 4), 3), b.submit(rows(5, 6, 7, 8), 4)
    )
    assert starter.started == 1 and model.calls == [8]
    assert [r["y"].ravel().tolist() for r in results] == [[2], [4, 6, 8], [10, 12, 14, 16]]
    await b.close()


async def test_a_failed_started_run_is_made_again_for_its_typed_error(
    executor: ThreadPoolExecutor,
) -> None:
    """A run reported failed as text is made again the usual way: the poisoned batch is
    split, only the culprit fails, with the error the model raised (not the text)."""
    model = RecordingModel()
    b = batcher(model, executor, max_batch=3, max_queue_rows=99, start=ThreadStarter(model))
    results = await asyncio.gather(
        b.submit(rows(1), 1), b.submit(rows(-1), 1), b.submit(rows(3), 1), return_exceptions=True
    )
    assert results[0]["y"].tolist() == [[2]] and results[2]["y"].tolist() == [[6]]
    assert isinstance(results[1], ModelRunFailed)
    # The started batch, then each request alone the usual way: no run is made twice.
    assert model.calls == [3, 1, 1, 1]
    await b.close()


class GatedStarter:
    """A run on a thread of its own that ends only once ``gate`` is set."""

    def __init__(self, model: RecordingModel) -> None:
        self.model = model
        self.gate = threading.Event()
        self.started = threading.Event()
        self.ended = threading.Event()

    def __call__(self, feeds: Arrays, done: Any) -> None:
        def run() -> None:
            self.started.set()
            self.gate.wait(5)
            outputs = self.model(feeds)
            self.ended.set()
            done(outputs, None)

        threading.Thread(target=run, daemon=True).start()


@pytest.fixture
def gated() -> Iterator[GatedStarter]:
    starter = GatedStarter(RecordingModel())
    yield starter
    starter.gate.set()  # (whatever the test did: no run left waiting)


async def test_closing_waits_for_a_run_already_started(
    executor: ThreadPoolExecutor, gated: GatedStarter
) -> None:
    """The pool frees a session once its batcher has closed: closing must not return while
    a run on the runtime's thread still uses it. Requests still queued are refused at once,
    not after the run."""
    b = batcher(RecordingModel(), executor, max_batch=1, start=gated)
    running = asyncio.ensure_future(b.submit(rows(1), 1))
    assert await asyncio.to_thread(gated.started.wait, 5)
    queued = asyncio.ensure_future(b.submit(rows(2), 1))
    closing = asyncio.ensure_future(b.close())
    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(queued, 1)
    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(running, 1)
    await asyncio.sleep(0.1)
    assert not closing.done() and not gated.ended.is_set()
    gated.gate.set()
    assert await asyncio.wait_for(closing, 5) == 0
    assert gated.ended.is_set() and b.idle


async def test_closing_gives_up_on_a_run_that_does_not_end(
    executor: ThreadPoolExecutor,
    gated: GatedStarter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its wait, closing returns how many runs are still going (the pool then keeps
    their session) and says so in the log."""
    # (the app's logging setup stops "tandem" propagating; caplog listens at the root)
    monkeypatch.setattr(logging.getLogger("tandem"), "propagate", True)
    b = batcher(RecordingModel(), executor, max_batch=1, start=gated)
    request = asyncio.ensure_future(b.submit(rows(1), 1))
    assert await asyncio.to_thread(gated.started.wait, 5)
    assert await asyncio.wait_for(b.close(wait_s=0.05), 5) == 1
    assert not gated.ended.is_set() and not b.idle
    assert "model runs still going when the pool closed" in caplog.text
    with pytest.raises(ServiceUnavailable):
        await request
