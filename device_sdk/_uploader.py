"""Uploading the outbox: a background thread that sends it through the :class:`CloudClient`.

The :class:`Uploader` sends one channel per request (the highest-priority channel with
items first), each batch the oldest items of that channel up to ``max_items`` and
``max_bytes``. An item leaves the outbox only after the cloud answered 2xx for its batch,
so a crash or a lost response never loses one: it is sent again with the same key, and
the cloud counts it once. What happens to a batch, by the cloud's answer:

- **2xx**: its items are acknowledged (removed from the outbox).
- **401**: the device was removed. The uploader stops with :class:`DeviceRevoked` in
  ``last_error``; the items stay queued.
- **408, 425, 429, 5xx, or no answer** (network down, timeout): retried with exponential
  backoff and full jitter (1 s doubling up to 5 min). New items do not cut a backoff
  short; :meth:`Uploader.upload_soon` does.
- **413** (body too large): batches are made half as large and the items sent again; an
  item refused alone is dropped.
- **Any other 4xx** (400, 403, 404, 422, ...): the items can never succeed as they are, so
  they are dropped, with a warning, and counted in ``dropped``. A 422 whose details name
  items (``items.3.payload``) drops only those; the rest are sent again. ``put`` checks
  items against the cloud's own limits, so this happens only when the SDK and the cloud
  disagree about the contract (e.g. a channel this cloud does not have yet).

The thread wakes when an item is put through its outbox (after ``linger_s``, so a burst
travels in one request), on :meth:`Uploader.upload_soon`, and every ``interval_s`` (which
also finds items another connection put into the same file).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from device_sdk._backoff import Backoff
from device_sdk._errors import CloudError, DeviceRevoked, UploadRejected
from device_sdk._outbox import Outbox, OutboxItem
from device_sdk.wire import MAX_UPLOAD_ITEMS, UploadAccepted

log = logging.getLogger("device_sdk.uploads")


class _Uploads(Protocol):
    """Where batches go: :meth:`CloudClient.upload`, or a stand-in with its contract."""

    def upload(self, channel: str, items: Sequence[OutboxItem]) -> UploadAccepted: ...


class Uploader:
    """Empties ``outbox`` into the cloud through ``client`` (a :class:`CloudClient` with the
    device's token), in one daemon thread.

    Batches carry up to ``max_items`` items and ``max_bytes`` payload bytes of one channel.
    ``backoff`` paces retries (1 s doubling to 5 min, full jitter, by default). ``on_change``
    is called, from the upload thread, after every batch and every change of state. See
    the module docstring for what each answer of the cloud does to a batch.
    """

    def __init__(
        self,
        outbox: Outbox,
        client: _Uploads,
        *,
        max_items: int = 200,
        max_bytes: int = 1024 * 1024,
        linger_s: float = 0.5,
        interval_s: float = 60.0,
        backoff: Backoff | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if not 1 <= max_items <= MAX_UPLOAD_ITEMS:
            raise ValueError(f"max_items must be within 1..{MAX_UPLOAD_ITEMS}, got {max_items}.")
        if max_bytes < 1 or linger_s < 0 or interval_s <= 0:
            raise ValueError(
                "max_bytes and interval_s must be positive and linger_s not negative, got "
                f"{max_bytes}, {interval_s} and {linger_s}."
            )
        self._outbox = outbox
        self._client = client
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._linger_s = linger_s
        self._interval_s = interval_s
        self._backoff = backoff or Backoff(initial_s=1.0, max_s=300.0)
        self._on_change = on_change or (lambda: None)
        self._stopping = threading.Event()
        self._wake = threading.Event()  # an item was put
        self._nudge = threading.Event()  # upload now, even during a backoff
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self.uploaded = 0
        self.duplicates = 0
        self.dropped = 0
        self.last_error: Exception | None = None

    # --- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the upload thread runs (False after stop() or a revocation)."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def start(self) -> None:
        """Start the upload thread; it first sends whatever an earlier run left queued."""
        if self._thread is not None:
            raise RuntimeError("Uploader.start() was already called; create a new uploader.")
        self._outbox.add_listener(self._wake.set)
        self._thread = threading.Thread(target=self._run, name="tandem-uploads", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it; queued items stay queued."""
        self._stopping.set()
        self._nudge.set()
        self._wake.set()
        self._outbox.remove_listener(self._wake.set)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self._changed()

    def upload_soon(self) -> None:
        """Upload now, cutting short a linger or a backoff (e.g. the network came back)."""
        self._nudge.set()
        self._wake.set()

    def flush(self, timeout_s: float) -> bool:
        """Upload now and wait until the outbox is empty; False if it is not within
        ``timeout_s`` (the cloud is away) or the uploader stopped."""
        deadline = time.monotonic() + timeout_s
        self.upload_soon()
        with self._progress:
            while self._outbox.count():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    return False
                self._progress.wait(min(remaining, 1.0))
        return True

    # --- the upload thread ----------------------------------------------------------

    def _run(self) -> None:
        delay: float | None = 0.0  # at once: an earlier run may have left items queued
        try:
            while not self._stopping.is_set():
                if delay is None:
                    if self._wake.wait(self._interval_s):
                        self._nudge.wait(self._linger_s)  # let a burst of puts coalesce
                elif delay > 0:
                    self._nudge.wait(delay)  # puts do not cut a backoff short
                if self._stopping.is_set():
                    return
                self._wake.clear()
                self._nudge.clear()
                delay = self._pass()
        finally:
            self._changed()

    def _pass(self) -> float | None:
        """Send until the outbox is empty; returns the delay before a retry, or None."""
        try:
            while not self._stopping.is_set() and self._send_one():
                pass
        except DeviceRevoked as exc:
            log.error("uploads stopped: %s", exc)
            self.last_error = exc
            self._stopping.set()
            return None
        except Exception as exc:  # keep uploading whatever went wrong; say what it was
            if self._stopping.is_set():
                return None  # stop() closed the client or the outbox under us
            if isinstance(exc, CloudError):
                log.info("uploads: %s", exc)  # expected weather: the network, a busy cloud
            else:
                log.error("uploads: unexpected error", exc_info=exc)
            self.last_error = exc
            self._changed()
            return self._backoff.next_delay()
        self._backoff.reset()
        self.last_error = None
        self._changed()
        return None

    def _send_one(self) -> bool:
        """Send the next batch and settle it; False when there was nothing to send."""
        for channel in self._outbox.channels():
            items = self._outbox.pending(self.max_items, channel=channel, max_bytes=self.max_bytes)
            if items:
                break
        else:
            return False
        try:
            result = self._client.upload(channel, items)
        except UploadRejected as exc:
            self._rejected(exc, items)
        else:
            self._outbox.ack([i.key for i in items])
            self.uploaded += result.accepted
            self.duplicates += result.duplicates
        self._changed()
        return True

    def _rejected(self, exc: UploadRejected, items: list[OutboxItem]) -> None:
        if exc.status_code == 413 and len(items) > 1:
            self.max_items = max(1, min(self.max_items, len(items)) // 2)
            self.max_bytes = max(1, self.max_bytes // 2)
            log.warning(
                "uploads: the cloud refused a batch of %d items as too large; batches are now "
                "at most %d items and %d bytes",
                len(items),
                self.max_items,
                self.max_bytes,
            )
            return
        doomed = [items[i] for i in exc.rejected] if exc.rejected else items
        self.dropped += self._outbox.drop([i.key for i in doomed])
        log.warning("uploads: dropped %d of %d items: %s", len(doomed), len(items), exc)

    def _changed(self) -> None:
        with self._progress:
            self._progress.notify_all()
        self._on_change()
