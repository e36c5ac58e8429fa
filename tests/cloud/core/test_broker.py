"""The broker contract, run against every implementation, plus each one's own behaviours.

``TestBrokerContract`` runs once with ``InProcessBroker`` and once with ``RedisBroker`` on
a real Redis (``TANDEM_TEST_REDIS_URL``, default the local one). Without Redis the Redis
variants are skipped, except in CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from cloud.core.broker import (
    Broker,
    BrokerUnavailable,
    InProcessBroker,
    Message,
    Subscription,
)
from cloud.core.redis_broker import RedisBroker

REDIS_URL = os.environ.get("TANDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
WAIT_S = 5.0  # every wait for a message is bounded, so a bug fails a test, never hangs it

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], within_s: float = WAIT_S) -> T:
    return await asyncio.wait_for(awaitable, within_s)


async def receive(subscription: Subscription) -> Message:
    return await bounded(anext(subscription))


async def receive_all(subscription: Subscription, count: int) -> list[Message]:
    return [await receive(subscription) for _ in range(count)]


async def remaining(subscription: Subscription) -> list[Message]:
    """What is left to iterate on an ended subscription (it must end, not wait)."""
    return await bounded(_collect(subscription))


async def _collect(subscription: Subscription) -> list[Message]:
    return [message async for message in subscription]


async def require_redis() -> str:
    """The test Redis URL; skip (or, in CI, fail) when nothing answers there."""
    client: Redis = Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI must run the Redis tests; start Redis)")
        pytest.skip(reason)
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    """A channel-name prefix of this test's own, so concurrent or leftover runs never mix."""
    return f"test-broker-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["inprocess", pytest.param("redis", marks=pytest.mark.redis)])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "inprocess":
        implementation: Broker = InProcessBroker()
    else:
        implementation = RedisBroker(await require_redis(), reconnect_max_s=0.5)
    try:
        yield implementation
    finally:
        await implementation.close()


@pytest.fixture
async def redis_url() -> str:
    return await require_redis()


@pytest.fixture
async def redis_broker(redis_url: str) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker(redis_url, reconnect_max_s=0.5)
    try:
        yield broker
    finally:
        await broker.close()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    """A plain Redis client beside the broker, to observe and disturb it."""
    client: Redis = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


