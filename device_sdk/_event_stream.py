"""A live Server-Sent Events connection to the cloud, closable from another thread."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType

import httpx

from device_sdk._errors import CloudUnavailable
from device_sdk._sse import ServerSentEvent, SSEDecoder


class EventStream:
    """An open event stream: iterate it for events; ``close()`` from any thread ends it.

    Iteration raises :class:`CloudUnavailable` when the connection breaks or stays silent
    past the heartbeat timeout, and simply stops after ``close()``.
    """

    def __init__(self, response: httpx.Response, cloud_url: str) -> None:
        self._response = response
        self._cloud_url = cloud_url
        self._decoder = SSEDecoder()
        self._closed = threading.Event()

    @property
    def retry_ms(self) -> int | None:
        """The reconnection delay the cloud asked for with ``retry:``, if it did."""
        return self._decoder.retry_ms

    @property
    def last_event_id(self) -> str | None:
        """The id of the latest event, to send back as ``Last-Event-ID``."""
        return self._decoder.last_event_id

    def __iter__(self) -> Iterator[ServerSentEvent]:
        try:
            for chunk in self._response.iter_raw():
                yield from self._decoder.feed(chunk)
                if self._closed.is_set():
                    return
        except Exception as exc:
            # After close() the reader sees whatever error the torn-down socket gives.
            if self._closed.is_set():
                return
            if isinstance(exc, httpx.TransportError | httpx.StreamError):
                raise CloudUnavailable(
                    f"The event stream from {self._cloud_url} broke ({type(exc).__name__}: "
                    f"{exc}); the SDK reconnects with backoff."
                ) from exc
            raise
        finally:
            self._response.close()
        if not self._closed.is_set():
            raise CloudUnavailable(
                f"The cloud at {self._cloud_url} ended the event stream; "
                "the SDK reconnects with backoff."
            )

    def close(self) -> None:
        """End the stream; a thread blocked reading it returns promptly."""
        self._closed.set()
        network = self._response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if isinstance(sock, socket.socket):
            # shutdown() wakes a recv() blocked in another thread; close() alone may not.
            with contextlib.suppress(OSError):  # OSError: the peer closed it already
                sock.shutdown(socket.SHUT_RDWR)
        else:
            self._response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
