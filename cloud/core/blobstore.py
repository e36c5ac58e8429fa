"""Content-addressed blob storage on a local filesystem.

A blob is named by the sha256 of its bytes, so identical uploads share one file. A write
goes to ``root/tmp/`` and is moved to ``root/sha256/ab/cd/<digest>`` by one atomic
``os.replace`` after an fsync: readers see the whole blob or nothing, even across a crash.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from cloud.core.errors import BadRequest, BlobNotFound, InvalidInput, InvalidRange, PayloadTooLarge

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MIB = 1024 * 1024
# Request bodies arrive in ~64 KiB pieces; a thread hand-off per piece would cost more than
# the write, so the async path batches them. The batch also bounds an upload's memory.
_ASYNC_BATCH_BYTES = 1 * _MIB


class InvalidDigest(BadRequest):
    """A blob name that is not 64 lowercase hex characters."""

    code = "invalid_digest"


class BlobDigestMismatch(InvalidInput):
    """Uploaded bytes whose sha256 differs from the digest the client declared."""

    code = "blob_digest_mismatch"


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob that is durably in the store: its digest, its size in bytes and its file."""

    sha256: str
    size: int
    path: Path


def is_sha256(s: str) -> bool:
    """Whether ``s`` is a digest as the store spells it: exactly 64 lowercase hex chars."""
    return _SHA256.fullmatch(s) is not None


def _check_digest(s: str) -> str:
    # Every path is built from a checked digest, which is what rules out path traversal.
    if not is_sha256(s):
        raise InvalidDigest(
            f"{s[:80]!r} is not a sha256 digest; expected 64 lowercase hex characters (0-9, a-f)."
        )
    return s


def _not_found(sha256: str) -> BlobNotFound:
    return BlobNotFound(f"Blob {sha256} is not in the store; upload it first.")


