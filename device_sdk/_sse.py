"""An incremental Server-Sent Events parser, as the WHATWG HTML standard (9.2.6) defines it.

Bytes go in, in pieces of any size; complete events come out. Lines end with CRLF, LF or
CR (a CR at the end of one piece may be the first half of a CRLF in the next); a UTF-8
BOM at the very start is dropped; comment lines (``:``...) and unknown fields are
ignored; several ``data:`` lines join with ``\\n``; ``id`` persists across events until
changed; ``retry`` sets the reconnection delay and is not an event by itself.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from device_sdk._errors import CloudUnavailable

_BOM = "\ufeff"
# A line or an event bigger than this is no nudge: a broken proxy or server. Bounding it
# keeps a device from buffering without end; the stream is dropped and reopened.
MAX_LINE_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type (``message`` unless named), data, and last event id."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None


class SSEDecoder:
    """Turns a byte stream into :class:`ServerSentEvent` objects, piece by piece.

    ``retry_ms`` holds the latest reconnection delay the server asked for, and
    ``last_event_id`` the id to send back as ``Last-Event-ID`` on reconnect.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._data_chars = 0
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse ``chunk`` and return the events it completed, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix(_BOM)
        return list(self._lines(text))

    def iter_events(self, chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
        """Every event in ``chunks``, yielded as soon as it is complete."""
        for chunk in chunks:
            yield from self.feed(chunk)

    def _lines(self, text: str) -> Iterator[ServerSentEvent]:
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two pieces
        self._pending_cr = False
        self._buffer += text
        start = 0
        while True:
            cr = self._buffer.find("\r", start)
            lf = self._buffer.find("\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            line = self._buffer[start:end]
            if self._buffer[end] == "\r":
                if end + 1 == len(self._buffer):
                    self._pending_cr = True
                    start = end + 1
                elif self._buffer[end + 1] == "\n":
                    start = end + 2
                else:
                    start = end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                yield event
        self._buffer = self._buffer[start:]
        if len(self._buffer) > MAX_LINE_CHARS:
            raise CloudUnavailable(
                f"The event stream sent a line longer than {MAX_LINE_CHARS} characters; "
                "the device reconnects."
            )

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment, e.g. the server's heartbeat
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
            self._has_data = True
            self._data_chars += len(value)
            if self._data_chars > MAX_LINE_CHARS:
                raise CloudUnavailable(
                    f"An event of the stream holds more than {MAX_LINE_CHARS} characters of "
                    "data; the device reconnects."
                )
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data, has_data = self._event, self._data, self._has_data
        self._data_chars = 0
        self._event, self._data, self._has_data = "", [], False
        if not has_data:
            return None
        return ServerSentEvent(
            event=event or "message",
            data="\n".join(data),
            id=self.last_event_id,
            retry_ms=self.retry_ms,
        )
