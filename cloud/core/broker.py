"""The message broker: short notifications fanned out to whoever listens.

Messages are *hints*, never state. A message tells a listener "something changed, go and
look"; the database stays the truth. So the broker may lose a message (a slow subscriber
whose queue overflowed, a Redis outage): the worst outcome is that a device learns of a
change later, on its next poll, never that a change is lost. That is why publishing never
blocks on a slow subscriber and why a full queue drops its *oldest* message: the newest
hint is the most useful one.

``Broker`` is the interface; ``InProcessBroker`` serves one process (development, tests,
a single worker) and ``cloud.core.redis_broker.RedisBroker`` serves several replicas.
Both pass the same contract test, ``tests/cloud/core/test_broker.py``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from cloud.core.errors import ServiceUnavailable

DEFAULT_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Message:
    """One notification, as a subscriber receives it."""

    channel: str
    data: bytes


class BrokerUnavailable(ServiceUnavailable):
    """The broker's backend cannot be reached (or the broker was closed)."""

    code = "broker_unavailable"


class Subscription(ABC):
    """Messages of some channels: an async context manager and an async iterator.

    When ``async with`` has entered, the subscription is established: anything published
    afterwards on its channels is delivered (unless dropped as a hint, see the module
    docstring). Leaving the context stops delivery; iteration ends once the broker closes.
    A subscription is used once.
    """

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Establish the subscription; return only once delivery is guaranteed."""

    @abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop delivery and free what the subscription holds."""

    def __aiter__(self) -> Self:
        return self

    @abstractmethod
    async def __anext__(self) -> Message:
        """The next message; ``StopAsyncIteration`` once the broker is closed."""


class Broker(ABC):
    """Publish/subscribe on named channels, with at-most-once, best-effort delivery."""

    @abstractmethod
    async def publish(self, channel: str, data: bytes | str) -> None:
        """Send ``data`` (a ``str`` is encoded as UTF-8) to every subscriber of ``channel``."""

    @abstractmethod
    def subscribe(self, *channels: str) -> Subscription:
        """A subscription to ``channels`` (at least one), established on ``async with``."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the broker works; raise ``BrokerUnavailable`` if its backend does not."""

    @abstractmethod
    async def close(self) -> None:
        """End every open subscription's iteration and free resources; idempotent."""


def _require_channels(channels: tuple[str, ...]) -> tuple[str, ...]:
    if not channels:
        raise ValueError("subscribe() needs at least one channel name")
    return tuple(dict.fromkeys(channels))  # a channel named twice is still one channel


class _QueueSubscription(Subscription):
    """A subscription fed by a ``_FanOut`` through a bounded queue.

    The broker that made it decides what entering and leaving mean, through ``attach`` and
    ``detach`` (the in-process broker just registers; the Redis one also talks to Redis).
    """

    def __init__(
        self,
        channels: tuple[str, ...],
        queue_size: int,
        attach: Callable[[_QueueSubscription], Awaitable[None]],
        detach: Callable[[_QueueSubscription], Awaitable[None]],
    ) -> None:
        self.channels = channels
        # None is the wake-up sent when iteration must end.
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=queue_size)
        self._attach = attach
        self._detach = detach
        self._state: Literal["new", "open", "left"] = "new"
        self._ended = False

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a subscription can be entered only once")
        self._state = "open"
        try:
            await self._attach(self)
        except BaseException:
            self._state = "left"
            self._end()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state != "open":
            return
        self._state = "left"
        # What is still queued was published for a listener that has now left.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._end()
        await self._detach(self)

    async def __anext__(self) -> Message:
        if self._state == "new":
            raise RuntimeError("enter the subscription (async with) before iterating it")
        if self._ended and self._queue.empty():
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is None:
            self._queue.put_nowait(None)  # leave the end mark for any other waiting reader
            raise StopAsyncIteration
        return message

    def _offer(self, message: Message) -> bool:
        """Queue ``message`` without ever waiting; return whether an older one was dropped."""
        if self._ended:
            return False
        dropped = self._queue.full()
        if dropped:
            self._queue.get_nowait()
        self._queue.put_nowait(message)
        return dropped

    def _end(self) -> None:
        self._ended = True
        # A full queue needs no wake-up (nobody waits on it): readers drain it, then see
        # _ended. An empty one gets the end mark, which wakes a reader waiting right now.
        if not self._queue.full():
            self._queue.put_nowait(None)


class _FanOut:
    """Local delivery, shared by every broker: which subscriptions listen to which channel.

    ``attach`` and ``detach`` report the channels that gained their first or lost their
    last listener, so a networked broker knows what to (un)subscribe upstream.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, set[_QueueSubscription]] = {}
        self.dropped = 0

    def channels(self) -> list[str]:
        """Channels with at least one local listener."""
        return list(self._listeners)

    def attach(self, subscription: _QueueSubscription) -> list[str]:
        first = [ch for ch in subscription.channels if ch not in self._listeners]
        for channel in subscription.channels:
            self._listeners.setdefault(channel, set()).add(subscription)
        return first

    def detach(self, subscription: _QueueSubscription) -> list[str]:
        last = []
        for channel in subscription.channels:
            listeners = self._listeners.get(channel)
            if listeners is None or subscription not in listeners:
                continue
            listeners.discard(subscription)
            if not listeners:
                del self._listeners[channel]
                last.append(channel)
        return last

    def deliver(self, message: Message) -> None:
        for subscription in self._listeners.get(message.channel, ()):
            if subscription._offer(message):
                self.dropped += 1

    def close(self) -> None:
        """End every listener's iteration and forget them all."""
        for subscription in {s for listeners in self._listeners.values() for s in listeners}:
            subscription._end()
        self._listeners.clear()


def encode_payload(data: bytes | str) -> bytes:
    """The bytes a broker sends for ``data``: a ``str`` becomes UTF-8."""
    return data.encode("utf-8") if isinstance(data, str) else data


class InProcessBroker(Broker):
    """Fan-out within one process, for development, tests and single-worker deployments.

    Each subscription has its own queue of ``queue_size`` messages; when a slow subscriber's
    queue is full the oldest message is dropped and counted in ``dropped``.
    """

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._queue_size = queue_size
        self._fanout = _FanOut()
        self._closed = False

    @property
    def dropped(self) -> int:
        """Messages dropped so far because a subscriber's queue was full."""
        return self._fanout.dropped

    async def publish(self, channel: str, data: bytes | str) -> None:
        """Queue ``data`` for every current subscriber of ``channel``; never waits."""
        self._refuse_if_closed()
        self._fanout.deliver(Message(channel, encode_payload(data)))

    def subscribe(self, *channels: str) -> Subscription:
        """A subscription to ``channels``; established as soon as it is entered."""
        return _QueueSubscription(
            _require_channels(channels), self._queue_size, self._attach, self._detach
        )

    async def ping(self) -> None:
        """Succeed while the broker is open: there is no backend to lose."""
        self._refuse_if_closed()

    async def close(self) -> None:
        """End the iteration of every open subscription."""
        self._closed = True
        self._fanout.close()

    async def _attach(self, subscription: _QueueSubscription) -> None:
        self._refuse_if_closed()
        self._fanout.attach(subscription)

    async def _detach(self, subscription: _QueueSubscription) -> None:
        self._fanout.detach(subscription)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise BrokerUnavailable(
                "The in-process broker is closed (the app is shutting down); retry against "
                "a running instance."
            )
