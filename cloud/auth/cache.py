"""A per-replica cache of authenticated device tokens, so a device's requests cost no lookup.

Only devices are cached: they make nearly all requests. Admin keys are checked against the
database every time, so revoking one (even from the CLI, in another process) is immediate.
Entries live ``ttl_s`` seconds. Removing a device evicts its token here at once and tells
the other replicas through the broker; if that hint is lost, the token still stops working
everywhere within ``ttl_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from cloud.auth.principal import DevicePrincipal, Principal
from cloud.core.broker import Broker, BrokerUnavailable

log = logging.getLogger("tandem.auth")

AUTH_CHANNEL = "tandem:auth:evict"


class AuthCache:
    def __init__(self, *, ttl_s: float = 60.0, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def get(self, token_hash: str) -> Principal | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        principal, expires = entry
        if expires < time.monotonic():
            self._entries.pop(token_hash, None)
            return None
        return principal

    def put(self, token_hash: str, principal: Principal) -> None:
        if not isinstance(principal, DevicePrincipal):
            return
        self._entries[token_hash] = (principal, time.monotonic() + self.ttl_s)
        self._entries.move_to_end(token_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def evict(self, token_hash: str) -> None:
        self._entries.pop(token_hash, None)

    def clear(self) -> None:
        self._entries.clear()


async def revoke(broker: Broker, cache: AuthCache, token_hash: str) -> None:
    """Forget a revoked token here and on every other replica."""
    cache.evict(token_hash)
    try:
        await broker.publish(AUTH_CHANNEL, token_hash)
    except BrokerUnavailable as exc:
        log.warning(
            "revocation not broadcast; other replicas forget it within the TTL",
            extra={"reason": exc.message},
        )


async def follow_revocations(broker: Broker, cache: AuthCache) -> None:
    """Evict tokens other replicas revoke; runs for the life of the app."""
    while True:
        try:
            async with broker.subscribe(AUTH_CHANNEL) as subscription:
                async for message in subscription:
                    cache.evict(message.data.decode("ascii", "replace"))
            return  # the broker closed: the app is shutting down
        except BrokerUnavailable:
            cache.clear()  # evictions may be missed while disconnected
            await asyncio.sleep(1.0)