def _fsync_dir(directory: Path) -> None:
    # A file's own fsync does not make its name durable; the directory's entry needs one too.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs_durably(directory: Path) -> None:
    if directory.is_dir():
        return
    _make_dirs_durably(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:  # another writer made it first
        return
    _fsync_dir(directory.parent)


class _PendingBlob:
    """One write in progress: temp file (created here), running hash, size.

    Both write paths drive it, so the size limit, digest check and commit exist once.
    """

    def __init__(self, store: BlobStore, max_bytes: int | None, expected: str | None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
        self._store = store
        self._max_bytes = max_bytes
        self._expected = None if expected is None else _check_digest(expected)
        self._hash = hashlib.sha256()
        self._size = 0
        self._moved = False
        store.temp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=store.temp_dir, prefix="blob-", suffix=".part")
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb")

    def admit(self, chunk: bytes) -> None:
        """Count ``chunk`` against the limit; called before any of it is written."""
        self._size += len(chunk)
        if self._max_bytes is not None and self._size > self._max_bytes:
            limit = self._max_bytes
            raise PayloadTooLarge(
                f"Upload exceeds the limit of {limit} bytes ({limit / _MIB:.1f} MiB); "
                "send a smaller blob, or raise TANDEM_MAX_UPLOAD_BYTES on the server.",
                details={"max_bytes": limit},
            )

    def write(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self._hash.update(chunk)
            self._file.write(chunk)

    def commit(self) -> StoredBlob:
        digest = self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            raise BlobDigestMismatch(
                f"Uploaded bytes have sha256 {digest}, not the declared {self._expected}; "
                "recompute the digest of exactly what you send and upload again.",
                details={"expected": self._expected, "actual": digest},
            )
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.path_for(digest)
        _make_dirs_durably(final.parent)
        # A file already there holds the same bytes (same name); discard() then drops ours.
        if not (final.is_file() and final.stat().st_size == self._size):
            os.replace(self._temp, final)
            self._moved = True
            _fsync_dir(final.parent)
        return StoredBlob(sha256=digest, size=self._size, path=final)

    def discard(self) -> None:
        """Close and remove the temp file unless commit moved it; safe to call twice."""
        self._file.close()
        if not self._moved:
            self._temp.unlink(missing_ok=True)


class BlobStore:
    """Blobs named by their sha256 under ``root``; directories appear on the first write.

    Every method taking a digest raises :class:`InvalidDigest` unless ``is_sha256(digest)``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.temp_dir = self.root / "tmp"
        self._blob_dir = self.root / "sha256"

    def path_for(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (or would live); does no I/O."""
        _check_digest(sha256)
        return self._blob_dir / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether the blob ``sha256`` is in the store."""
        return self.path_for(sha256).is_file()

    def size(self, sha256: str) -> int:
        """The blob's size in bytes; raises :class:`BlobNotFound` when it is absent."""
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            raise _not_found(sha256) from None

    def write_stream(
        self,
        chunks: Iterable[bytes],
        *,
        max_bytes: int | None = None,
        expected_sha256: str | None = None,
    ) -> StoredBlob:
        """Store the concatenated ``chunks`` and return where they went.

        Raises :class:`PayloadTooLarge` as soon as the total passes ``max_bytes`` and
        :class:`BlobDigestMismatch` when ``expected_sha256`` is given and differs. On any
        error, including one raised by ``chunks`` itself, nothing is left behind.
        """
        pending = _PendingBlob(self, max_bytes, expected_sha256)
        try:
            for chunk in chunks:
                pending.admit(chunk)
                pending.write((chunk,))
            return pending.commit()
        finally:
            pending.discard()

    def write_bytes(
        self,
        data: bytes,
        *,
        max_bytes: int | None = None,
        expected_sha256: str | None = None,
    ) -> StoredBlob:
        """Store ``data``; same contract as :meth:`write_stream`."""
        return self.write_stream((data,), max_bytes=max_bytes, expected_sha256=expected_sha256)

    async def write_async_stream(
        self,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int | None = None,
        expected_sha256: str | None = None,
    ) -> StoredBlob:
        """Store a request body as it streams in; same contract as :meth:`write_stream`.

        Hashing, writes and the fsync run in worker threads, one hand-off per ~1 MiB, so
        the loop never waits on the disk (a SpooledTemporaryFile would write and fsync on
        the loop, and copy every byte twice). The limit is checked per chunk, on arrival.
        """
        pending = await anyio.to_thread.run_sync(_PendingBlob, self, max_bytes, expected_sha256)
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                pending.admit(chunk)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= _ASYNC_BATCH_BYTES:
                    await anyio.to_thread.run_sync(pending.write, batch)
                    batch, batched = [], 0
            await anyio.to_thread.run_sync(pending.write, batch)
            return await anyio.to_thread.run_sync(pending.commit)
        finally:
            # Runs inline: a close and an unlink are brief, and a thread hand-off here
            # could itself be cancelled, leaking the temp file.
            pending.discard()

    def open_range(
        self, sha256: str, start: int, end_inclusive: int, chunk_size: int = 64 * 1024
    ) -> Iterator[bytes]:
        """Stream bytes ``start..end_inclusive`` of the blob in pieces of <= ``chunk_size``.

        Digest, presence and bounds are checked now, so a route can map errors to a status
        before responding; the file is read only as the iterator is consumed. Bounds outside
        the blob raise :class:`InvalidRange` with ``details={"size": size}``. The empty range
        ``(start, start - 1)`` is allowed, so ``(0, size - 1)`` reads any blob whole.
        """
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        size = self.size(sha256)
        if not (0 <= start <= end_inclusive + 1 and end_inclusive < size):
            raise InvalidRange(
                f"Bytes {start}-{end_inclusive} are outside blob {sha256} of {size} bytes.",
                details={"size": size},
            )
        return self._read(sha256, start, end_inclusive + 1 - start, chunk_size)

    def _read(self, sha256: str, start: int, length: int, chunk_size: int) -> Iterator[bytes]:
        # A delete racing this open surfaces as FileNotFoundError; the response has started
        # by then, so no status could report it. Once open, POSIX keeps the inode readable.
        with self.path_for(sha256).open("rb") as file:
            file.seek(start)
            while length > 0:
                chunk = file.read(min(chunk_size, length))
                if not chunk:
                    raise OSError(f"Blob {sha256} is truncated on disk; restore it or delete it.")
                length -= len(chunk)
                yield chunk

    def delete(self, sha256: str) -> None:
        """Remove the blob (open readers finish); raises :class:`BlobNotFound` if absent."""
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            raise _not_found(sha256) from None

    def sweep_temp(self, older_than_s: float = 3600) -> int:
        """Remove temp files not modified for ``older_than_s`` seconds; return how many.

        A live upload touches its file with every write, so only one stalled that long is
        removed; its commit then fails cleanly rather than storing a partial blob.
        """
        cutoff = time.time() - older_than_s
        if not self.temp_dir.is_dir():
            return 0
        removed = 0
        for entry in self.temp_dir.iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:  # committed or discarded meanwhile
                continue
        return removed
