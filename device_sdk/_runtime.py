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

Trust: code and models are loaded only from task version directories under ``tasks_dir``,
which the installer writes after the bundle's signature, digest and files verified.
Loading checks each file once more against the digest in the installed manifest and runs
the bytes it checked (no bytecode cache is read or written), so a file changed on disk
after install is refused rather than run.

Python cannot stop a thread. A call past its limit is given up: the caller gets
:class:`TaskTimeout`, the call's model runs are terminated through onnxruntime's
``RunOptions.terminate``, and ``ctx.cancelled`` turns True; its concurrency slot stays
taken until its code returns, so a task that never returns holds at most its own
``max_concurrency`` workers of the pool.
"""

from __future__ import annotations

import hashlib
import heapq
import importlib.util
import itertools
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from device_sdk._errors import (
    InvalidBundle,
    InvalidModelInput,
    TaskFailed,
    TaskNotInstalled,
    TaskTimeout,
    UnknownModel,
)
from device_sdk._runner import LoadedModel, ModelRunner
from device_sdk.wire import MANIFEST_NAME, TaskManifest, TriggerKind

log = logging.getLogger("device_sdk.runtime")

Trigger = Literal["predict", "schedule", "event"]
_module_ids = itertools.count(1)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """What one call of a task emitted with ``ctx.emit(name, value)``, in order."""

    task: str
    version: int
    trigger: Trigger
    values: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class TaskStats:
    """A task's record on this device since the runtime was made.

    ``runs`` counts entry calls that returned, ``failures`` calls that raised (model tasks
    included; bad inputs from the app are not the task's failure), ``timeouts`` calls past
    their time limit, ``skipped`` scheduled or triggered calls not started because the
    task was at ``max_concurrency``. ``last_error`` is the latest failure or time-out.
    """

    task: str
    version: int | None
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    skipped: int = 0
    last_error: BaseException | None = None
    last_error_at: datetime | None = None


@dataclass(slots=True)
class _Counters:
    version: int | None = None
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    skipped: int = 0
    last_error: BaseException | None = None
    last_error_at: datetime | None = None

    def failed(self, error: BaseException, *, timed_out: bool = False) -> None:
        if timed_out:
            self.timeouts += 1
        else:
            self.failures += 1
        self.last_error = error
        self.last_error_at = datetime.now(UTC)

    def snapshot(self, task: str) -> TaskStats:
        return TaskStats(
            task,
            self.version,
            self.runs,
            self.failures,
            self.timeouts,
            self.skipped,
            self.last_error,
            self.last_error_at,
        )


class TaskContext:
    """What a task's ``run(ctx, inputs)`` gets.

    - ``ctx.model(name)``: the model ``name`` of the task's manifest, ready to run:
      ``ctx.model("ranker").run({"x": array})`` returns a dict of outputs. Sessions are
      shared across calls and tasks; see :class:`LoadedModel`.
    - ``ctx.features``: a read-only mapping of feature values. It is whatever mapping the
      runtime was given (``TaskRuntime(features=...)``), empty until the pipelines feed it.
    - ``ctx.emit(name, value)``: an output of this call; the call's outputs go to every
      ``on_output`` callback once the call returns (not when it fails or times out).
    - ``ctx.log``: a ``logging.Logger`` named ``device_sdk.task.<task>``.
    - ``ctx.trigger``: why it runs, ``"predict"``, ``"schedule"`` or ``"event"``; the
      ``inputs`` are the app's for predict, the matched events for event, None on schedule.
    - ``ctx.cancelled``: True once the call ran past its time limit or the runtime stopped.
      Model runs of a cancelled call stop with an error; long loops should check it.
    """

    __slots__ = (
        "_cancelled",
        "_emitted",
        "_models",
        "_run_options",
        "_version",
        "features",
        "log",
        "task",
        "trigger",
        "version",
    )

    def __init__(
        self,
        version: _Version,
        trigger: Trigger,
        *,
        features: Mapping[str, Any],
        run_options: Any,
    ) -> None:
        self.task = version.name
        self.version = version.version
        self.trigger = trigger
        self.features = features
        self.log = logging.getLogger(f"device_sdk.task.{version.name}")
        self._version = version
        self._run_options = run_options
        self._models: dict[str, LoadedModel] = {}
        self._emitted: list[tuple[str, Any]] = []
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether this call was given up: past its time limit, or the runtime stopped."""
        return self._cancelled

    def model(self, name: str) -> LoadedModel:
        """The task's model ``name``, loaded on first use; raises :class:`UnknownModel`."""
        model = self._models.get(name)
        if model is None:
            model = self._version.model(name).with_run_options(self._run_options)
            self._models[name] = model
        return model

    def emit(self, name: str, value: Any) -> None:
        """Add an output of this call; ignored once the call is cancelled."""
        if not self._cancelled:
            self._emitted.append((name, value))

    def _cancel(self) -> None:
        self._cancelled = True
        self._run_options.terminate = True


class _Version:
    """One installed task version as the runtime holds it: manifest, models, entry."""

    def __init__(
        self, name: str, path: Path, manifest: TaskManifest | None, runner: ModelRunner
    ) -> None:
        self.name = name
        self.path = path
        self.manifest = manifest
        self.error: Exception | None = None
        self.version = manifest.version if manifest is not None else None
        resources = manifest.resources if manifest is not None else None
        self.timeout_s = resources.timeout_ms / 1000 if resources is not None else 1.0
        self.slots = threading.BoundedSemaphore(resources.max_concurrency if resources else 1)
        self.direct: LoadedModel | None = None  # set after a model task's first call
        self._runner = runner
        self._models: dict[str, LoadedModel] = {}
        self._entry: Callable[[TaskContext, Any], Any] | None = None
        self._entry_error: BaseException | None = None
        self._module: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, name: str, path: Path, tasks_dir: Path, runner: ModelRunner) -> _Version:
        """Read the installed manifest of ``path``; a version that cannot be used carries
        the reason in ``error`` (and fails each call with it)."""
        try:
            if not path.resolve().is_relative_to(tasks_dir.resolve()):
                raise InvalidBundle(
                    f"{path} is not under the device's task directory {tasks_dir}; "
                    "only installed, verified bundles run."
                )
            manifest = TaskManifest.model_validate_json((path / MANIFEST_NAME).read_bytes())
            if manifest.name != name:
                raise InvalidBundle(f"{path} holds task {manifest.name!r}, not {name!r}.")
        except Exception as exc:  # a broken install must not stop the other tasks
            broken = cls(name, path, None, runner)
            broken.error = exc
            return broken
        return cls(name, path, manifest, runner)

    @property
    def is_model_task(self) -> bool:
        return self.manifest is not None and self.manifest.entry is None

    @property
    def every_s(self) -> int | None:
        if self.manifest is None or self.manifest.entry is None:
            return None
        trigger = self.manifest.trigger
        return trigger.every_s if trigger.kind is TriggerKind.schedule else None

    def digests(self) -> set[str]:
        if self.manifest is None:
            return set()
        files = self.manifest.files
        return {files[m.file].sha256 for m in self.manifest.models if m.file in files}

    def label(self) -> str:
        return f"Task {self.name!r} version {self.version}"

    def check_usable(self) -> None:
        if self.error is not None:
            raise TaskFailed(
                f"Task {self.name!r} at {self.path} cannot run: {self.error}",
                task=self.name,
                version=self.version,
            ) from self.error

    def model(self, name: str) -> LoadedModel:
        model = self._models.get(name)
        if model is not None:
            return model
        assert self.manifest is not None
        refs = {m.name: m.file for m in self.manifest.models}
        if name not in refs:
            known = ", ".join(repr(n) for n in refs) or "none"
            raise UnknownModel(f"{self.label()} has no model {name!r}; its manifest lists {known}.")
        file = refs[name]
        model = self._runner.load(self._file(file), self.manifest.files[file].sha256)
        self._models[name] = model
        return model

    def entry(self) -> Callable[[TaskContext, Any], Any]:
        entry = self._entry
        if entry is not None:
            return entry
        with self._lock:
            if self._entry is None:
                if self._entry_error is not None:
                    raise self._entry_error
                try:
                    self._entry = self._import_entry()
                except BaseException as exc:
                    self._entry_error = exc  # the same verified bytes would fail again
                    raise
            return self._entry

    def unload(self) -> None:
        """Forget the entry module; calls in progress keep what they hold."""
        if self._module is not None:
            sys.modules.pop(self._module, None)

    def _file(self, relative: str) -> Path:
        path = self.path / relative
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise InvalidBundle(f"{self.label()}: {relative} resolves outside {self.path}.")
        return path

    def _import_entry(self) -> Callable[[TaskContext, Any], Any]:
        assert self.manifest is not None and self.manifest.entry is not None
        relative = self.manifest.entry
        path = self._file(relative)
        source = path.read_bytes()
        digest = self.manifest.files.get(relative)
        if digest is None or hashlib.sha256(source).hexdigest() != digest.sha256:
            raise InvalidBundle(
                f"{self.label()}: {path} no longer matches its digest in the signed manifest; "
                "it changed after it was installed. Reinstall the task."
            )
        # A unique name per loaded version: two versions never share module state.
        name = f"tandem_task_{re.sub(r'[^0-9A-Za-z_]', '_', self.name)}_v{self.version}"
        name = f"{name}_{next(_module_ids)}"
        spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__file__ = str(path)
        code = compile(source, str(path), "exec", dont_inherit=True)
        sys.modules[name] = module  # dataclasses, pickle and typing look modules up here
        try:
            # Running a verified task's code is what a task runtime is for.
            exec(code, module.__dict__)  # noqa: S102
        except BaseException:
            sys.modules.pop(name, None)
            raise
        self._module = name
        run = getattr(module, "run", None)
        if not callable(run):
            raise InvalidBundle(f"{self.label()}: {relative} defines no run(ctx, inputs).")
        entry: Callable[[TaskContext, Any], Any] = run
        return entry


