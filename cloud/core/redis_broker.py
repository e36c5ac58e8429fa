"""A broker over Redis pub/sub, for a cloud that runs as several processes or replicas.

One broker holds one pub/sub connection, however many local subscriptions it serves: it
subscribes a channel on Redis for the first local subscriber, unsubscribes it after the
last, and one reader task fans messages out to local queues (``_FanOut``, shared with the
in-process broker). If Redis goes away the reader reconnects with backoff and re-subscribes;
local subscriptions stay open, and messages published meanwhile are lost: they are hints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cloud.core.broker import (
    DEFAULT_QUEUE_SIZE,
    Broker,
    BrokerUnavailable,
    Message,
    Subscription,
    _FanOut,
    _QueueSubscription,
    _require_channels,
    encode_payload,
)

log = logging.getLogger("tandem.broker")

_FIRST_RETRY_S = 0.1
_MAX_CONNECTIONS = 50  # for publish and ping; subscriptions share one more connection
# What a network failure looks like from redis-py (its TimeoutError is a RedisError).
_NETWORK_ERRORS = (RedisError, OSError, TimeoutError)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}"
    query = urlencode(
        [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*"
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class RedisBroker(Broker):
    """Publish/subscribe through Redis; nothing connects until first use.

    ``timeout_s`` bounds connecting, ``ping`` and ``publish``; ``reconnect_max_s`` caps the
    reader's backoff between reconnection attempts.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        reconnect_max_s: float = 5.0,
        timeout_s: float = 2.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._url = url
        self.safe_url = redact_url(url)
        self._queue_size = queue_size
        self._reconnect_max_s = reconnect_max_s
        self._timeout_s = timeout_s
        self._fanout = _FanOut()
        self._pool: BlockingConnectionPool | None = None
        self._client: Redis | None = None
        self._reader: asyncio.Task[None] | None = None
        # The pub/sub connection; commands may be sent on it only while _live is true,
        # i.e. after the reader finished connecting and re-subscribing.
        self._conn: AbstractConnection | None = None
        self._live = False
        self._last_error: BaseException | None = None
        # Serialises local (un)subscribes with the commands sent for them, so Redis sees
        # SUBSCRIBE and UNSUBSCRIBE for a channel in the order the refcounts changed.
        self._lock = asyncio.Lock()
        # Per channel, one entry per SUBSCRIBE sent on the current connection, in order:
        # the futures that the matching confirmation resolves.
        self._pending: dict[str, deque[list[asyncio.Future[None]]]] = {}
        self._closed = False

    @property
    def dropped(self) -> int:
        """Messages dropped so far because a local subscriber's queue was full."""
        return self._fanout.dropped

    async def publish(self, channel: str, data: bytes | str) -> None:
        """Publish ``data`` on ``channel``; ``BrokerUnavailable`` if Redis cannot be reached."""
        async with self._reaching("publish to"):
            await self._redis().publish(channel, encode_payload(data))

    def subscribe(self, *channels: str) -> Subscription:
        """A subscription to ``channels``; entering it returns once Redis confirmed them."""
        return _QueueSubscription(
            _require_channels(channels), self._queue_size, self._attach, self._detach
        )

    async def ping(self) -> None:
        """PING Redis within ``timeout_s``; ``BrokerUnavailable`` if it does not answer."""
        async with self._reaching("ping"):
            await self._redis().ping()

    async def close(self) -> None:
        """Stop the reader, end every subscription and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._fanout.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader})
        self._fail_pending(BrokerUnavailable(f"The broker for {self.safe_url} is closed."))
        if self._pool is not None:
            # The client holds no connection of its own: closing its pool closes them all.
            await self._pool.disconnect()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise BrokerUnavailable(f"The broker for {self.safe_url} is closed.")

    def _redis(self) -> Redis:
        self._refuse_if_closed()
        if self._client is None:
            # A burst of publishes waits for a free connection instead of failing. One
            # immediate retry replaces a pooled connection that went stale (Redis
            # restarted); more would only delay telling the caller that Redis is down.
            self._pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=_MAX_CONNECTIONS,
                timeout=self._timeout_s,
                socket_connect_timeout=self._timeout_s,
                socket_timeout=self._timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
            self._client = Redis(connection_pool=self._pool)
        return self._client

    @contextlib.asynccontextmanager
    async def _reaching(self, action: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(action, exc) from exc

    def _unavailable(self, action: str, exc: BaseException | None) -> BrokerUnavailable:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "no answer"
        return BrokerUnavailable(
            f"Cannot {action} Redis at {self.safe_url} ({reason}). Check that Redis is "
            "running and reachable from this host, and that TANDEM_REDIS_URL names it "
            "(with the right password, if it needs one)."
        )

    async def _attach(self, subscription: _QueueSubscription) -> None:
        self._refuse_if_closed()
        if self._reader is None:
            # Reads on the pub/sub connection wait for messages indefinitely, so it has no
            # socket timeout; _connect bounds its handshake instead.
            pool: ConnectionPool = ConnectionPool.from_url(
                self._url, socket_connect_timeout=self._timeout_s, socket_timeout=None
            )
            self._reader = asyncio.create_task(self._read(pool), name="redis-broker-reader")
        loop = asyncio.get_running_loop()
        confirmations = [loop.create_future() for _ in subscription.channels]
        try:
            async with self._lock:
                self._refuse_if_closed()  # close() may have run while this waited
                self._fanout.attach(subscription)
                for channel, confirmation in zip(subscription.channels, confirmations, strict=True):
                    self._pending.setdefault(channel, deque()).append([confirmation])
                # Even a channel Redis already has gets a SUBSCRIBE: its reply is this
                # subscriber's proof that Redis delivers to it from now on. While the
                # reader is reconnecting it re-subscribes every live channel itself.
                if self._live:
                    await self._send("SUBSCRIBE", *subscription.channels)
            # One reconnection cycle's worth of patience.
            async with asyncio.timeout(self._timeout_s + self._reconnect_max_s):
                await asyncio.gather(*confirmations)
        except BaseException as exc:
            await self._detach(subscription)
            if isinstance(exc, TimeoutError):
                raise self._unavailable("subscribe on", self._last_error) from exc
            raise

    async def _detach(self, subscription: _QueueSubscription) -> None:
        async with self._lock:
            gone = self._fanout.detach(subscription)
            if gone and self._live:
                await self._send("UNSUBSCRIBE", *gone)

    async def _send(self, *args: str) -> None:
        conn = self._conn
        if conn is None or not conn.is_connected:
            return
        # A failed send breaks the connection; the reader notices, reconnects, and
        # re-subscribes whatever is live then, which settles this command's intent too.
        with contextlib.suppress(*_NETWORK_ERRORS):
            async with asyncio.timeout(self._timeout_s):
                await conn.send_command(*args)

    async def _read(self, pool: ConnectionPool) -> None:
        """The reader task: (re)connect, then fan out whatever Redis pushes, forever."""
        failures = 0
        while True:
            try:
                conn = await self._connect(pool)
                if failures:
                    log.info("Redis broker reconnected to %s", self.safe_url)
                failures = 0
                try:
                    while True:
                        # push_request: under RESP3 messages arrive as push replies.
                        reply = await conn.read_response(push_request=True)
                        self._dispatch(reply)
                finally:
                    self._live = False
                    self._conn = None
                    await conn.disconnect(nowait=True)
            except _NETWORK_ERRORS as exc:
                self._last_error = exc
                # Warn once per outage, not once per attempt.
                log.log(
                    logging.DEBUG if failures else logging.WARNING,
                    "Redis broker cannot reach %s (%s); retrying with backoff, subscriptions "
                    "stay open and messages published meanwhile are lost",
                    self.safe_url,
                    exc,
                )
            except Exception:
                # A bug here must not silently end delivery for the whole process.
                log.exception("Redis broker reader failed; reconnecting")
            delay = min(self._reconnect_max_s, _FIRST_RETRY_S * 2**failures)
            failures += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto

    async def _connect(self, pool: ConnectionPool) -> AbstractConnection:
        # redis-py leaves make_connection unannotated; it returns the pool's connection class.
        conn: AbstractConnection = pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.connect()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                async with self._lock:
                    channels = self._fanout.channels()
                    self._pending = self._carry_over(channels)
                    if channels:
                        await conn.send_command("SUBSCRIBE", *channels)
                    self._conn = conn
                    self._live = True
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    def _carry_over(self, channels: list[str]) -> dict[str, deque[list[asyncio.Future[None]]]]:
        """Pending confirmations for a new connection, answered by its re-subscription
        (sent after every waiting subscriber registered): one entry per live channel."""
        pending: dict[str, deque[list[asyncio.Future[None]]]] = {}
        for channel in channels:
            waiting = [f for entry in self._pending.get(channel, ()) for f in entry]
            pending[channel] = deque([[f for f in waiting if not f.done()]])
        return pending

    def _dispatch(self, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel = _text(reply[0]), _text(reply[1])
        if kind == "message":
            self._fanout.deliver(Message(channel, encode_payload(reply[2])))
        elif kind == "subscribe":
            waiting = self._pending.get(channel)
            if waiting:
                for confirmation in waiting.popleft():
                    if not confirmation.done():
                        confirmation.set_result(None)

    def _fail_pending(self, exc: BaseException) -> None:
        for entries in self._pending.values():
            for confirmation in (f for entry in entries for f in entry if not f.done()):
                confirmation.set_exception(exc)
        self._pending.clear()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
