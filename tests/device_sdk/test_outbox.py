"""The outbox and its uploader: durable puts, the size cap's eviction order, and delivery
that acknowledges only what the cloud stored, retries what may succeed, and drops the rest."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_sdk._backoff import Backoff
from device_sdk._client import CloudClient
from device_sdk._errors import DeviceRevoked, InvalidPayload, OutboxFull
from device_sdk._outbox import Outbox
from device_sdk._store import DeviceStore
from device_sdk._uploader import Uploader
from device_sdk.wire import MAX_UPLOAD_PAYLOAD_BYTES

TOKEN = "device-token-0123456789"
WAIT_S = 10.0
# Three channels with distinct priorities, to exercise the eviction and upload orders.
CHANNELS = {"events": 0, "embeddings": 1, "updates": 2}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DeviceStore]:
    opened = DeviceStore(tmp_path / "device.db")
    yield opened
    opened.close()


@pytest.fixture
def outbox(store: DeviceStore) -> Iterator[Outbox]:
    opened = Outbox(store, channels=CHANNELS)
    yield opened
    opened.close()


def payload_of(size: int) -> dict[str, str]:
    """A payload of exactly ``size`` bytes as compact JSON."""
    return {"p": "x" * (size - len('{"p":""}'))}


# --- the outbox ---------------------------------------------------------------------


def test_put_returns_a_uuid4_key_and_pending_returns_the_item(outbox: Outbox) -> None:
    """put answers a fresh uuid4 key; pending hands back channel, payload and size."""
    key = outbox.put("events", {"kind": "click", "at": 1})
    assert uuid.UUID(key).version == 4 and str(uuid.UUID(key)) == key
    (item,) = outbox.pending()
    assert (item.key, item.channel, item.payload) == (key, "events", {"kind": "click", "at": 1})
    assert item.payload_json == '{"kind":"click","at":1}' and item.size == len(item.payload_json)


def test_ack_removes_only_the_named_items(outbox: Outbox) -> None:
    """ack deletes the given keys, counts what it removed, and leaves the rest queued."""
    keys = [outbox.put("events", {"n": n}) for n in range(3)]
    assert outbox.ack([keys[0], keys[2], str(uuid.uuid4())]) == 2
    assert [i.key for i in outbox.pending()] == [keys[1]]


def test_bytes_payload_is_json_text_stored_compactly(outbox: Outbox) -> None:
    """A bytes payload is the UTF-8 JSON of an object; it is stored as compact JSON."""
    outbox.put("events", b'{ "name" : "caf\xc3\xa9" }')
    (item,) = outbox.pending()
    assert item.payload_json == '{"name":"café"}' and item.size == len(b'{"name":"caf\xc3\xa9"}')


@pytest.mark.parametrize(
    ("channel", "payload", "problem"),
    [
        pytest.param("nope", {"a": 1}, "no upload channel 'nope'", id="unknown channel"),
        pytest.param("events", b"[1, 2]", "JSON object", id="bytes of a list"),
        pytest.param("events", b"\xff", "not UTF-8 JSON", id="bytes not utf-8"),
        pytest.param("events", b'{"x": NaN}', "not UTF-8 JSON", id="bytes with NaN"),
        pytest.param("events", {"x": float("inf")}, "cannot be sent as JSON", id="infinity"),
        pytest.param("events", {"x": "\ud800"}, "not valid Unicode", id="lone surrogate"),
        pytest.param("events", {"x": object()}, "cannot be sent as JSON", id="object"),
        pytest.param(
            "events", payload_of(MAX_UPLOAD_PAYLOAD_BYTES + 1), "Split it", id="too large"
        ),
    ],
)
def test_put_refuses_what_the_cloud_would_refuse(
    outbox: Outbox, channel: str, payload: Any, problem: str
) -> None:
    """An item that could never be uploaded raises InvalidPayload at put, and is not stored."""
    with pytest.raises(InvalidPayload, match=problem):
        outbox.put(channel, payload)
    assert outbox.count() == 0


def test_items_survive_closing_and_reopening(tmp_path: Path) -> None:
    """What put returned is still queued after the store and outbox are reopened."""
    store = DeviceStore(tmp_path / "device.db")
    outbox = Outbox(store)
    keys = [outbox.put("events", {"n": n}) for n in range(3)]
    outbox.close()
    store.close()
    store = DeviceStore(tmp_path / "device.db")
    reopened = Outbox(store)
    assert [i.key for i in reopened.pending()] == keys
    assert reopened.count() == 3
    reopened.close()
    store.close()


def test_pending_respects_limit_and_max_bytes(outbox: Outbox) -> None:
    """pending stops at limit items or max_bytes, but always returns a first larger item."""
    keys = [outbox.put("events", payload_of(100)) for _ in range(5)]
    assert [i.key for i in outbox.pending(3)] == keys[:3]
    assert [i.key for i in outbox.pending(10, max_bytes=250)] == keys[:2]
    assert [i.key for i in outbox.pending(10, max_bytes=50)] == keys[:1]


def test_pending_by_channel_keeps_put_order(outbox: Outbox) -> None:
    """pending(channel=...) returns that channel's items only, oldest first."""
    first = outbox.put("events", {"n": 1})
    outbox.put("updates", {"n": 2})
    third = outbox.put("events", {"n": 3})
    assert [i.key for i in outbox.pending(channel="events")] == [first, third]


