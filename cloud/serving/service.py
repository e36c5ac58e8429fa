"""The serving pool of one replica: which model versions are loaded, and which is latest.

Each replica loads versions on demand from the shared blob store, so replicas need no
coordination beyond the ``model.registered`` hint on the broker:

- a pinned request (``?version=N``) is served by that version, loaded on first use;
- an unpinned request is served by the latest version this replica knows. That number is
  refreshed in the background when a ``model.registered`` event names the model, and at
  least every ``serving_latest_ttl_s`` seconds in case the hint was lost. A new version is
  loaded and warmed *before* it becomes latest, so requests never wait for it, and
  requests already queued on the old version finish there;
- at most ``serving_max_loaded`` versions stay loaded; the least recently used goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from cloud.core.broker import BrokerUnavailable
from cloud.core.context import CloudContext
from cloud.core.errors import ModelLoadFailed, ModelNotFound, TandemError
from cloud.events.publisher import EVENTS_CHANNEL
from cloud.registry.service import get_version
from cloud.registry.tables import ModelVersionRow
from cloud.serving.archive import Archive
from cloud.serving.batcher import Arrays, BatchObserver, BatchPolicy, MicroBatcher, Seconds
from cloud.serving.metrics import ServingMetrics
from cloud.serving.sessions import LoadedSession, SessionOptions, load_session
from cloud.serving.signature import check_inputs, check_values

log = logging.getLogger("tandem.serving")

Key = tuple[str, int]

# Sessions whose runs outlasted the pool's closing: never freed (see ServingPool.close).
_ABANDONED: list[LoadedSession] = []


@dataclass(slots=True)
class ServedModel:
    name: str
    version: int
    target: str
    session: LoadedSession
    batcher: MicroBatcher
    executor: ThreadPoolExecutor
    # X-Tandem-Model and X-Tandem-Model-Version, as every answer of this version carries
    # (and as raw ASGI headers, for the fast path).
    headers: Mapping[str, str]
    raw_headers: tuple[tuple[bytes, bytes], ...]


class ServingPool:
    """Loaded model versions and their batchers; created per app, opened in its lifespan."""

    def __init__(self, context: CloudContext, registry: CollectorRegistry) -> None:
        settings = context.settings
        self._context = context
        self.metrics = ServingMetrics(registry)
        self.policy = BatchPolicy(
            batching=settings.serving_batching,
            max_batch=settings.serving_max_batch,
            max_delay_s=settings.serving_max_delay_ms / 1000,
            max_queue_rows=settings.serving_max_queue_rows,
            concurrency=settings.serving_concurrent_runs,
        )
        warm = sorted({1, settings.serving_max_batch if settings.serving_batching else 1})
        self.options = SessionOptions(
            providers=tuple(settings.serving_providers),
            intra_op_threads=settings.serving_intra_op_threads,
            warm_rows=tuple(warm),
            # (with 0 threads, onnxruntime sizes its pool and may leave none for run_async; with
            # several runs in flight, each needs a thread of its own: the worker threads)
            run_async=settings.serving_run_async
            and settings.serving_intra_op_threads > 0
            and settings.serving_concurrent_runs == 1,
        )
        # A request larger than the whole queue could never be accepted: refuse it as
        # invalid rather than tell its caller to retry.
        self.max_request_rows = min(
            settings.serving_max_request_rows, settings.serving_max_queue_rows
        )
        self._max_loaded = settings.serving_max_loaded
        self._latest_ttl_s = settings.serving_latest_ttl_s
        self._models: OrderedDict[Key, ServedModel] = OrderedDict()
        # Evicted versions still finishing their queue, until their batcher is idle.
        self._retiring: list[ServedModel] = []
        self._latest: dict[str, tuple[int, float]] = {}
        self._loading: dict[Key, asyncio.Task[ServedModel]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._follower: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        # The interpreter's switch interval and collector are tuned for the whole process
        # by the app (cloud/core/process_tuning.py): a run ends in a worker thread that
        # must take the GIL back to hand over its result.
        self._follower = asyncio.create_task(self._follow_registrations(), name="serving-events")

    async def close(self) -> None:
        tasks = [*self._loading.values(), *self._refreshing.values()]
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        closing = [*self._models.values(), *self._retiring]
        still = await asyncio.gather(*(served.batcher.close() for served in closing))
        for served, running in zip(closing, still, strict=True):
            served.executor.shutdown(wait=False, cancel_futures=True)
            self._forget(served)
            if running:
                # onnxruntime's run_async holds no reference to its session: freeing it
                # under a run would crash the process, so it is kept until the process ends.
                _ABANDONED.append(served.session)
        self._models.clear()
        self._retiring.clear()
        self.metrics.loaded.set(0)

    # -- serving ------------------------------------------------------------------------

    async def infer(
        self, name: str, version: int | None, arrays: Arrays | Archive
    ) -> tuple[ServedModel, Arrays]:
        """Run ``arrays`` (or an archive of them) through model ``name`` (``version``, or
        the latest)."""
        # Counted from here on: a label per unknown name would let callers grow the
        # metrics without bound.
        # (a loaded version is had without a coroutine: one frame less a request)
        served = self._ready(name, version) or await self._fetch(name, version)
        try:
            plan = served.session.signature.plan
            if isinstance(arrays, Archive):
                # A known layout's check is made once: its arrays are made in the batch.
                exact = None if plan is None else arrays.layout.exact(plan, self.max_request_rows)
                if exact is not None:
                    outputs = await served.batcher.enqueue(arrays, *exact)
                    return served, outputs
                arrays = arrays.arrays()
            # Values are checked by the batcher, once per merged batch.
            feeds, rows = check_inputs(
                served.session.signature, arrays, max_rows=self.max_request_rows, values=False
            )
            # Latency and the ok count are reported by the batcher, once per run.
            outputs = await served.batcher.enqueue(feeds, rows)
        except TandemError as exc:
            self.metrics.requests.labels(name, exc.code).inc()
            raise
        return served, outputs

    def _ready(self, name: str, version: int | None) -> ServedModel | None:
        """:meth:`get`'s answer when it needs no waiting (the version loaded, the latest
        fresh), else None."""
        if version is None:
            latest = self._latest.get(name)
            if latest is None or time.monotonic() - latest[1] > self._latest_ttl_s:
                return None
            version = latest[0]
        served = self._models.get((name, version))
        if served is not None:
            self._models.move_to_end((name, version))
        return served

    async def get(self, name: str, version: int | None = None) -> ServedModel:
        """The loaded model version, loading it (once, however many ask) when needed."""
        return self._ready(name, version) or await self._fetch(name, version)

    async def _fetch(self, name: str, version: int | None) -> ServedModel:
        """:meth:`get` when :meth:`_ready` has no answer: the latest version looked up (or
        refreshed in the background), the version loaded."""
        if version is None:
            latest = self._latest.get(name)
            if latest is not None:
                version, checked = latest
                if time.monotonic() - checked > self._latest_ttl_s:
                    self._refresh_soon(name)
            else:
                version = await self._load_latest(name)
        return await self._load((name, version))

    # -- loading ------------------------------------------------------------------------

    async def _load_latest(self, name: str) -> int:
        # Through anyio, not asyncio.to_thread: a cancelled caller (the pool closing) waits
        # for the thread, so no read reaches the database after the app disposed of it.
        version = await run_in_threadpool(self._latest_version, name)
        await self._load((name, version))
        self._latest[name] = (version, time.monotonic())
        return version

    def _latest_version(self, name: str) -> int:
        with self._context.db.session(write=False) as session:
            version = session.scalar(
                select(ModelVersionRow.version)
                .where(ModelVersionRow.name == name)
                .order_by(ModelVersionRow.version.desc())
                .limit(1)
            )
        if version is None:
            raise ModelNotFound(
                f"No model named {name!r}; register one with POST /v1/models, "
                "or check the name with GET /v1/models."
            )
        return version

    async def _load(self, key: Key) -> ServedModel:
        served = self._models.get(key)
        if served is not None:
            self._models.move_to_end(key)
            return served
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load_now(key), name=f"serving-load:{key}")
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        # Shielded: a caller that goes away does not cancel a load others wait for.
        return await asyncio.shield(task)

    def _loaded(self, key: Key, task: asyncio.Task[ServedModel]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed load is reported to its callers

    def _read_model(self, name: str, version: int) -> tuple[ModelVersionRow, bytes]:
        with self._context.db.session(write=False) as session:
            row = get_version(session, name, version)
            session.expunge(row)
        try:
            data = self._context.blobs.path_for(row.sha256).read_bytes()
        except FileNotFoundError:
            raise ModelLoadFailed(
                f"Model {name!r} version {version} is registered but its file "
                f"{row.sha256[:12]}... is missing from the blob store; restore the blob store "
                "or register the model again."
            ) from None
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise ModelLoadFailed(
                f"Model {name!r} version {version}: the stored file does not match its digest; "
                "the blob store is corrupt. Restore it or register the model again."
            )
        return row, data

    async def _load_now(self, key: Key) -> ServedModel:
        name, version = key
        row, data = await run_in_threadpool(self._read_model, name, version)
        started = time.perf_counter()
        session = await run_in_threadpool(load_session, data, self.options)
        self.metrics.load_seconds.observe(time.perf_counter() - started)
        log.info(
            "model loaded",
            extra={"model": name, "version": version, "providers": list(session.providers)},
        )
        executor = ThreadPoolExecutor(
            max_workers=self.policy.concurrency, thread_name_prefix=f"serve-{name}-{version}"
        )
        batcher = MicroBatcher(
            session.run,
            policy=self.policy,
            executor=executor,
            batchable=session.signature.batchable,
            label=f"{name!r} version {version}",
            observer=self._observer(name),
            validate=functools.partial(check_values, session.signature),
            start=session.start if self.options.run_async else None,
        )
        # Read when /metrics is scraped, rather than set on every change of the queue.
        self.metrics.queued_rows.labels(name, str(version)).set_function(
            lambda: batcher.queued_rows
        )
        headers = {"X-Tandem-Model": name, "X-Tandem-Model-Version": str(version)}
        served = ServedModel(
            name=name,
            version=version,
            target=row.target,
            session=session,
            batcher=batcher,
            executor=executor,
            headers=MappingProxyType(headers),
            raw_headers=tuple((k.lower().encode(), v.encode()) for k, v in headers.items()),
        )
        self._models[key] = served
        self._evict()
        gc.freeze()  # the session and signature too (no collection: requests are in flight)
        return served

    def _observer(self, name: str) -> BatchObserver:
        m = self.metrics
        rows_h, requests_h, run_h = (
            m.batch_rows.labels(name),
            m.batch_requests.labels(name),
            m.run_seconds.labels(name),
        )

        ok = m.requests.labels(name, "ok")

        def on_batch(rows: int, requests: int, run_s: float) -> None:
            rows_h.observe(rows)
            requests_h.observe(requests)
            run_h.observe(run_s)

        def on_queued(waits_s: Seconds) -> None:
            m.queue_seconds.observe_many(name, waits_s)

        def on_answered(latencies_s: Seconds) -> None:
            m.latency_seconds.observe_many(name, latencies_s)
            ok.inc(len(latencies_s))

        return BatchObserver(on_batch=on_batch, on_queued=on_queued, on_answered=on_answered)

    def _forget(self, served: ServedModel) -> None:
        """Stop reporting the queue of a version no longer loaded (and let it be freed)."""
        with contextlib.suppress(KeyError):
            self.metrics.queued_rows.remove(served.name, str(served.version))

    def _evict(self) -> None:
        while len(self._models) > self._max_loaded:
            (name, version), served = self._models.popitem(last=False)
            if self._latest.get(name, (None,))[0] == version:
                self._latest.pop(name, None)
            # Requests already queued finish (on its executor: a queued request may still
            # need it); once its worker stops, the version is let go and its session freed.
            self._retiring.append(served)
            served.batcher.retire(functools.partial(self._let_go, served))
            self._forget(served)
            log.info("model evicted", extra={"model": name, "version": version})
        self.metrics.loaded.set(len(self._models))

    def _let_go(self, served: ServedModel) -> None:
        """An evicted version's batcher is done: its run thread stops, its session is freed."""
        with contextlib.suppress(ValueError):  # (closing may have cleared the list)
            self._retiring.remove(served)
        served.executor.shutdown(wait=False)

    # -- following new versions ---------------------------------------------------------

    def _refresh_soon(self, name: str) -> None:
        if name in self._refreshing:
            return
        task = asyncio.create_task(self._refresh(name), name=f"serving-refresh:{name}")
        self._refreshing[name] = task
        task.add_done_callback(lambda _: self._refreshing.pop(name, None))

    async def _refresh(self, name: str) -> None:
        """Make the newest registered version latest, once it is loaded and warm."""
        try:
            version = await run_in_threadpool(self._latest_version, name)
            await self._load((name, version))
        except Exception as exc:
            # The version in service keeps serving; the next refresh tries again.
            log.warning(
                "latest model version could not be loaded",
                extra={"model": name, "error": f"{exc.__class__.__name__}: {exc}"[:300]},
            )
            if name in self._latest:
                self._latest[name] = (self._latest[name][0], time.monotonic())
            return
        self._latest[name] = (version, time.monotonic())

    async def _follow_registrations(self) -> None:
        broker = self._context.broker
        while True:
            try:
                async with broker.subscribe(EVENTS_CHANNEL) as subscription:
                    async for message in subscription:
                        self._on_event(message.data)
                return  # the broker closed: the app is shutting down
            except BrokerUnavailable:
                # Hints may be lost while disconnected: trust no cached latest version.
                self._latest = {n: (v, float("-inf")) for n, (v, _) in self._latest.items()}
                await asyncio.sleep(1.0)

    def _on_event(self, data: bytes) -> None:
        try:
            event: Any = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict) or event.get("type") != "model.registered":
            return
        name = event.get("name")
        if isinstance(name, str) and name in self._latest:
            self._refresh_soon(name)


def non_finite_outputs(outputs: Arrays) -> list[str]:
    """Outputs holding NaN or infinity, which JSON cannot carry."""
    return [
        name
        for name, array in outputs.items()
        if array.dtype.kind in "fc" and not np.isfinite(array).all()
    ]
