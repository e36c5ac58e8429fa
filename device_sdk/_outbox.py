"""The outbox: items waiting for upload, kept in the device's SQLite file until the cloud has them.

:meth:`Outbox.put` commits the item before it returns (write-ahead log,
``synchronous=FULL``), so an item ``put`` accepted survives ``kill -9`` and power loss.
Every item gets a uuid4 idempotency key; the cloud stores one item per key and device, so
an item sent twice (its first response was lost) is counted once. Items leave the outbox
only through :meth:`Outbox.ack` (the cloud has them) or :meth:`Outbox.drop` (it never will).

Size cap and eviction order
---------------------------
The outbox holds at most ``max_bytes`` of payload (16 MiB unless configured; a payload is
measured as the compact UTF-8 JSON that is uploaded; SQLite's page overhead comes on top).
Each channel has a priority (``channels``; a higher number is kept longer). When a ``put``
would pass the cap, items are evicted until the new one fits, in this order:

1. items of the lowest priority present, oldest first;
2. then those of the next priority up, oldest first, and so on up to the new item's
   priority, never beyond: an item never evicts one of a higher priority. If only such
   items could make room, ``put`` raises :class:`OutboxFull` and nothing is evicted.

So a channel that overflows keeps its newest items, and a low-priority channel never pushes
out a high-priority one. Evictions are logged as warnings and counted in ``evicted``.
The uploader sends the highest-priority channel first, oldest items first.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from device_sdk._errors import InvalidPayload, OutboxFull
from device_sdk._sqlite_tx import _write_transaction
from device_sdk._store import DeviceStore
from device_sdk.wire import MAX_UPLOAD_PAYLOAD_BYTES, UploadChannel, payload_json

log = logging.getLogger("device_sdk.outbox")

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_CHANNELS: Mapping[str, int] = MappingProxyType({c.value: 0 for c in UploadChannel})

# (sizes, items) queries for pending(): over all channels, and over one channel.
_PENDING = {
    False: (
        "SELECT size FROM outbox ORDER BY seq LIMIT ?",
        "SELECT key, channel, payload, size, created_at FROM outbox ORDER BY seq LIMIT ?",
    ),
    True: (
        "SELECT size FROM outbox WHERE channel = ? ORDER BY seq LIMIT ?",
        "SELECT key, channel, payload, size, created_at FROM outbox WHERE channel = ? "
        "ORDER BY seq LIMIT ?",
    ),
}


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued item: its idempotency ``key``, ``channel``, and the payload as the compact
    JSON text that is uploaded (``payload_json``; ``size`` is its length in UTF-8 bytes)."""

    key: str
    channel: str
    payload_json: str
    size: int
    created_at: datetime

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as a dict (parsed from ``payload_json``)."""
        value: dict[str, Any] = json.loads(self.payload_json)
        return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _encode_payload(payload: dict[str, Any] | bytes) -> bytes:
    """The compact UTF-8 JSON of ``payload`` (a dict, or the UTF-8 JSON text of an object).

    Raises :class:`InvalidPayload` for anything the cloud would refuse: not a JSON object,
    NaN or Infinity, or over ``MAX_UPLOAD_PAYLOAD_BYTES``.
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            value = json.loads(bytes(payload), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise InvalidPayload(
                f"The payload bytes are not UTF-8 JSON ({exc}); pass a dict, or the JSON "
                "text of an object."
            ) from exc
    else:
        value = payload
    if not isinstance(value, dict):
        raise InvalidPayload(
            f"A payload must be a JSON object (a dict), not {type(value).__name__}; wrap it, "
            'e.g. {"value": ...}.'
        )
    try:
        data = payload_json(value)
    except ValueError as exc:
        raise InvalidPayload(
            f"The payload cannot be sent as JSON: {exc}; use str, int, float (finite), bool, "
            "None, list and dict with str keys."
        ) from exc
    if len(data) > MAX_UPLOAD_PAYLOAD_BYTES:
        raise InvalidPayload(
            f"The payload is {len(data)} bytes as compact JSON; the cloud accepts at most "
            f"{MAX_UPLOAD_PAYLOAD_BYTES}. Split it into several items."
        )
    return data


class Outbox:
    """Items to upload, kept in the SQLite file of ``store`` (whose migrations made the
    outbox's tables).

    ``max_bytes`` caps the payload bytes held. ``channels`` names the channels items may be
    put on, each with its priority (a higher number is kept longer and uploaded first); by
    default every :class:`UploadChannel`, all at priority 0. The outbox has its own
    connection, so ``put`` from the app's threads never waits on the sync's use of the
    store. Safe to share between threads; ``close()`` when done.
    """

    def __init__(
        self,
        store: DeviceStore,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        channels: Mapping[str, int] = DEFAULT_CHANNELS,
    ) -> None:
        if max_bytes < MAX_UPLOAD_PAYLOAD_BYTES:
            raise ValueError(
                f"max_bytes must hold at least one largest payload ({MAX_UPLOAD_PAYLOAD_BYTES} "
                f"bytes), got {max_bytes}."
            )
        if not channels:
            raise ValueError("channels must name at least one channel.")
        self.max_bytes = max_bytes
        self._priorities = dict(channels)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.evicted = 0
        self.dropped = 0
        # isolation_level=None: transactions are begun and ended explicitly below.
        self._db = sqlite3.connect(
            store.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        """Close the connection; the outbox cannot be used afterwards."""
        with self._lock:
            self._db.close()

    # --- writing --------------------------------------------------------------------

    def put(self, channel: str, payload: dict[str, Any] | bytes) -> str:
        """Queue ``payload`` on ``channel``; returns its idempotency key once it is durable.

        ``payload`` is a dict, or the UTF-8 JSON text of an object. Raises
        :class:`InvalidPayload` for an unknown channel or a payload the cloud would refuse,
        and :class:`OutboxFull` when room could only be made by evicting items of a higher
        priority (see the module's eviction order).
        """
        return self.put_many(channel, [payload])[0]

    def put_many(self, channel: str, payloads: Sequence[dict[str, Any] | bytes]) -> list[str]:
        """Queue several payloads on ``channel`` in one transaction (one disk flush);
        all or none are stored. Returns their keys, in order."""
        priority = self._priority(channel)
        encoded = [_encode_payload(p) for p in payloads]
        needed = sum(len(e) for e in encoded)
        if needed > self.max_bytes:
            raise OutboxFull(
                f"{len(encoded)} payloads of {needed} bytes exceed the outbox cap of "
                f"{self.max_bytes} bytes; queue fewer at once, or raise max_bytes."
            )
        if not encoded:
            return []
        keys = [str(uuid.uuid4()) for _ in encoded]
        now = datetime.now(UTC).isoformat()
        with self._transaction() as db:
            evicted = self._make_room(db, channel, priority, needed)
            db.executemany(
                "INSERT INTO outbox (key, channel, priority, payload, size, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (key, channel, priority, data.decode(), len(data), now)
                    for key, data in zip(keys, encoded, strict=True)
                ],
            )
            self.evicted += evicted
        if evicted:
            log.warning(
                "outbox: at its cap of %d bytes; evicted the %d oldest lowest-priority items",
                self.max_bytes,
                evicted,
            )
        for listener in list(self._listeners):
            listener()
        return keys

    def _make_room(self, db: sqlite3.Connection, channel: str, priority: int, needed: int) -> int:
        used: int = db.execute("SELECT bytes FROM outbox_size").fetchone()[0]
        excess = used + needed - self.max_bytes
        if excess <= 0:
            return 0
        victims: list[tuple[int]] = []
        freed = 0
        # The cursor stops as soon as enough is freed: no scan of the whole outbox.
        for seq, size in db.execute(
            "SELECT seq, size FROM outbox WHERE priority <= ? ORDER BY priority, seq",
            (priority,),
        ):
            victims.append((seq,))
            freed += size
            if freed >= excess:
                break
        else:
            raise OutboxFull(
                f"The outbox is at its cap of {self.max_bytes} bytes, and room for this "
                f"{channel!r} item could only come from channels of a higher priority; it was "
                "not stored. Raise max_bytes, give that channel a higher priority, or let the "
                "uploader catch up."
            )
        db.executemany("DELETE FROM outbox WHERE seq = ?", victims)
        return len(victims)

    def ack(self, keys: Sequence[str]) -> int:
        """Remove items the cloud has stored; returns how many were still queued."""
        return self._delete(keys, dropped=False)

    def drop(self, keys: Sequence[str]) -> int:
        """Remove items the cloud will never accept; counted in ``dropped``."""
        return self._delete(keys, dropped=True)

    def _delete(self, keys: Sequence[str], *, dropped: bool) -> int:
        with self._transaction() as db:
            # executemany's rowcount sums the rows each statement deleted.
            removed = db.executemany(
                "DELETE FROM outbox WHERE key = ?", [(k,) for k in keys]
            ).rowcount
            if dropped:
                self.dropped += removed
        return removed

    # --- reading --------------------------------------------------------------------

    def pending(
        self, limit: int = 100, *, channel: str | None = None, max_bytes: int | None = None
    ) -> list[OutboxItem]:
        """The oldest items (of ``channel`` only, if given): at most ``limit`` of them, and
        no more than ``max_bytes`` of payload unless the first alone is larger."""
        if limit < 1:
            return []
        sizes_sql, items_sql = _PENDING[channel is not None]
        parameters: list[object] = [] if channel is None else [channel]
        with self._reading() as db:
            count = limit
            if max_bytes is not None:
                count, total = 0, 0
                for (size,) in db.execute(sizes_sql, [*parameters, limit]):
                    if count and total + size > max_bytes:
                        break
                    count, total = count + 1, total + size
            rows = db.execute(items_sql, [*parameters, count]).fetchall()
        return [
            OutboxItem(key, channel, payload, size, datetime.fromisoformat(created))
            for key, channel, payload, size, created in rows
        ]

    def channels(self) -> list[str]:
        """The channels with queued items, in upload order: highest priority first."""
        order = sorted(self._priorities, key=lambda c: (-self._priorities[c], c))
        with self._reading() as db:
            return [
                c
                for c in order
                if db.execute("SELECT 1 FROM outbox WHERE channel = ? LIMIT 1", (c,)).fetchone()
            ]

    def count(self) -> int:
        """How many items are queued."""
        with self._reading() as db:
            items: int = db.execute("SELECT items FROM outbox_size").fetchone()[0]
            return items

    def size_bytes(self) -> int:
        """The payload bytes queued (what the cap counts)."""
        with self._reading() as db:
            size: int = db.execute("SELECT bytes FROM outbox_size").fetchone()[0]
            return size

    # --- listeners ------------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every successful put, from the putting thread."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``; a no-op if it was not added."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- plumbing -------------------------------------------------------------------

    def _priority(self, channel: str) -> int:
        priority = self._priorities.get(channel)
        if priority is None:
            known = ", ".join(sorted(self._priorities))
            raise InvalidPayload(f"There is no upload channel {channel!r}; channels are: {known}.")
        return priority

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return _write_transaction(self._db, self._lock)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        # One read transaction: its statements see one snapshot of the file.
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")