def test_channels_lists_the_busy_ones_highest_priority_first(outbox: Outbox) -> None:
    """channels() names only channels with items, in upload order."""
    outbox.put("events", {"n": 1})
    outbox.put("updates", {"n": 2})
    assert outbox.channels() == ["updates", "events"]


def test_count_and_size_follow_puts_acks_and_drops(outbox: Outbox) -> None:
    """count and size_bytes track every put, ack and drop."""
    keys = outbox.put_many("events", [payload_of(100), payload_of(50), payload_of(10)])
    assert (outbox.count(), outbox.size_bytes()) == (3, 160)
    outbox.ack(keys[:1])
    outbox.drop(keys[1:2])
    assert (outbox.count(), outbox.size_bytes(), outbox.dropped) == (1, 10, 1)


def test_put_many_is_all_or_nothing(outbox: Outbox) -> None:
    """One bad payload in put_many stores none of them."""
    with pytest.raises(InvalidPayload):
        outbox.put_many("events", [{"ok": 1}, {"bad": float("nan")}])
    assert outbox.count() == 0


def test_full_outbox_evicts_the_oldest_items_first(store: DeviceStore) -> None:
    """At the cap, a put evicts the oldest items of its channel until it fits."""
    outbox = Outbox(store, max_bytes=MAX_UPLOAD_PAYLOAD_BYTES, channels=CHANNELS)
    size = MAX_UPLOAD_PAYLOAD_BYTES // 4
    keys = [outbox.put("events", payload_of(size)) for _ in range(6)]
    assert [i.key for i in outbox.pending()] == keys[2:]
    assert outbox.size_bytes() <= outbox.max_bytes and outbox.evicted == 2
    outbox.close()


def test_eviction_takes_the_lowest_priority_first(store: DeviceStore) -> None:
    """Room is made from the lowest-priority channel, oldest first, before any other."""
    outbox = Outbox(store, max_bytes=MAX_UPLOAD_PAYLOAD_BYTES, channels=CHANNELS)
    quarter = MAX_UPLOAD_PAYLOAD_BYTES // 4
    embedding = outbox.put("embeddings", payload_of(quarter))
    events = [outbox.put("events", payload_of(quarter)) for _ in range(2)]
    update = outbox.put("updates", payload_of(quarter))
    outbox.put("updates", payload_of(quarter))  # needs one quarter: the oldest event goes
    assert [i.key for i in outbox.pending(channel="events")] == events[1:]
    outbox.put("updates", payload_of(2 * quarter))  # the other event, then the embedding
    assert outbox.pending(channel="events") == []
    assert embedding not in {i.key for i in outbox.pending()}
    assert update in {i.key for i in outbox.pending()}
    assert outbox.evicted == 3
    outbox.close()


