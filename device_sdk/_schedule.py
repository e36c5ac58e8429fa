"""The task runtime's timer: one thread that fires items when they fall due.

The runtime puts two kinds of items on it: the next run of a scheduled task, and the
deadline of a call no app thread waits for (a scheduled or triggered call), which the
timer gives up when it passes. Scheduled items are accepted only between :meth:`start` and
:meth:`stop`; deadlines at any time. The thread starts with the first item and ends on
:meth:`stop`; a later item starts a new one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("device_sdk.runtime")

T = TypeVar("T")


class _Timer(Generic[T]):
    """Calls ``fire(item, due)`` from its thread once ``due`` (``time.monotonic``) passed.

    ``fire`` must not block for long: it delays every later item. An exception it raises
    is logged and the timer goes on.
    """

    def __init__(self, fire: Callable[[T, float], None], *, name: str) -> None:
        self._fire = fire
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, T]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._started = False

    @property
    def started(self) -> bool:
        """Whether scheduled items are accepted (between start and stop)."""
        return self._started

    def start(self) -> bool:
        """Accept scheduled items from now on; returns False if already started."""
        with self._cond:
            if self._started:
                return False
            self._started = True
            return True

    def push(self, due: float, item: T, *, scheduled: bool = False) -> None:
        """Fire ``item`` at ``due``; a ``scheduled`` item is dropped unless started."""
        with self._cond:
            if scheduled and not self._started:
                return
            heapq.heappush(self._heap, (due, next(self._seq), item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def stop(self, timeout_s: float) -> None:
        """Drop every pending item and end the thread (waiting up to ``timeout_s``)."""
        with self._cond:
            self._started = False
            self._heap.clear()
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while self._thread is me:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        due, _, item = heapq.heappop(self._heap)
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                else:
                    return
            try:
                self._fire(item, due)
            except Exception:  # the timer must outlive any one task's trouble
                log.exception("task timer")
