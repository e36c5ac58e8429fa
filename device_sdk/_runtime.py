"""Running installed tasks: entry code in a worker pool with time limits, model tasks inline.

A task is one of two kinds:

- an **entry task** has an ``entry`` (``main.py``) defining ``run(ctx, inputs)``. It runs
  in a worker pool when the app calls ``predict``, when a pipeline trigger fires
  (:meth:`TaskRuntime.fire`), or every ``trigger.every_s`` seconds for a ``schedule``
  task. Each call has a time limit (``resources.timeout_ms``) and each task at most
  ``resources.max_concurrency`` calls at once. An exception or a time-out is contained:
  it is counted and kept as the task's last error; only ``predict`` raises it, to the
  app thread that asked.
- a **model task** has no entry and exactly one model: ``predict`` runs that model in the
  caller's thread, with no hop to the pool, and returns its outputs.

Each failure or time-out of a call also goes to the ``on_failure`` callbacks as a
:class:`TaskFailure` (the device reports them to the cloud). Loading and trust are in
``_task_loader``, the ``ctx`` and the records in ``_task_context``, the timer in
``_schedule``.

Python cannot stop a thread. A call past its limit is given up: the caller gets
:class:`TaskTimeout`, the call's model runs are terminated through onnxruntime's
``RunOptions.terminate``, and ``ctx.cancelled`` turns True; its concurrency slot stays
taken until its code returns, so a task that never returns holds at most its own
``max_concurrency`` workers of the pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError
from pathlib import Path
from types import MappingProxyType
from typing import Any

from device_sdk._errors import InvalidModelInput, TaskFailed, TaskNotInstalled, TaskTimeout
from device_sdk._runner import ModelRunner
from device_sdk._schedule import _Timer
from device_sdk._task_calls import _Call, _Calls
from device_sdk._task_context import TaskContext, TaskFailure, TaskOutput, TaskStats, Trigger
from device_sdk._task_loader import _Version
from device_sdk.wire import TaskManifest

log = logging.getLogger("device_sdk.runtime")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class TaskRuntime:
    """Runs the installed tasks of one device (see the module docstring for the kinds).

    ``tasks_dir`` is the only directory tasks load from. ``update`` tells the runtime
    which version of each task is active; ``start`` / ``stop`` turn schedules on and off.
    ``max_workers`` bounds the worker pool. ``features`` is the mapping tasks read as
    ``ctx.features`` (read-only to them; empty by default, fed by the pipelines).
    ``on_change`` is called, from any thread, after a call's outcome is recorded.
    """

    def __init__(
        self,
        tasks_dir: Path,
        *,
        runner: ModelRunner | None = None,
        max_workers: int = 4,
        features: Mapping[str, Any] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.tasks_dir = tasks_dir
        self.runner = runner or ModelRunner()
        self._features: Mapping[str, Any] = (
            MappingProxyType(features)
            if isinstance(features, dict)
            else _EMPTY
            if features is None
            else features  # not `features or ...`: an empty live view is falsy, and kept
        )
        self._on_change = on_change or (lambda: None)
        # Replaced whole on update, never mutated: predict reads it without a lock.
        self._active: dict[str, _Version] = {}
        self._update_lock = threading.Lock()
        self._calls = _Calls(max_workers=max_workers, on_change=self._on_change)
        self._timer: _Timer[_Call | _Version] = _Timer(self._due, name="tandem-task-timer")

    # --- what runs ------------------------------------------------------------------

    def update(self, active: Mapping[str, Path]) -> bool:
        """Make ``active`` (task name -> installed version directory) what runs; returns
        whether anything changed. Versions no longer active are dropped with their entry
        modules and their models' sessions; their calls in progress finish."""
        with self._update_lock:
            current = self._active
            fresh: dict[str, _Version] = {}
            for name, path in active.items():
                old = current.get(name)
                if old is not None and old.path == path:
                    fresh[name] = old
                else:
                    fresh[name] = _Version.open(name, path, self.tasks_dir, self.runner)
            dropped = [v for name, v in current.items() if fresh.get(name) is not v]
            added = [v for name, v in fresh.items() if current.get(name) is not v]
            if not dropped and not added:
                return False
            self._active = fresh
            self.runner.forget(set().union(*(v.digests() for v in fresh.values())))
            for version in dropped:
                version.unload()
            self._calls.tasks_changed(added, [v.name for v in dropped if v.name not in fresh])
            for version in added:
                self._schedule(version)
        for version in added:
            log.info("%s loaded from %s", version.label(), version.path)
        return True

    def versions(self) -> dict[str, int | None]:
        """``{task: version}`` of what runs now."""
        return {name: v.version for name, v in self._active.items()}

    def manifests(self) -> dict[str, TaskManifest]:
        """The manifest of each active task version that could be read (the pipelines
        build from their ``pipeline`` specs)."""
        return {name: v.manifest for name, v in self._active.items() if v.manifest is not None}

    def report(self, task: str, error: BaseException) -> None:
        """Record ``error`` as a failure of the active ``task`` (trigger ``event``), e.g.
        its pipeline spec cannot run: counted in its stats, and told to ``on_failure``."""
        version = self._active.get(task)
        if version is not None:
            self._calls.record(version, error, trigger="event")

    def stats(self) -> dict[str, TaskStats]:
        """Each active task's :class:`TaskStats`."""
        return self._calls.stats()

    def on_output(self, callback: Callable[[TaskOutput], None]) -> None:
        """Call ``callback`` with the :class:`TaskOutput` of every call that emitted
        something, from the worker thread, after the call returned. Exceptions it raises
        are logged and ignored."""
        self._calls.on_output(callback)

    def on_failure(self, callback: Callable[[TaskFailure], None]) -> None:
        """Call ``callback`` with a :class:`TaskFailure` for every call that raised or ran
        past its time limit, whatever its trigger, from the thread that saw it end (the
        app's own thread for a failed predict). Exceptions it raises are logged and
        ignored; it should be quick."""
        self._calls.on_failure(callback)

    # --- calls ----------------------------------------------------------------------

    def predict(self, task: str, inputs: Any, *, timeout_s: float | None = None) -> Any:
        """Run ``task`` for the app and return what it returns.

        A model task runs its model in this thread and returns the outputs dict (it is
        not time-limited: ``timeout_s`` applies to entry tasks). An entry task runs in the
        pool within ``timeout_s`` (default: its ``resources.timeout_ms``), including any
        wait for a free slot. Raises :class:`TaskNotInstalled`, :class:`InvalidModelInput`,
        :class:`TaskTimeout` or :class:`TaskFailed`.
        """
        version = self._active.get(task)
        if version is not None:
            model = version.direct
            if model is not None:
                try:
                    return model.run(inputs)
                except InvalidModelInput:
                    raise
                except Exception as exc:
                    raise self._failed(version, exc) from exc
        return self._predict(task, version, inputs, timeout_s)

    def fire(self, task: str, matched_events: Iterable[Any]) -> bool:
        """Start ``task``'s entry with the events that matched its trigger as ``inputs``,
        in the pool, now. Returns whether it started: False for a task not installed or
        without an entry, and when the task is at ``max_concurrency`` (counted as
        skipped). Never raises; the call's failure or time-out is recorded."""
        version = self._active.get(task)
        if version is None or version.error is not None or version.is_model_task:
            log.warning("trigger for task %r ignored: no runnable entry task of that name", task)
            return False
        return self._launch(version, "event", list(matched_events))

    def start(self) -> None:
        """Run scheduled tasks (every ``trigger.every_s`` seconds, the first run one
        interval from now) until :meth:`stop`."""
        with self._update_lock:
            if not self._timer.start():
                return
            for version in self._active.values():
                self._schedule(version)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop schedules and the pool; calls in progress are cancelled (``ctx.cancelled``,
        their model runs terminated). A later predict or fire starts a new pool."""
        self._timer.stop(timeout_s)
        self._calls.stop()

    # --- plumbing -------------------------------------------------------------------

    def _predict(
        self, task: str, version: _Version | None, inputs: Any, timeout_s: float | None
    ) -> Any:
        if version is None:
            installed = ", ".join(repr(name) for name in sorted(self._active))
            raise TaskNotInstalled(
                f"Task {task!r} is not installed on this device; "
                + (f"installed tasks: {installed}." if installed else "no task is installed yet.")
                + " Deploy it to this device, or wait for the sync (Device.wait_for)."
            )
        version.check_usable()
        assert version.manifest is not None
        if version.is_model_task:
            if len(version.manifest.models) != 1:
                raise TaskFailed(
                    f"{version.label()} has no entry and {len(version.manifest.models)} models; "
                    "a task without an entry must have exactly one model.",
                    task=task,
                    version=version.version,
                )
            try:
                model = version.direct = version.model(version.manifest.models[0].name)
                return model.run(inputs)
            except InvalidModelInput:
                raise
            except Exception as exc:
                raise self._failed(version, exc) from exc
        limit = version.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        call = self._new_call(version, "predict", inputs, deadline)
        if not version.slots.acquire(timeout=limit):
            busy = TaskTimeout(
                f"{version.label()} is at its max_concurrency "
                f"({version.manifest.resources.max_concurrency}) and no call ended within "
                f"{limit:g} s.",
                task=task,
                version=version.version,
            )
            self._calls.record(version, busy, trigger="predict", timed_out=True)
            raise busy
        future = self._calls.submit(call)
        try:
            error = future.exception(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            timeout = self._calls.timed_out(call, limit)
            if timeout is not None:
                raise timeout from None
            error = future.exception()  # it ended just as the limit passed
        except CancelledError as exc:
            raise TaskFailed(
                f"{version.label()} was cancelled: the runtime stopped.",
                task=task,
                version=version.version,
            ) from exc
        if error is None:
            return future.result()
        if isinstance(error, TaskFailed):
            raise error
        raise TaskFailed(
            f"{version.label()} raised {type(error).__name__}: {error}",
            task=task,
            version=version.version,
        ) from error

    def _launch(self, version: _Version, trigger: Trigger, inputs: Any) -> bool:
        call = self._new_call(version, trigger, inputs, time.monotonic() + version.timeout_s)
        if not version.slots.acquire(blocking=False):
            log.info("%s skipped a %s run: at max_concurrency", version.label(), trigger)
            self._calls.skipped(version)
            return False
        try:
            self._calls.submit(call)
        except Exception as exc:  # the pool is shutting down
            log.warning("%s could not start: %s", version.label(), exc)
            return False  # submit gave the slot back
        self._timer.push(call.deadline, call)
        return True

    def _new_call(self, version: _Version, trigger: Trigger, inputs: Any, deadline: float) -> _Call:
        ctx = TaskContext(
            version, trigger, features=self._features, run_options=self.runner.run_options()
        )
        return _Call(version, ctx, inputs, deadline)

    def _failed(self, version: _Version, error: Exception) -> TaskFailed:
        self._calls.record(version, error, trigger="predict")
        return TaskFailed(
            f"{version.label()} raised {type(error).__name__}: {error}",
            task=version.name,
            version=version.version,
        )

    # --- the timer: schedules and the deadlines of calls no app thread waits for ----

    def _schedule(self, version: _Version, due: float | None = None) -> None:
        every = version.every_s
        if every is not None and version.error is None:
            self._timer.push(
                time.monotonic() + every if due is None else due, version, scheduled=True
            )

    def _due(self, item: _Call | _Version, due: float) -> None:
        if isinstance(item, _Call):
            self._calls.timed_out(item, item.version.timeout_s)  # recorded, raised nowhere
        else:
            self._scheduled(item, due)

    def _scheduled(self, version: _Version, due: float) -> None:
        if not self._timer.started or self._active.get(version.name) is not version:
            return  # stopped, or a newer version took over (with its own schedule)
        self._launch(version, "schedule", None)
        every = version.every_s or 1
        now = time.monotonic()
        # Keep the cadence; after a stall (a suspended app), skip the missed runs.
        self._schedule(version, due + every if due + every > now else now + every)
