"""Interpreter settings for a serving process, applied while the app runs.

- **Thread switch interval.** Database calls, onnxruntime runs and the status writer end
  in worker threads that must take the GIL back to hand over their result, and the event
  loop must take it back after each socket write. At CPython's default 5 ms interval one
  side can keep the other waiting that long: under a release or a burst of inference
  requests that convoy, not the work, sets the latency. Every hand-off here is short, so
  0.5 ms costs little.
- **Garbage collection.** What exists after start-up (modules, the app, its caches) lives
  as long as the process; left to the collector, every full collection walks all of it
  while each request in flight waits (pauses of tens of milliseconds). It is frozen out of
  the collector's view, and the young generation, which every request fills with a few
  dozen short-lived objects, is collected every 20,000 allocations instead of 700.

Both are process-wide, so they are restored when the app stops: another app in the same
process (tests) gets the interpreter back as it was.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLD = (20_000, 50, 100)


@contextmanager
def tuned_for_serving() -> Iterator[None]:
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*threshold)
        gc.unfreeze()
