"""What a task call sees and leaves behind: its context, its outputs, its failures, its stats.

:class:`TaskContext` is the ``ctx`` of ``run(ctx, inputs)``. A call that returns hands its
emitted values on as a :class:`TaskOutput`; one that raises or runs past its limit is
reported as a :class:`TaskFailure`; :class:`TaskStats` counts both per task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from device_sdk._runner import LoadedModel

if TYPE_CHECKING:
    from device_sdk._task_loader import _Version

Trigger = Literal["predict", "schedule", "event"]
FailureKind = Literal["exception", "timeout"]


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


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """One task call that raised (``kind="exception"``) or ran past its time limit
    (``kind="timeout"``), as the runtime's ``on_failure`` callbacks get it.

    ``error`` is what the task raised (or the :class:`TaskTimeout`); ``trigger`` says why
    the call ran; ``ts`` is when it failed, in seconds since the epoch.
    """

    task: str
    version: int | None
    kind: FailureKind
    error: BaseException
    trigger: Trigger
    ts: float


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