class _Call:
    __slots__ = ("ctx", "deadline", "inputs", "settled", "version")

    def __init__(self, version: _Version, ctx: TaskContext, inputs: Any, deadline: float) -> None:
        self.version = version
        self.ctx = ctx
        self.inputs = inputs
        self.deadline = deadline
        self.settled = False


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
        self._max_workers = max_workers
        self._features: Mapping[str, Any] = (
            MappingProxyType(features) if isinstance(features, dict) else features or _EMPTY
        )
        self._on_change = on_change or (lambda: None)
        # Replaced whole on update, never mutated: predict reads it without a lock.
        self._active: dict[str, _Version] = {}
        self._lock = threading.Lock()  # stats, calls, pool
        self._update_lock = threading.Lock()
        self._stats: dict[str, _Counters] = {}
        self._calls: set[_Call] = set()
        self._listeners: tuple[Callable[[TaskOutput], None], ...] = ()
        self._pool: ThreadPoolExecutor | None = None
        self._started = False
        self._timer = threading.Condition()
        self._timer_heap: list[tuple[float, int, _Call | _Version]] = []
        self._timer_seq = itertools.count()
        self._timer_thread: threading.Thread | None = None

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
            with self._lock:
                for version in added:
                    stats = self._stats.setdefault(version.name, _Counters())
                    stats.version = version.version
                    if version.error is not None:
                        log.error("%s cannot run: %s", version.label(), version.error)
                        stats.failed(version.error)
                for version in dropped:
                    if version.name not in fresh:
                        self._stats.pop(version.name, None)
            for version in added:
                self._schedule(version)
        for version in added:
            log.info("%s loaded from %s", version.label(), version.path)
        return True

    def versions(self) -> dict[str, int | None]:
        """``{task: version}`` of what runs now."""
        return {name: v.version for name, v in self._active.items()}

    def stats(self) -> dict[str, TaskStats]:
        """Each active task's :class:`TaskStats`."""
        with self._lock:
            return {name: stats.snapshot(name) for name, stats in self._stats.items()}

    def on_output(self, callback: Callable[[TaskOutput], None]) -> None:
        """Call ``callback`` with the :class:`TaskOutput` of every call that emitted
        something, from the worker thread, after the call returned. Exceptions it raises
        are logged and ignored."""
        with self._lock:
            self._listeners = (*self._listeners, callback)

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
            with self._timer:
                if self._started:
                    return
                self._started = True
            for version in self._active.values():
                self._schedule(version)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop schedules and the pool; calls in progress are cancelled (``ctx.cancelled``,
        their model runs terminated). A later predict or fire starts a new pool."""
        with self._timer:
            self._started = False
            self._timer_heap.clear()
            thread, self._timer_thread = self._timer_thread, None
            self._timer.notify_all()
        if thread is not None:
            thread.join(timeout_s)
        with self._lock:
            pool, self._pool = self._pool, None
            calls = list(self._calls)
        for call in calls:
            call.ctx._cancel()
        if pool is not None:
            pool.shutdown(wait=False)

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
            self._record(version, busy, timed_out=True)
            raise busy
        future = self._submit(call)
        try:
            error = future.exception(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            timeout = self._timed_out(call, limit)
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
            with self._lock:
                stats = self._stats.get(version.name)
                if stats is not None:
                    stats.skipped += 1
            log.info("%s skipped a %s run: at max_concurrency", version.label(), trigger)
            self._on_change()
            return False
        try:
            self._submit(call)
        except Exception as exc:  # the pool is shutting down
            log.warning("%s could not start: %s", version.label(), exc)
            return False  # _submit gave the slot back
        self._timer_push(call.deadline, call)
        return True

    def _new_call(self, version: _Version, trigger: Trigger, inputs: Any, deadline: float) -> _Call:
        ctx = TaskContext(
            version, trigger, features=self._features, run_options=self.runner.run_options()
        )
        return _Call(version, ctx, inputs, deadline)

    def _submit(self, call: _Call) -> Future[Any]:
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

    def _work(self, call: _Call) -> Any:
        version = call.version
        try:
            if call.ctx.cancelled:
                raise TaskFailed(
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
            for listener in self._listeners:
                try:
                    listener(output)
                except Exception:  # an app callback's bug must not fail the task
                    log.exception("on_output callback failed for %s", version.label())
        return result

    def _settle(self, call: _Call, error: BaseException | None) -> bool:
        """Record the outcome of ``call`` unless one was recorded already (a time-out)."""
        with self._lock:
            if call.settled:
                return False
            call.settled = True
        if error is None:
            self._record(call.version, None)
        else:
            if call.ctx.trigger != "predict":
                log.warning("%s failed on %s: %r", call.version.label(), call.ctx.trigger, error)
            self._record(call.version, error)
        return True

    def _timed_out(self, call: _Call, limit: float) -> TaskTimeout | None:
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
        self._record(version, timeout, timed_out=True)
        return timeout

    def _failed(self, version: _Version, error: Exception) -> TaskFailed:
        self._record(version, error)
        return TaskFailed(
            f"{version.label()} raised {type(error).__name__}: {error}",
            task=version.name,
            version=version.version,
        )

    def _record(
        self, version: _Version, error: BaseException | None, *, timed_out: bool = False
    ) -> None:
        with self._lock:
            stats = self._stats.get(version.name)  # a removed task keeps no record
            if stats is None:
                pass
            elif error is None:
                stats.runs += 1
            else:
                stats.failed(error, timed_out=timed_out)
        self._on_change()

    # --- the timer: schedules and the deadlines of calls no app thread waits for ----

    def _schedule(self, version: _Version, due: float | None = None) -> None:
        every = version.every_s
        if every is not None and version.error is None:
            self._timer_push(time.monotonic() + every if due is None else due, version)

    def _timer_push(self, due: float, item: _Call | _Version) -> None:
        with self._timer:
            if isinstance(item, _Version) and not self._started:
                return  # schedules run only between start() and stop()
            heapq.heappush(self._timer_heap, (due, next(self._timer_seq), item))
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(
                    target=self._timer_loop, name="tandem-task-timer", daemon=True
                )
                self._timer_thread.start()
            self._timer.notify()

    def _timer_loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._timer:
                while self._timer_thread is me:
                    now = time.monotonic()
                    if self._timer_heap and self._timer_heap[0][0] <= now:
                        due, _, item = heapq.heappop(self._timer_heap)
                        break
                    wait = self._timer_heap[0][0] - now if self._timer_heap else None
                    self._timer.wait(wait)
                else:
                    return
            try:
                if isinstance(item, _Call):
                    self._timed_out(item, item.version.timeout_s)  # recorded, raised nowhere
                else:
                    self._scheduled(item, due)
            except Exception:  # the timer must outlive any one task's trouble
                log.exception("task timer")

    def _scheduled(self, version: _Version, due: float) -> None:
        if not self._started or self._active.get(version.name) is not version:
            return  # stopped, or a newer version took over (with its own schedule)
        self._launch(version, "schedule", None)
        every = version.every_s or 1
        now = time.monotonic()
        # Keep the cadence; after a stall (a suspended app), skip the missed runs.
        self._schedule(version, due + every if due + every > now else now + every)
