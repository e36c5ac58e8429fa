"""Task calls in the worker pool: starting them, giving them up, and recording how each ended.

Every outcome is counted in the task's :class:`TaskStats`. A call that returned hands what
it emitted to the ``on_output`` callbacks; a call that raised or ran past its limit goes to
the ``on_failure`` callbacks as a :class:`TaskFailure`. Callbacks run in the thread that
saw the outcome (a worker, the timer, or the app's thread for predict); what they raise is
logged and ignored, so an app's callback can neither fail a task nor break the app's call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from device_sdk._errors import TaskFailed, TaskTimeout
from device_sdk._task_context import (
    TaskContext,
    TaskFailure,
    TaskOutput,
    TaskStats,
    Trigger,
    _Counters,
)
from device_sdk._task_loader import _Version

log = logging.getLogger("device_sdk.runtime")


class _Call:
    __slots__ = ("ctx", "deadline", "inputs", "settled", "version")

    def __init__(self, version: _Version, ctx: TaskContext, inputs: Any, deadline: float) -> None:
        self.version = version
        self.ctx = ctx
        self.inputs = inputs
        self.deadline = deadline
        self.settled = False


class _Cancelled(TaskFailed):
    """A call given up before it started: its outcome was recorded already, or it was the
    runtime's own stop, which is no fault of the task's."""


class _Calls:
    """The worker pool, the calls in it, and each active task's record."""

    def __init__(self, *, max_workers: int, on_change: Callable[[], None]) -> None:
        self._max_workers = max_workers
        self._on_change = on_change
        self._lock = threading.Lock()  # stats, calls, pool
        self._stats: dict[str, _Counters] = {}
        self._calls: set[_Call] = set()
        self._outputs: tuple[Callable[[TaskOutput], None], ...] = ()
        self._failures: tuple[Callable[[TaskFailure], None], ...] = ()
        self._pool: ThreadPoolExecutor | None = None

    def tasks_changed(self, added: Iterable[_Version], removed: Iterable[str]) -> None:
        """Start records for ``added`` versions (a broken one counts its load error) and
        drop those of ``removed`` task names."""
        with self._lock:
            for version in added:
                stats = self._stats.setdefault(version.name, _Counters())
                stats.version = version.version
                if version.error is not None:
                    log.error("%s cannot run: %s", version.label(), version.error)
                    stats.failed(version.error)
            for name in removed:
                self._stats.pop(name, None)

    def stats(self) -> dict[str, TaskStats]:
        with self._lock:
            return {name: stats.snapshot(name) for name, stats in self._stats.items()}

    def on_output(self, callback: Callable[[TaskOutput], None]) -> None:
        with self._lock:
            self._outputs = (*self._outputs, callback)

    def on_failure(self, callback: Callable[[TaskFailure], None]) -> None:
        with self._lock:
            self._failures = (*self._failures, callback)

    def submit(self, call: _Call) -> Future[Any]:
        """Run ``call`` in the pool; its version's slot, taken by the caller, is given back
        when it ends (or here, if it cannot start)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="tandem-task")
            self._calls.add(call)
            try:
                return self._pool.submit(self._work, call)
            except BaseException:
                self._calls.discard(call)
                call.version.slots.release()
                raise

    def stop(self) -> None:
        """Cancel the calls in progress and shut the pool down (a later submit starts one)."""
        with self._lock:
            pool, self._pool = self._pool, None
            calls = list(self._calls)
        for call in calls:
            call.ctx._cancel()
        if pool is not None:
            pool.shutdown(wait=False)

    def skipped(self, version: _Version) -> None:
        with self._lock:
            stats = self._stats.get(version.name)
            if stats is not None:
                stats.skipped += 1
        self._on_change()

    def timed_out(self, call: _Call, limit: float) -> TaskTimeout | None:
        """Give ``call`` up and record its time-out, unless its outcome is recorded already."""
        version = call.version
        timeout = TaskTimeout(
            f"{version.label()} did not finish within {limit:g} s; the call was cancelled.",
            task=version.name,
            version=version.version,
        )
        with self._lock:
            if call.settled:
                return None
            call.settled = True
        call.ctx._cancel()
        log.warning("%s", timeout)
        self.record(version, timeout, trigger=call.ctx.trigger, timed_out=True)
        return timeout

    def record(
        self,
        version: _Version,
        error: BaseException | None,
        *,
        trigger: Trigger,
        timed_out: bool = False,
        report: bool = True,
    ) -> None:
        """Count one call's outcome; a failure also goes to the ``on_failure`` callbacks
        unless ``report`` is False."""
        with self._lock:
            stats = self._stats.get(version.name)  # a removed task keeps no record
            if stats is None:
                pass
            elif error is None:
                stats.runs += 1
            else:
                stats.failed(error, timed_out=timed_out)
            failures = self._failures
        if error is not None and report and failures:
            failure = TaskFailure(
                version.name,
                version.version,
                "timeout" if timed_out else "exception",
                error,
                trigger,
                time.time(),
            )
            self._tell(failures, failure, version, "on_failure")
        self._on_change()

    # --- in the worker --------------------------------------------------------------

    def _work(self, call: _Call) -> Any:
        version = call.version
        try:
            if call.ctx.cancelled:
                raise _Cancelled(
                    f"{version.label()} was cancelled before it started (time-out or stop).",
                    task=version.name,
                    version=version.version,
                )
            result = version.entry()(call.ctx, call.inputs)
        except BaseException as exc:
            self._settle(call, exc)
            raise
        finally:
            with self._lock:
                self._calls.discard(call)
            version.slots.release()
        if self._settle(call, None) and call.ctx._emitted:
            output = TaskOutput(
                version.name, version.version or 0, call.ctx.trigger, tuple(call.ctx._emitted)
            )
            self._tell(self._outputs, output, version, "on_output")
        return result

    def _settle(self, call: _Call, error: BaseException | None) -> bool:
        """Record the outcome of ``call`` unless one was recorded already (a time-out)."""
        with self._lock:
            if call.settled:
                return False
            call.settled = True
        trigger = call.ctx.trigger
        if error is not None and trigger != "predict":
            log.warning("%s failed on %s: %r", call.version.label(), trigger, error)
        report = not isinstance(error, _Cancelled)
        self.record(call.version, error, trigger=trigger, report=report)
        return True

    @staticmethod
    def _tell(
        callbacks: tuple[Callable[[Any], None], ...], value: Any, version: _Version, kind: str
    ) -> None:
        for callback in callbacks:
            try:
                callback(value)
            except Exception:  # an app callback's bug must not fail the task or the app
                log.exception("%s callback failed for %s", kind, version.label())
