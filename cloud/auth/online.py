"""Devices connected to this replica's event stream stay authenticated while they listen.

A device that keeps its stream open makes no other request until something changes; by
then its cached token (``AuthCache``, a 60 s TTL) has expired, so a release would make every
device's first request go back to the database, and write its ``last_seen``, all in the
same second. Instead, every ``interval_s`` (half the cache's TTL) this replica checks in
one query per 500 devices that its listening devices still exist, renews their cache
entries, and records them as seen; a device removed meanwhile is evicted here even if
the broker's hint was lost, so the TTL guarantee of ``AuthCache`` still holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import select, update
from starlette.concurrency import run_in_threadpool

from cloud.auth.cache import AuthCache
from cloud.auth.principal import DevicePrincipal
from cloud.core.db import Database, utcnow
from cloud.devices.tables import DeviceRow

log = logging.getLogger("tandem.auth.online")

CHUNK = 500


class OnlineDevices:
    """The devices with an event stream open on this replica, and their token hashes."""

    def __init__(self) -> None:
        self._principals: dict[int, tuple[str, DevicePrincipal]] = {}
        self._streams: Counter[int] = Counter()

    def opened(self, token_hash: str, principal: DevicePrincipal) -> None:
        self._principals[principal.seq] = (token_hash, principal)
        self._streams[principal.seq] += 1

    def closed(self, seq: int) -> None:
        self._streams[seq] -= 1
        if self._streams[seq] <= 0:
            del self._streams[seq]
            self._principals.pop(seq, None)

    def __len__(self) -> int:
        return len(self._principals)

    def listening(self) -> list[tuple[str, DevicePrincipal]]:
        return list(self._principals.values())


def _still_registered(db: Database, seqs: Sequence[int]) -> set[int]:
    """Of ``seqs``, the devices that still exist; those are marked seen now."""
    alive: set[int] = set()
    with db.session() as session:
        for start in range(0, len(seqs), CHUNK):
            chunk = seqs[start : start + CHUNK]
            found = set(session.scalars(select(DeviceRow.seq).where(DeviceRow.seq.in_(chunk))))
            if found:
                session.execute(
                    update(DeviceRow).where(DeviceRow.seq.in_(found)).values(last_seen=utcnow())
                )
            alive |= found
    return alive


async def refresh(db: Database, cache: AuthCache, online: OnlineDevices) -> None:
    """Renew the cached tokens of listening devices that still exist; evict the rest."""
    listening = online.listening()
    if not listening:
        return
    alive = await run_in_threadpool(_still_registered, db, [p.seq for _, p in listening])
    for token_hash, principal in listening:
        if principal.seq in alive:
            cache.put(token_hash, principal)
        else:
            cache.evict(token_hash)


async def keep_authenticated(
    db: Database, cache: AuthCache, online: OnlineDevices, interval_s: float
) -> None:
    """Run :func:`refresh` every ``interval_s`` for the life of the app."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await refresh(db, cache, online)
        except Exception:  # a database outage: entries then expire by their TTL
            log.exception("could not renew the listening devices' credentials")