class TestBrokerContract:
    """What every broker does, whatever carries the messages."""

    async def test_publish_reaches_subscriber(self, broker: Broker, prefix: str) -> None:
        """A message published after subscribing is delivered to the subscriber."""
        async with broker.subscribe(f"{prefix}.a") as sub:
            await broker.publish(f"{prefix}.a", b"hello")
            assert await receive(sub) == Message(f"{prefix}.a", b"hello")

    async def test_str_payload_arrives_utf8_encoded(self, broker: Broker, prefix: str) -> None:
        """A str payload arrives as its UTF-8 bytes."""
        async with broker.subscribe(f"{prefix}.a") as sub:
            await broker.publish(f"{prefix}.a", "modèle prêt ✓")
            assert (await receive(sub)).data == "modèle prêt ✓".encode()

    async def test_channels_are_isolated(self, broker: Broker, prefix: str) -> None:
        """A subscriber receives nothing published on other channels."""
        async with broker.subscribe(f"{prefix}.a") as sub:
            await broker.publish(f"{prefix}.b", b"not for a")
            await broker.publish(f"{prefix}.a", b"for a")
            assert await receive(sub) == Message(f"{prefix}.a", b"for a")

    async def test_every_subscriber_gets_each_message(self, broker: Broker, prefix: str) -> None:
        """Each subscriber of a channel receives every message published on it."""
        async with broker.subscribe(f"{prefix}.a") as one, broker.subscribe(f"{prefix}.a") as two:
            await broker.publish(f"{prefix}.a", b"1")
            await broker.publish(f"{prefix}.a", b"2")
            assert [m.data for m in await receive_all(one, 2)] == [b"1", b"2"]
            assert [m.data for m in await receive_all(two, 2)] == [b"1", b"2"]

    async def test_one_subscription_listens_to_several_channels(
        self, broker: Broker, prefix: str
    ) -> None:
        """One subscription receives from all its channels, and Message.channel says which."""
        async with broker.subscribe(f"{prefix}.a", f"{prefix}.b") as sub:
            await broker.publish(f"{prefix}.a", b"1")
            await broker.publish(f"{prefix}.b", b"2")
            received = await receive_all(sub, 2)
        assert received == [Message(f"{prefix}.a", b"1"), Message(f"{prefix}.b", b"2")]

    async def test_order_from_one_publisher_is_kept(self, broker: Broker, prefix: str) -> None:
        """Messages from one publisher on one channel arrive in the order they were sent."""
        sent = [str(i).encode() for i in range(100)]
        async with broker.subscribe(f"{prefix}.a") as sub:
            for data in sent:
                await broker.publish(f"{prefix}.a", data)
            assert [m.data for m in await receive_all(sub, len(sent))] == sent

    async def test_nothing_delivered_after_leaving(self, broker: Broker, prefix: str) -> None:
        """A subscription that was left receives nothing more, and its iteration ends."""
        async with broker.subscribe(f"{prefix}.a") as stays:
            async with broker.subscribe(f"{prefix}.a") as leaves:
                pass
            await broker.publish(f"{prefix}.a", b"after")
            # Once the remaining subscriber has it, the left one would have had it too.
            assert (await receive(stays)).data == b"after"
        assert await remaining(leaves) == []

    async def test_leaving_ends_a_waiting_iteration(self, broker: Broker, prefix: str) -> None:
        """Leaving the context ends an iteration that another task is waiting in."""
        async with broker.subscribe(f"{prefix}.a") as sub:
            waiting = asyncio.ensure_future(_collect(sub))
            await asyncio.sleep(0)  # let the iteration start waiting
        assert await bounded(waiting) == []

    async def test_publish_without_subscribers_is_fine(self, broker: Broker, prefix: str) -> None:
        """Publishing on a channel nobody listens to succeeds and goes nowhere."""
        await broker.publish(f"{prefix}.nobody", b"hint")

    async def test_ping_succeeds(self, broker: Broker) -> None:
        """ping() returns when the broker works."""
        await bounded(broker.ping())

    async def test_close_ends_iteration(self, broker: Broker, prefix: str) -> None:
        """Closing the broker ends the iteration of subscriptions still open."""
        async with broker.subscribe(f"{prefix}.a") as sub:
            waiting = asyncio.ensure_future(_collect(sub))
            await asyncio.sleep(0)  # let the iteration start waiting
            await broker.close()
            assert await bounded(waiting) == []

    async def test_close_is_idempotent(self, broker: Broker) -> None:
        """Closing a closed broker does nothing."""
        await broker.close()
        await broker.close()

    async def test_closed_broker_refuses_work(self, broker: Broker, prefix: str) -> None:
        """A closed broker answers publish and subscribe with BrokerUnavailable."""
        await broker.close()
        with pytest.raises(BrokerUnavailable):
            await broker.publish(f"{prefix}.a", b"late")
        with pytest.raises(BrokerUnavailable):
            async with broker.subscribe(f"{prefix}.a"):
                pass

    def test_subscribe_needs_a_channel(self, broker: Broker) -> None:
        """subscribe() without a channel raises ValueError."""
        with pytest.raises(ValueError, match="at least one channel"):
            broker.subscribe()


class TestInProcessBroker:
    """Behaviours of the in-process broker alone."""

    async def test_slow_subscriber_drops_oldest(self) -> None:
        """A full queue drops its oldest message, counted in dropped, without blocking."""
        broker = InProcessBroker(queue_size=3)
        try:
            async with broker.subscribe("a") as sub:
                for i in range(10):
                    await bounded(broker.publish("a", str(i)))
                assert broker.dropped == 7
                assert [m.data for m in await receive_all(sub, 3)] == [b"7", b"8", b"9"]
        finally:
            await broker.close()