def test_low_priority_item_never_evicts_a_higher_one(store: DeviceStore) -> None:
    """When only higher-priority items could make room, put raises OutboxFull and evicts
    nothing."""
    outbox = Outbox(store, max_bytes=MAX_UPLOAD_PAYLOAD_BYTES, channels=CHANNELS)
    half = MAX_UPLOAD_PAYLOAD_BYTES // 2
    kept = [outbox.put("updates", payload_of(half)), outbox.put("events", payload_of(half))]
    with pytest.raises(OutboxFull, match="higher priority"):
        outbox.put("events", payload_of(half + 1))  # the old event alone is not enough
    assert [i.key for i in outbox.pending()] == kept and outbox.evicted == 0
    outbox.close()


# --- the uploader -------------------------------------------------------------------


@dataclass
class FakeUploads:
    """The cloud's upload endpoint, through httpx.MockTransport.

    ``answers`` scripts the next requests: "ok" stores and answers 200; "lost" stores and
    then fails the connection (the response is lost); "down" fails without storing; an int
    answers that status with the error envelope, storing nothing. When empty: "ok".
    """

    answers: list[str | int] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)
    details: object = None
    during: list[int] = field(default_factory=list)
    outbox: Outbox | None = None
    answered: threading.Event = field(default_factory=threading.Event)

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.url.path.startswith("/v1/devices/me/uploads/")
        items = json.loads(request.content)["items"]
        self.batches.append([i["key"] for i in items])
        if self.outbox is not None:
            self.during.append(self.outbox.count())
        answer = self.answers.pop(0) if self.answers else "ok"
        self.answered.set()
        if answer == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(answer, int):
            error = {"code": f"http_{answer}", "message": "scripted", "details": self.details}
            return httpx.Response(answer, json={"error": error})
        new = [i for i in items if i["key"] not in self.stored]
        self.stored.update({i["key"]: i["payload"] for i in items})
        if answer == "lost":
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={"accepted": len(new), "duplicates": len(items) - len(new)})


class Ceilings:
    """A Backoff's randomness that records each ceiling and waits almost nothing."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def __call__(self, low: float, high: float) -> float:
        self.seen.append(high)
        return 0.001


@pytest.fixture
def cloud() -> FakeUploads:
    return FakeUploads()


@pytest.fixture
def ceilings() -> Ceilings:
    return Ceilings()


@pytest.fixture
def uploader(outbox: Outbox, cloud: FakeUploads, ceilings: Ceilings) -> Iterator[Uploader]:
    client = CloudClient("http://cloud", token=TOKEN, transport=httpx.MockTransport(cloud.handle))
    made = Uploader(
        outbox,
        client,
        max_items=10,
        linger_s=0.0,
        interval_s=3600.0,
        backoff=Backoff(initial_s=1.0, max_s=300.0, uniform=ceilings),
    )
    yield made
    made.stop()
    client.close()


def test_uploader_sends_what_an_earlier_run_left(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """Started over a non-empty outbox, the uploader sends every item and empties it."""
    keys = outbox.put_many("events", [{"n": n} for n in range(25)])
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert list(cloud.stored) == keys
    assert [len(b) for b in cloud.batches] == [10, 10, 5]
    assert (uploader.uploaded, uploader.duplicates) == (25, 0)


def test_items_are_acked_only_after_the_cloud_answered(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """While a batch is in flight its items are still queued; they go after the 200."""
    cloud.outbox = outbox
    outbox.put_many("events", [{"n": n} for n in range(3)])
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert cloud.during == [3] and outbox.count() == 0


def test_put_wakes_the_uploader(outbox: Outbox, cloud: FakeUploads, uploader: Uploader) -> None:
    """An item put while the uploader idles is sent without waiting for the timer."""
    uploader.start()
    assert uploader.flush(WAIT_S)
    key = outbox.put("events", {"late": True})
    assert cloud.answered.wait(WAIT_S)
    assert cloud.batches == [[key]]


def test_server_errors_and_network_failures_are_retried_with_backoff(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader, ceilings: Ceilings
) -> None:
    """A 500, a 503 and a refused connection are retried, the delay's ceiling doubling
    each time; the fourth attempt delivers and nothing is lost or dropped."""
    cloud.answers = [500, 503, "down"]
    keys = outbox.put_many("events", [{"n": n} for n in range(3)])
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert ceilings.seen == [1.0, 2.0, 4.0]
    assert cloud.batches == [keys] * 4
    assert list(cloud.stored) == keys and uploader.dropped == 0


def test_429_is_retried(outbox: Outbox, cloud: FakeUploads, uploader: Uploader) -> None:
    """Too Many Requests is weather, not a verdict: the batch is sent again."""
    cloud.answers = [429]
    key = outbox.put("events", {"n": 1})
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert key in cloud.stored and len(cloud.batches) == 2


def test_lost_response_resends_the_same_keys_and_counts_once(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """When the cloud stored a batch but its answer was lost, the retry carries the same
    keys; the cloud reports them as duplicates and the outbox empties."""
    cloud.answers = ["lost"]
    keys = outbox.put_many("events", [{"n": n} for n in range(4)])
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert cloud.batches == [keys, keys]
    assert (uploader.uploaded, uploader.duplicates) == (0, 4)
    assert len(cloud.stored) == 4


def test_401_stops_the_uploader_and_keeps_the_items(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """A revoked token stops uploads with DeviceRevoked; the items stay queued."""
    cloud.answers = [401]
    outbox.put_many("events", [{"n": n} for n in range(3)])
    uploader.start()
    assert not uploader.flush(WAIT_S)
    assert not uploader.running
    assert isinstance(uploader.last_error, DeviceRevoked)
    assert outbox.count() == 3 and len(cloud.batches) == 1


def test_422_batch_is_dropped_with_a_warning(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch refused with 422 naming no item can never succeed: its items are dropped,
    counted, and a warning says so; the next batch is still sent."""
    cloud.answers = [422]
    outbox.put_many("events", [{"n": n} for n in range(10)])
    later = outbox.put("events", {"n": 10})
    with caplog.at_level(logging.WARNING, logger="device_sdk.uploads"):
        uploader.start()
        assert uploader.flush(WAIT_S)
    assert uploader.dropped == 10 and outbox.dropped == 10
    assert list(cloud.stored) == [later]
    assert "dropped 10 of 10 items" in caplog.text and "422" in caplog.text


