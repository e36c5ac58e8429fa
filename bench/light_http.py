"""A minimal asyncio HTTP/1.1 client for load simulation: keep-alive requests and a
Server-Sent Events reader over raw streams.

Thousands of simulated devices share two cores with the server under test, so the client
must cost far less per request than a full-featured one; it speaks only what Tandem's
device protocol needs (Content-Length and chunked bodies, no redirects, no TLS).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


class Connection:
    """One keep-alive connection; requests on it run one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.requests = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        json_body: Any = None,
    ) -> HttpResponse:
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (0, 1):
            reader, writer = await self._open()
            try:
                writer.write(payload)
                status, response_headers = await _read_head(reader)
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()  # a stale keep-alive connection: retry once on a fresh one
                if attempt:
                    raise
        self.requests += 1
        if "content-length" in response_headers:
            data = await reader.readexactly(int(response_headers["content-length"]))
        elif response_headers.get("transfer-encoding") == "chunked":
            parts = []
            while chunk := await _read_chunk(reader):
                parts.append(chunk)
            await reader.readuntil(b"\r\n")
            data = b"".join(parts)
        else:
            data = b""
        if response_headers.get("connection") == "close":
            self.close()
        return HttpResponse(status, response_headers, data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def sse_events(
    host: str, port: int, path: str, headers: dict[str, str]
) -> AsyncIterator[dict[str, str]]:
    """Open an event stream and yield its events (fields id, event, data); comments and
    heartbeats are skipped. Raises ConnectionError if the server refuses the stream."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, _ = await _read_head(reader)
        if status != 200:
            raise ConnectionError(f"stream refused with {status}")
        buffer = b""
        while chunk := await _read_chunk(reader):
            buffer += chunk
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                event: dict[str, str] = {}
                for line in raw.decode().split("\n"):
                    if line and not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        event[name] = value
                if "data" in event:
                    yield event
    finally:
        writer.close()
