"""Reporting task failures to the cloud: compact, rate-limited ``task_errors`` uploads.

The device hands every :class:`TaskFailure` of its runtime to a
:class:`TaskErrorReporter`, which queues a :class:`~device_sdk.wire.TaskErrorReport` on
the outbox. A task failing in a loop (a schedule every second, a trigger on every event)
must not flood the outbox, so each (task, version, kind) is reported at most once per
``interval_s``: the failures in between are counted, and the count goes out as
``suppressed`` with the next report of that key. A count still held when the process ends
is not sent: reports are a signal, ``Device.status()`` keeps the exact numbers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from device_sdk._task_context import TaskFailure
from device_sdk.wire import MAX_ERROR_MESSAGE_CHARS, TaskErrorReport, UploadChannel

log = logging.getLogger("device_sdk.task_errors")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_Key = tuple[str, int | None, str]


def task_error_report(failure: TaskFailure, *, suppressed: int = 0) -> TaskErrorReport:
    """The compact report of ``failure``: the error's type and its message, cut to
    ``MAX_ERROR_MESSAGE_CHARS`` (control characters replaced), never its traceback."""
    message = _CONTROL.sub("?", str(failure.error))
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    return TaskErrorReport(
        task=failure.task,
        version=failure.version,
        kind=failure.kind,
        error_type=type(failure.error).__qualname__[:200],
        message=message,
        trigger=failure.trigger,
        ts=failure.ts,
        suppressed=suppressed,
    )


class TaskErrorReporter:
    """An ``on_failure`` callback that queues reports through ``queue(channel, payload)``
    (``Device.queue``), at most one per (task, version, kind) every ``interval_s`` seconds.

    ``sent`` counts reports queued, ``suppressed`` failures held back by the rate limit.
    A ``queue`` that raises (the outbox is full, the disk is) is logged, never raised: the
    failure is then counted for the next report. The limiter remembers at most
    ``max_keys`` keys; past that, keys with nothing held back are forgotten first.
    """

    def __init__(
        self,
        queue: Callable[[str, dict[str, Any]], object],
        *,
        interval_s: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be 0 or more, got {interval_s}.")
        self._queue = queue
        self.interval_s = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (when its last report was queued, failures held back since)
        self._limits: dict[_Key, tuple[float, int]] = {}
        self.sent = 0
        self.suppressed = 0

    def __call__(self, failure: TaskFailure) -> None:
        """Queue a report of ``failure`` unless its key was reported within ``interval_s``."""
        key: _Key = (failure.task, failure.version, failure.kind)
        now = self._clock()
        with self._lock:
            last, held = self._limits.get(key, (None, 0))
            if last is not None and now - last < self.interval_s:
                self._limits[key] = (last, held + 1)
                self.suppressed += 1
                return
            self._limits[key] = (now, 0)  # claimed: concurrent failures count as held back
            self._prune(now)
        try:
            report = task_error_report(failure, suppressed=held)
            self._queue(UploadChannel.task_errors.value, report.model_dump(mode="json"))
        except Exception as exc:  # reporting must never fail the task or the app
            log.warning("could not queue a task error report for %r: %r", failure.task, exc)
            with self._lock:
                _, since = self._limits.get(key, (now, 0))
                self._limits[key] = (now, since + held + 1)
            return
        with self._lock:
            self.sent += 1

    def _prune(self, now: float) -> None:
        if len(self._limits) <= self._max_keys:
            return
        for key, (last, held) in list(self._limits.items()):
            if held == 0 and now - last >= self.interval_s:
                del self._limits[key]
        while len(self._limits) > self._max_keys:
            del self._limits[next(iter(self._limits))]  # the oldest key first