def test_422_naming_items_drops_only_those(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """A 422 whose details name items drops just them; the others are sent again."""
    cloud.answers = [422]
    cloud.details = [{"field": "items.1.payload", "problem": "too large", "type": "value_error"}]
    keys = outbox.put_many("events", [{"n": n} for n in range(3)])
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert list(cloud.stored) == [keys[0], keys[2]] and uploader.dropped == 1


def test_other_client_errors_drop_the_batch(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """A 404 (a channel this cloud does not have) drops the batch rather than retrying."""
    cloud.answers = [404]
    outbox.put("events", {"n": 1})
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert uploader.dropped == 1 and cloud.stored == {}


def test_413_halves_the_batches(outbox: Outbox, cloud: FakeUploads, uploader: Uploader) -> None:
    """A batch refused as too large is split: the items arrive in smaller batches."""
    cloud.answers = [413]
    keys = outbox.put_many("events", [{"n": n} for n in range(10)])
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert [len(b) for b in cloud.batches] == [10, 5, 5]
    assert list(cloud.stored) == keys and uploader.dropped == 0


def test_higher_priority_channel_is_sent_first(
    outbox: Outbox, cloud: FakeUploads, uploader: Uploader
) -> None:
    """Each request carries one channel; the highest-priority channel goes first."""
    event = outbox.put("events", {"n": 1})
    update = outbox.put("updates", {"n": 2})
    uploader.start()
    assert uploader.flush(WAIT_S)
    assert cloud.batches == [[update], [event]]


def test_stop_ends_the_thread_during_a_backoff(
    outbox: Outbox, cloud: FakeUploads, store: DeviceStore
) -> None:
    """stop() returns promptly even while the uploader waits out a long backoff."""
    cloud.answers = [503]
    client = CloudClient("http://cloud", token=TOKEN, transport=httpx.MockTransport(cloud.handle))
    uploader = Uploader(outbox, client, backoff=Backoff(initial_s=300.0, max_s=300.0))
    outbox.put("events", {"n": 1})
    uploader.start()
    assert cloud.answered.wait(WAIT_S)
    started = time.monotonic()
    uploader.stop(timeout_s=WAIT_S)
    assert time.monotonic() - started < WAIT_S / 2
    assert not uploader.running and outbox.count() == 1
    client.close()