@pytest.mark.redis
class TestRedisBroker:
    """Behaviours of the Redis broker alone: multiplexing, failures and recovery."""

    async def test_construction_does_not_connect(self) -> None:
        """Building a RedisBroker for an unreachable URL succeeds: nothing connects yet."""
        broker = RedisBroker(CLOSED_PORT_URL)
        await broker.close()

    async def test_unreachable_redis_fails_ping(self) -> None:
        """ping() on an unreachable Redis raises BrokerUnavailable within its timeout."""
        broker = RedisBroker(CLOSED_PORT_URL, timeout_s=0.5)
        try:
            with pytest.raises(BrokerUnavailable, match=re.escape("redis://127.0.0.1:1/0")):
                await bounded(broker.ping())
        finally:
            await broker.close()

    async def test_unreachable_redis_fails_publish(self) -> None:
        """publish() on an unreachable Redis raises BrokerUnavailable saying what to check."""
        broker = RedisBroker(CLOSED_PORT_URL, timeout_s=0.5)
        try:
            with pytest.raises(BrokerUnavailable, match="Check that Redis is running"):
                await bounded(broker.publish("a", b"hint"))
        finally:
            await broker.close()

    async def test_unreachable_redis_fails_subscribe(self) -> None:
        """Entering a subscription on an unreachable Redis raises BrokerUnavailable."""
        broker = RedisBroker(CLOSED_PORT_URL, timeout_s=0.3, reconnect_max_s=0.2)
        try:
            with pytest.raises(BrokerUnavailable):
                async with broker.subscribe("a"):
                    pass
        finally:
            await broker.close()

    async def test_error_hides_password(self) -> None:
        """BrokerUnavailable names the Redis URL without its password."""
        broker = RedisBroker("redis://:hunter2@127.0.0.1:1/0", timeout_s=0.5)
        try:
            with pytest.raises(BrokerUnavailable) as caught:
                await bounded(broker.ping())
        finally:
            await broker.close()
        assert "hunter2" not in str(caught.value)
        assert "redis://:***@127.0.0.1:1/0" in str(caught.value)

    async def test_one_redis_subscription_per_channel(
        self, redis_broker: RedisBroker, admin: Redis, prefix: str
    ) -> None:
        """Local subscribers of one channel share a single Redis subscription."""
        channel = f"{prefix}.a"
        async with redis_broker.subscribe(channel), redis_broker.subscribe(channel):
            assert await _numsub(admin, channel) == 1

    async def test_last_local_subscriber_unsubscribes(
        self, redis_broker: RedisBroker, admin: Redis, prefix: str
    ) -> None:
        """Redis keeps the channel while any local subscriber stays and drops it after the last."""
        channel = f"{prefix}.a"
        async with redis_broker.subscribe(channel):
            async with redis_broker.subscribe(channel):
                pass
            assert await _numsub(admin, channel) == 1
        await bounded(_until_numsub(admin, channel, 0))

    async def test_reader_reconnects_after_connection_killed(
        self, redis_url: str, admin: Redis, prefix: str
    ) -> None:
        """After Redis drops the pub/sub connection, an open subscription receives again."""
        # A client name singles out this broker's connections: killing every pub/sub
        # client (CLIENT KILL TYPE pubsub) would disturb test runs sharing this Redis.
        separator = "&" if "?" in redis_url else "?"
        broker = RedisBroker(f"{redis_url}{separator}client_name={prefix}", reconnect_max_s=0.5)
        channel = f"{prefix}.a"
        try:
            async with broker.subscribe(channel) as sub:
                assert await _kill_pubsub_clients(admin, name=prefix) == 1
                # Messages during the outage are lost, so keep publishing until one arrives.
                await bounded(_until_received(broker, sub, channel), within_s=10)
        finally:
            await broker.close()


async def _kill_pubsub_clients(admin: Redis, *, name: str) -> int:
    """Drop the named pub/sub connections, as a Redis restart would; return how many."""
    clients = await admin.client_list(_type="pubsub")
    ids = [client["id"] for client in clients if client["name"] == name]
    for client_id in ids:
        await admin.client_kill_filter(_id=client_id)
    return len(ids)


async def _numsub(admin: Redis, channel: str) -> int:
    """How many Redis clients subscribe to ``channel``."""
    [(_, count)] = await admin.pubsub_numsub(channel)
    return count


async def _until_numsub(admin: Redis, channel: str, count: int) -> None:
    while True:
        if await _numsub(admin, channel) == count:
            return
        await asyncio.sleep(0.02)


async def _until_received(broker: Broker, sub: Subscription, channel: str) -> None:
    while True:
        await broker.publish(channel, b"are you there")
        try:
            await asyncio.wait_for(anext(sub), 0.2)
        except TimeoutError:
            continue
        return
