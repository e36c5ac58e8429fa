"""The incremental Server-Sent Events parser."""

from __future__ import annotations

from device_sdk import ServerSentEvent, SSEDecoder


def parse(*chunks: bytes) -> list[ServerSentEvent]:
    return list(SSEDecoder().iter_events(chunks))


def test_named_event_with_id_and_data() -> None:
    """An event with `event`, `id` and `data` fields is dispatched at the blank line."""
    assert parse(b'event: desired\nid: 7\ndata: {"desired_rev": 7}\n\n') == [
        ServerSentEvent(event="desired", data='{"desired_rev": 7}', id="7")
    ]


def test_event_type_defaults_to_message() -> None:
    """An event without an `event` field is of type `message`."""
    assert parse(b"data: x\n\n")[0].event == "message"


def test_incomplete_event_is_not_dispatched() -> None:
    """An event without its terminating blank line is not dispatched yet."""
    assert parse(b"data: x\n") == []


def test_multi_line_data_joins_with_newlines() -> None:
    """Several `data` lines of one event join with a newline."""
    assert parse(b"data: a\ndata:b\ndata\n\n")[0].data == "a\nb\n"


def test_only_one_leading_space_is_stripped() -> None:
    """One space after the colon is dropped; further spaces are part of the value."""
    assert parse(b"data:   x \n\n")[0].data == "  x "


def test_comments_are_ignored() -> None:
    """Comment lines, such as the cloud's heartbeats, produce no events."""
    assert parse(b": heartbeat\n\n: heartbeat\n\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_crlf_cr_and_lf_all_end_lines() -> None:
    """CRLF, lone CR and LF line endings parse alike."""
    assert [e.data for e in parse(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")] == ["a", "b", "c"]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    """A CR at the end of one chunk and LF at the start of the next end one line, not two."""
    events = parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n")
    assert [e.data for e in events] == ["a\nb"]


def test_event_split_byte_by_byte() -> None:
    """An event fed one byte at a time parses the same as in one piece."""
    raw = b"event: desired\r\nid: 3\r\ndata: {}\r\n\r\n"
    assert parse(*(raw[i : i + 1] for i in range(len(raw)))) == parse(raw)


def test_utf8_split_inside_a_character() -> None:
    """A multi-byte UTF-8 character split across chunks decodes intact."""
    raw = "data: grüße\n\n".encode()
    split = raw.index("ü".encode()) + 1
    assert parse(raw[:split], raw[split:])[0].data == "grüße"


def test_leading_bom_is_dropped() -> None:
    """A UTF-8 byte order mark at the start of the stream is not part of the first field."""
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent(data="x")]


def test_retry_sets_the_reconnection_delay_without_an_event() -> None:
    """`retry:` with digits sets `retry_ms` and dispatches nothing by itself."""
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 3000\n\n") == []
    assert decoder.retry_ms == 3000


def test_retry_with_non_digits_is_ignored() -> None:
    """A `retry` value that is not all ASCII digits leaves the delay unchanged."""
    decoder = SSEDecoder()
    decoder.feed(b"retry: 10s\n\n")
    assert decoder.retry_ms is None


def test_last_event_id_persists_across_events() -> None:
    """An event without `id` carries the last id seen, as the standard says."""
    assert [e.id for e in parse(b"id: 1\ndata: a\n\ndata: b\n\n")] == ["1", "1"]


def test_id_with_null_is_ignored() -> None:
    """An `id` containing NULL does not change the last event id."""
    assert parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")[1].id == "1"


def test_event_type_does_not_leak_into_the_next_event() -> None:
    """The event type resets after each dispatch."""
    assert [e.event for e in parse(b"event: desired\ndata: a\n\ndata: b\n\n")] == [
        "desired",
        "message",
    ]


def test_blank_line_without_data_dispatches_nothing() -> None:
    """A block with an event type but no data is dropped, and its type forgotten."""
    assert parse(b"event: desired\n\ndata: b\n\n") == [ServerSentEvent(data="b")]
