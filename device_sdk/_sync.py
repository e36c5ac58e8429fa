"""The device half of push-then-pull, in the background: a stream listener and a reconciler.

The listener keeps ``GET /v1/devices/me/stream`` open, reconnecting with jittered
exponential backoff, and wakes the reconciler when the cloud says the desired state
changed and after every (re)connect. The reconciler runs a pass (see ``_reconcile``) on
each wake-up, and at a long, jittered fallback interval, so a lost nudge only delays a
release. Idle, a device costs one open stream and its heartbeats, nothing more.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError

from device_sdk._backoff import Backoff
from device_sdk._client import CloudClient
from device_sdk._errors import CloudError, DeviceRevoked
from device_sdk._event_stream import EventStream
from device_sdk._reconcile import Reconciler
from device_sdk._store import DeviceStore
from device_sdk.wire import Nudge

log = logging.getLogger("device_sdk.sync")


class SyncAgent:
    """Keeps the installed tasks equal to the cloud's desired state, in two daemon threads.

    ``fallback_interval_s`` bounds how long a missed nudge can delay a release (jittered by
    10%). A pass that could not reach the cloud is retried with backoff (1 s doubling to
    5 min). ``on_change`` is called, from a sync thread, whenever the connection or the
    installed tasks may have changed. A 401 stops both threads with :class:`DeviceRevoked`
    in ``last_error``.
    """

    def __init__(
        self,
        client: CloudClient,
        store: DeviceStore,
        reconciler: Reconciler,
        *,
        fallback_interval_s: float = 21600.0,
        healthy_after_s: float = 30.0,
        settle_s: float = 0.2,
        stream_backoff: Backoff | None = None,
        retry_backoff: Backoff | None = None,
        uniform: Callable[[float, float], float] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._reconciler = reconciler
        self._fallback_s = fallback_interval_s
        self._healthy_after_s = healthy_after_s
        self._settle_s = settle_s
        # Jitter needs no cryptographic randomness: it only spreads a fleet's requests.
        self._uniform = uniform or random.uniform
        self._stream_backoff = stream_backoff or Backoff(uniform=self._uniform)
        self._retry_backoff = retry_backoff or Backoff(
            initial_s=1.0, max_s=300.0, uniform=self._uniform
        )
        self._on_change = on_change or (lambda: None)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._stream: EventStream | None = None
        self._threads: list[threading.Thread] = []
        self._alive = 0
        self._seen_rev: int | None = None
        self.stream_connected = False
        self.last_error: Exception | None = None

    # --- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the sync threads are running (False after stop() or a revocation)."""
        with self._lock:
            return self._alive > 0 and not self._stopping.is_set()

    def start(self) -> None:
        """Start the listener and reconciler threads."""
        if self._threads:
            raise RuntimeError("SyncAgent.start() was already called; create a new agent.")
        self._threads = [
            threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
            for work, name in [
                (self._listen, "tandem-sync-stream"),
                (self._reconcile_loop, "tandem-sync"),
            ]
        ]
        self._alive = len(self._threads)
        for thread in self._threads:
            thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        finally:
            with self._lock:
                self._alive -= 1
            self._on_change()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop both threads and wait up to ``timeout_s`` for them to end."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._on_change()

    def reconcile_soon(self) -> None:
        """Ask the reconciler to run now (e.g. the app knows the network came back)."""
        self._wake.set()

    # --- the stream listener --------------------------------------------------------

    def _listen(self) -> None:
        while not self._stopping.is_set():
            cached = self._store.cached_desired()
            last_id = None if cached is None else str(cached.state.rev)
            try:
                stream = self._client.stream(last_event_id=last_id)
            except DeviceRevoked as exc:
                self._revoked(exc)
                return
            except Exception as exc:  # keep listening whatever went wrong; say what it was
                if self._stopping.is_set():
                    return  # stop() closed the client under us
                self._trouble(exc)
                self._stopping.wait(self._stream_backoff.next_delay())
                continue
            connected_at = time.monotonic()
            with self._lock:
                self._stream = stream
            if self._stopping.is_set():
                stream.close()
            self._set_connected(True)
            self._wake.set()  # reconcile after every (re)connect: a nudge may have been missed
            try:
                for event in stream:
                    if time.monotonic() - connected_at >= self._healthy_after_s:
                        self._stream_backoff.reset()
                    if event.event == "desired":
                        self._nudged(event.data)
            except Exception as exc:
                if not self._stopping.is_set():
                    self._trouble(exc)
            finally:
                with self._lock:
                    self._stream = None
                self._set_connected(False)
            if time.monotonic() - connected_at >= self._healthy_after_s:
                self._stream_backoff.reset()
            self._stopping.wait(self._stream_backoff.next_delay())

    def _nudged(self, data: str) -> None:
        try:
            rev = Nudge.model_validate_json(data).desired_rev
        except ValidationError:
            rev = None  # an unreadable nudge is still a nudge
        if rev is None or rev != self._seen_rev:
            self._wake.set()

    # --- the reconciler -------------------------------------------------------------

    def _reconcile_loop(self) -> None:
        delay: float | None = None
        while not self._stopping.is_set():
            fallback = self._fallback_s * (1.0 + self._uniform(-0.1, 0.1))
            # At least a second between passes, whatever a retry asks; never past the fallback.
            delay = fallback if delay is None else min(max(delay, 1.0), fallback)
            if self._wake.wait(delay):
                self._stopping.wait(self._settle_s)  # let a burst of signals coalesce
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                outcome = self._reconciler.reconcile()
                self._seen_rev = outcome.rev
                self.last_error = outcome.failure
                delay = outcome.retry_in_s
                self._retry_backoff.reset()
            except DeviceRevoked as exc:
                self._revoked(exc)
                return
            except Exception as exc:  # keep syncing whatever went wrong; say what it was
                if self._stopping.is_set():
                    return  # stop() closed the client or the store under us
                self._trouble(exc)
                delay = self._retry_backoff.next_delay()
            self._on_change()

    # --- shared state ---------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        self.stream_connected = connected
        self._on_change()

    def _trouble(self, exc: Exception) -> None:
        if isinstance(exc, CloudError):
            log.info("sync: %s", exc)  # expected weather: the network, a restarting cloud
        else:
            log.error("sync: unexpected error", exc_info=exc)
        self.last_error = exc
        self._on_change()

    def _revoked(self, exc: DeviceRevoked) -> None:
        log.error("sync stopped: %s", exc)
        self.last_error = exc
        self._stopping.set()
        self._wake.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        self._on_change()
