"""Dynamic micro-batching: concurrent requests for one model version become one run.

Requests queue on the event loop. A worker takes the oldest request and, when requests
have been overlapping (the previous batch merged several), waits at most ``max_delay_s``
(from that request's arrival) for the queue to hold ``max_batch`` rows; it then takes
every queued request that fits and has the same trailing shapes, concatenates their
inputs along the batch dimension, runs the model ONCE off the event loop (started on
onnxruntime's own thread, or in a worker thread; the run releases the GIL, so the loop
keeps serving HTTP meanwhile) and hands each request its slice of the outputs. While a
run is in flight the next batch fills on its own.

The queue is bounded in rows: past ``max_queue_rows`` a request is refused at once with
:class:`Overloaded` (429 with ``Retry-After``) instead of waiting without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as RejectedByModel

from cloud.core.errors import (
    InvalidModelInput,
    ModelRunFailed,
    Overloaded,
    ServiceUnavailable,
    TandemError,
)
from cloud.serving.archive import Archive
from cloud.serving.metrics import NUMPY_FROM

log = logging.getLogger("tandem.serving")

# How long closing waits for runs already started to end.
CLOSE_WAIT_S = 10.0

Arrays = dict[str, np.ndarray[Any, Any]]
# What a request brings: its arrays, or an archive of a known layout (merged by bytes).
Feeds = Arrays | Archive
ShapeKey = tuple[tuple[int, ...], ...]
Seconds = list[float] | np.ndarray[Any, Any]  # a batch's waits or latencies
RunFn = Callable[[Arrays], Arrays]
# Starts a run on the runtime's own thread, which calls back (outputs, None) or (None, error).
StartFn = Callable[[Arrays, Callable[[Arrays | None, BaseException | None], None]], None]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    batching: bool
    max_batch: int
    max_delay_s: float
    max_queue_rows: int
    concurrency: int = 1


@dataclass(slots=True)
class BatchObserver:
    """Where a batcher reports, once a run: its rows, requests and run time; each
    request's wait before it; each answered request's latency (arrival to result). The
    default observes nothing (tests, the benchmark). The queue's depth is read, not
    reported: :attr:`MicroBatcher.queued_rows`."""

    on_batch: Callable[[int, int, float], None] = lambda rows, requests, run_s: None
    on_queued: Callable[[Seconds], None] = lambda waits_s: None
    on_answered: Callable[[Seconds], None] = lambda latencies_s: None


class _Pending:
    __slots__ = ("enqueued", "feeds", "future", "rows", "shape_key")

    def __init__(
        self, feeds: Feeds, rows: int, shape_key: ShapeKey, future: asyncio.Future[Arrays]
    ) -> None:
        self.feeds = feeds
        self.rows = rows
        # Trailing dimensions of every input: only requests that agree can be concatenated.
        self.shape_key = shape_key
        self.future = future
        self.enqueued = time.perf_counter()

    def arrays(self) -> Arrays:
        feeds = self.feeds
        return feeds.arrays() if isinstance(feeds, Archive) else feeds


class MicroBatcher:
    """The queue and workers of one model version."""

    def __init__(
        self,
        run: RunFn,
        *,
        policy: BatchPolicy,
        executor: Executor,
        batchable: bool,
        label: str = "model",
        observer: BatchObserver | None = None,
        validate: Callable[[Arrays], None] | None = None,
        start: StartFn | None = None,
    ) -> None:
        self._run = run
        # When given, runs are started on the runtime's thread instead of the executor's.
        self._start = start
        # Value checks on the merged feeds: one pass a batch instead of one a request.
        self._validate = validate
        self.policy = policy
        self._executor = executor
        # A model whose dimensions are fixed runs each request on its own.
        self._merge = policy.batching and batchable
        self._label = label
        self._observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self.queued_rows = 0
        self._arrived = asyncio.Event()
        self._filled = asyncio.Event()
        self._workers: set[asyncio.Task[None]] = set()
        self._retired = False
        self._closed = False
        # Recent run time per row, for an honest Retry-After.
        self._seconds_per_row = 0.001
        self._last_requests = 1
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first submit
        # Runs started on the runtime's thread and not yet ended: each resolves when its
        # run does, even one whose batch was abandoned, so closing can wait for them.
        self._running: set[asyncio.Future[None]] = set()
        self._on_retired: Callable[[], None] | None = None  # see retire

    async def submit(self, feeds: Feeds, rows: int, shape_key: ShapeKey | None = None) -> Arrays:
        """The outputs of the model for ``feeds`` (``rows`` rows), once its batch has run.
        ``shape_key``: the inputs' trailing dimensions, in the model's input order (taken
        from ``feeds``, arrays then, when not given)."""
        return await self.enqueue(feeds, rows, shape_key)

    def enqueue(
        self, feeds: Feeds, rows: int, shape_key: ShapeKey | None = None
    ) -> asyncio.Future[Arrays]:
        """:meth:`submit`, without the coroutine: the future of the outputs (one frame less
        on every request's way in and out)."""
        if self._closed:
            raise ServiceUnavailable("The serving pool is shutting down; retry on another replica.")
        if self.queued_rows + rows > self.policy.max_queue_rows:
            backlog_s = self.queued_rows * self._seconds_per_row / self.policy.concurrency
            raise Overloaded(
                f"Model {self._label} has {self.queued_rows} rows queued, at the limit of "
                f"{self.policy.max_queue_rows}; retry after the Retry-After delay, or add "
                "replicas.",
                retry_after_s=math.ceil(backlog_s),
                details={"queued_rows": self.queued_rows},
            )
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        if shape_key is None:
            assert not isinstance(feeds, Archive), "an archive comes with its shape key"
            shape_key = tuple([array.shape[1:] for array in feeds.values()])
        self._queue.append(_Pending(feeds, rows, shape_key, future))
        self.queued_rows += rows
        self._arrived.set()
        if self.queued_rows >= self.policy.max_batch:
            self._filled.set()
        if len(self._workers) < self.policy.concurrency:
            self._start_workers()
        return future

    def _start_workers(self) -> None:
        while len(self._workers) < self.policy.concurrency:
            worker = asyncio.create_task(self._work(), name=f"batcher:{self._label}")
            worker.add_done_callback(self._workers.discard)  # (one cancelled before it ran)
            self._workers.add(worker)

    def retire(self, done: Callable[[], None] | None = None) -> None:
        """Stop the workers once the queue is empty; later submits start them again.
        ``done`` is called once, when the last worker has stopped with nothing left to do
        (at once when none runs)."""
        self._retired = True
        self._on_retired = done
        self._arrived.set()
        if self.idle:
            self._retired_done()

    def _retired_done(self) -> None:
        done, self._on_retired = self._on_retired, None
        if done is not None:
            done()

    async def close(self, wait_s: float = CLOSE_WAIT_S) -> int:
        """Cancel the workers, fail whatever is still queued, then wait (``wait_s`` at
        most) for runs already on the runtime's thread to end, since the session must
        outlive them. Returns how many are still going (the caller keeps their session)."""
        self._closed = True
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(
                    ServiceUnavailable("The serving pool shut down before this request ran; retry.")
                )
        self.queued_rows = 0
        if not self._running:
            return 0
        _, still = await asyncio.wait(list(self._running), timeout=wait_s)
        if still:
            log.warning(
                "model runs still going when the pool closed; their session is kept",
                extra={"model": self._label, "runs": len(still)},
            )
        return len(still)

    @property
    def idle(self) -> bool:
        """Nothing queued, no worker, no run in flight."""
        return not (self._queue or self._workers or self._running)

    async def _work(self) -> None:
        try:
            await self._work_until_retired()
        finally:
            # At once, not in a later callback: a submit right after must start a worker.
            self._workers.discard(asyncio.current_task())
            if self._retired and self.idle:
                self._retired_done()

    async def _work_until_retired(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._retired:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            # Waiting pays only when requests overlap: a lone caller (the last batch held
            # one request) runs at once, as if batching were off.
            if self._merge and self.policy.max_delay_s > 0 and self._last_requests > 1:
                await self._wait_to_fill(loop)
            batch = self._take()
            if batch:
                await self._execute(loop, batch)

    async def _wait_to_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.queued_rows >= self.policy.max_batch:
            return
        remaining = self._queue[0].enqueued + self.policy.max_delay_s - time.perf_counter()
        if remaining <= 0:
            return
        self._filled.clear()
        timer = loop.call_later(remaining, self._filled.set)
        try:
            await self._filled.wait()
        finally:
            timer.cancel()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # its caller went away (a cancelled request)
                self._queue.popleft()
                self.queued_rows -= head.rows
                continue
            if batch and (
                not self._merge
                or rows + head.rows > self.policy.max_batch
                or head.shape_key != batch[0].shape_key
            ):
                break
            batch.append(self._queue.popleft())
            self.queued_rows -= head.rows
            rows += head.rows
        return batch

    @staticmethod
    def _merge_feeds(batch: list[_Pending]) -> Arrays:
        if len(batch) == 1:
            return batch[0].arrays()
        first = batch[0].feeds
        if isinstance(first, Archive):
            layout = first.layout
            bodies = []
            for pending in batch:
                feeds = pending.feeds
                if not isinstance(feeds, Archive) or feeds.layout is not layout:
                    break
                bodies.append(feeds.body)
            else:  # all of one layout: each input joined from the bodies' bytes
                return layout.merge(bodies)
        parts = [p.arrays() for p in batch]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _admit(self, batch: list[_Pending], feeds: Arrays) -> tuple[list[_Pending], Arrays]:
        """The requests whose values pass validation, and their feeds; the others fail."""
        if self._validate is None:
            return batch, feeds
        try:
            self._validate(feeds)
            return batch, feeds
        except TandemError:
            pass
        admitted = []
        for pending in batch:  # find the culprits: each request on its own
            try:
                self._validate(pending.arrays())
                admitted.append(pending)
            except TandemError as exc:
                self._fail(pending, exc)
        return admitted, self._merge_feeds(admitted) if admitted else {}

    async def _execute(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], *, retry: bool = False
    ) -> None:
        started = time.perf_counter()
        arrived = [pending.enqueued for pending in batch]
        if not retry:  # (a retried request's wait was reported with its first batch)
            self._observer.on_queued(_elapsed(started, arrived))
        self._last_requests = len(batch)
        admitted, feeds = self._admit(batch, self._merge_feeds(batch))
        if not admitted:
            return
        if len(admitted) < len(batch):
            batch = admitted
            arrived = [pending.enqueued for pending in batch]
        rows = sum(p.rows for p in batch)
        try:
            if self._start is not None and not retry:
                outputs = await self._started(loop, feeds, typed=len(batch) == 1)
            else:
                outputs = await loop.run_in_executor(self._executor, self._run, feeds)
            parts = self._split(outputs, [p.rows for p in batch])
        except asyncio.CancelledError:
            for pending in batch:
                self._fail(pending, ServiceUnavailable("The serving pool shut down; retry."))
            raise
        except Exception as exc:
            if len(batch) > 1:
                # One request may have poisoned the batch: run each alone, so only it fails.
                for pending in batch:
                    await self._execute(loop, [pending], retry=True)
                return
            self._fail(batch[0], exc)
            return
        done = time.perf_counter()
        elapsed = done - started
        self._seconds_per_row = 0.8 * self._seconds_per_row + 0.2 * elapsed / rows
        self._observer.on_batch(rows, len(batch), elapsed)
        gone = []
        for pending, part in zip(batch, parts, strict=True):
            if pending.future.done():  # (its caller went away while it ran)
                gone.append(pending)
            else:
                pending.future.set_result(part)
        if gone:  # only the requests answered now count
            arrived = [pending.enqueued for pending in batch if pending not in gone]
        self._observer.on_answered(_elapsed(done, arrived))

    async def _started(
        self, loop: asyncio.AbstractEventLoop, feeds: Arrays, *, typed: bool
    ) -> Arrays:
        """The outputs of a run started on the runtime's own thread: it calls back once,
        and the result crosses to the loop with one thread-safe call (the only time that
        thread takes the GIL), instead of a worker's two. ``typed``: a failure is made again
        the usual way for its typed error (a batch of several is split instead)."""
        future: asyncio.Future[Arrays] = loop.create_future()
        ended: asyncio.Future[None] = loop.create_future()
        self._running.add(ended)
        ended.add_done_callback(self._running.discard)

        def done(outputs: Arrays | None, error: BaseException | None) -> None:
            # (``feeds`` stays referenced here until the run has ended)
            with contextlib.suppress(RuntimeError):  # the loop closed while it ran
                loop.call_soon_threadsafe(_settle, future, outputs, error, ended, feeds)

        assert self._start is not None
        try:
            self._start(feeds, done)
        except BaseException:
            ended.set_result(None)
            raise
        try:
            return await future
        except Exception:
            if not typed:
                raise
            # run_async reports a failure as text only; the same run made the usual way
            # raises onnxruntime's typed error (an invalid argument is the caller's: 422).
            return await loop.run_in_executor(self._executor, self._run, feeds)

    @staticmethod
    def _split(outputs: Arrays, sizes: list[int]) -> list[Arrays]:
        n = len(sizes)
        if n == 1:
            return [outputs]
        total = sum(sizes)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                raise ModelRunFailed(
                    f"Output {name!r} has shape {list(array.shape)} for a batch of {total} "
                    "rows; it cannot be split per request."
                )
        if outputs and sizes.count(sizes[0]) == n:  # (every request the same rows, as a rule)
            # Each output seen as (requests, rows, ...): numpy makes the views, one a request.
            size = sizes[0]
            names = list(outputs)
            columns = [list(a.reshape(n, size, *a.shape[1:])) for a in outputs.values()]
            if len(names) == 1:
                return [{names[0]: part} for part in columns[0]]
            return [dict(zip(names, parts, strict=True)) for parts in zip(*columns, strict=True)]
        parts = []
        start = 0
        for stop in itertools.accumulate(sizes):  # views, like np.split's, without its cost
            parts.append({name: array[start:stop] for name, array in outputs.items()})
            start = stop
        return parts

    def _fail(self, pending: _Pending, exc: Exception) -> None:
        if pending.future.done():
            return
        if isinstance(exc, RejectedByModel):
            exc = InvalidModelInput(
                f"Model {self._label} rejected these inputs while running: "
                f"{str(exc).splitlines()[0][:300]}. Check the values against what the "
                "model was trained on.",
                details={"input": None},
            )
        elif not isinstance(exc, TandemError):
            log.warning(
                "model run failed",
                extra={"model": self._label, "error": f"{exc.__class__.__name__}: {exc}"[:500]},
            )
            exc = ModelRunFailed(
                f"Model {self._label} failed while running ({exc.__class__.__name__}); "
                "the inputs passed its signature checks, so the model itself needs fixing. "
                "The error is in the server log.",
            )
        pending.future.set_exception(exc)


def _elapsed(now: float, since: list[float]) -> Seconds:
    """``now`` less each of ``since``: one numpy step for a batch of many, a list for a few
    (what the histograms take most cheaply at each size)."""
    if len(since) > NUMPY_FROM:
        return now - np.array(since)
    return [now - t for t in since]


def _settle(
    future: asyncio.Future[Arrays],
    outputs: Arrays | None,
    error: BaseException | None,
    ended: asyncio.Future[None],
    feeds: Arrays,  # (held until the run has ended: onnxruntime may read them in place)
) -> None:
    if not ended.done():
        ended.set_result(None)
    if future.done():  # its batch was abandoned (the pool closing)
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert outputs is not None
        future.set_result(outputs)
