"""The content-addressed blob store on a real filesystem."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloud.core.blobstore import (
    BlobDigestMismatch,
    BlobStore,
    InvalidDigest,
    StoredBlob,
    is_sha256,
)
from cloud.core.errors import (
    BadRequest,
    BlobNotFound,
    InvalidInput,
    InvalidRange,
    PayloadTooLarge,
)

CHUNK = 1024


def make_content(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes, so every offset holds a distinguishable value."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def sha256_of(data: bytes) -> str:
    """The hex digest the store should name ``data`` by."""
    return hashlib.sha256(data).hexdigest()


def chunked(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    """``data`` as a stream of pieces of at most ``size`` bytes."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def achunked(data: bytes, size: int = CHUNK) -> AsyncIterator[bytes]:
    """``data`` as an async stream, like a request body."""
    for piece in chunked(data, size):
        yield piece


def failing_stream(data: bytes) -> Iterator[bytes]:
    """A stream that delivers some bytes and then breaks, like a dropped connection."""
    yield from chunked(data)
    raise ConnectionResetError("client went away")


def files_under(root: Path) -> list[Path]:
    """Every regular file anywhere below ``root``."""
    return sorted(path for path in root.rglob("*") if path.is_file())


def make_store(tmp_path: Path) -> BlobStore:
    """A store rooted in a fresh folder under the test's tmp_path."""
    return BlobStore(tmp_path / "blobs")


def test_written_blob_reads_back_by_digest(tmp_path: Path) -> None:
    """A streamed blob is named by its sha256 and reads back byte for byte."""
    store = make_store(tmp_path)
    data = make_content(3 * CHUNK + 5)
    blob = store.write_stream(chunked(data))
    assert blob == StoredBlob(sha256=sha256_of(data), size=len(data), path=blob.path)
    assert b"".join(store.open_range(blob.sha256, 0, len(data) - 1)) == data
    assert store.size(blob.sha256) == len(data)


def test_blob_lands_at_two_level_fan_out_path(tmp_path: Path) -> None:
    """A blob's file sits at root/sha256/ab/cd/<digest>."""
    store = make_store(tmp_path)
    blob = store.write_bytes(b"hello")
    digest = sha256_of(b"hello")
    assert blob.path == tmp_path / "blobs" / "sha256" / digest[:2] / digest[2:4] / digest
    assert blob.path.read_bytes() == b"hello"


def test_creating_a_store_touches_no_disk(tmp_path: Path) -> None:
    """Constructing a BlobStore creates no directories."""
    BlobStore(tmp_path / "blobs")
    assert not (tmp_path / "blobs").exists()


def test_empty_blob_round_trips(tmp_path: Path) -> None:
    """A zero-byte blob is stored and reads back empty as the range (0, -1)."""
    store = make_store(tmp_path)
    blob = store.write_bytes(b"")
    assert blob.size == 0
    assert list(store.open_range(blob.sha256, 0, -1)) == []


def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    """Writing the same bytes twice succeeds both times and leaves one file."""
    store = make_store(tmp_path)
    data = make_content(100)
    first = store.write_bytes(data)
    second = store.write_stream(chunked(data, 7))
    assert first == second
    assert files_under(store.root) == [first.path]


def test_oversize_stream_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    """A stream past max_bytes raises PayloadTooLarge naming the limit, and no file remains."""
    store = make_store(tmp_path)
    data = make_content(4 * CHUNK)
    with pytest.raises(PayloadTooLarge, match=r"1024 bytes.*TANDEM_MAX_UPLOAD_BYTES"):
        store.write_stream(chunked(data), max_bytes=CHUNK)
    assert files_under(store.root) == []
    assert not store.exists(sha256_of(data))


def test_stream_exactly_at_max_bytes_is_accepted(tmp_path: Path) -> None:
    """max_bytes is inclusive: a blob of exactly that size is stored."""
    store = make_store(tmp_path)
    blob = store.write_bytes(make_content(CHUNK), max_bytes=CHUNK)
    assert blob.size == CHUNK


def test_digest_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    """Bytes whose sha256 differs from expected_sha256 raise BlobDigestMismatch; no file remains."""
    store = make_store(tmp_path)
    data = make_content(100)
    with pytest.raises(BlobDigestMismatch) as caught:
        store.write_bytes(data, expected_sha256=sha256_of(b"something else"))
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "blob_digest_mismatch"
    assert files_under(store.root) == []


def test_matching_expected_digest_is_accepted(tmp_path: Path) -> None:
    """Bytes that hash to expected_sha256 are stored."""
    store = make_store(tmp_path)
    data = make_content(100)
    assert store.write_bytes(data, expected_sha256=sha256_of(data)).sha256 == sha256_of(data)


def test_stream_failing_midway_leaves_nothing(tmp_path: Path) -> None:
    """An exception from the chunk source propagates and leaves no temp or final file."""
    store = make_store(tmp_path)
    data = make_content(3 * CHUNK)
    with pytest.raises(ConnectionResetError):
        store.write_stream(failing_stream(data))
    assert files_under(store.root) == []


def test_concurrent_writers_of_same_content_all_succeed(tmp_path: Path) -> None:
    """Threads storing identical bytes at once all succeed and leave one correct file."""
    store = make_store(tmp_path)
    data = make_content(256 * CHUNK)
    writers = 8
    start = threading.Barrier(writers)

    def write() -> StoredBlob:
        start.wait()
        return store.write_stream(chunked(data, 16 * CHUNK))

    with ThreadPoolExecutor(max_workers=writers) as pool:
        blobs = list(pool.map(lambda _: write(), range(writers)))
    assert {blob.sha256 for blob in blobs} == {sha256_of(data)}
    assert files_under(store.root) == [blobs[0].path]
    assert blobs[0].path.read_bytes() == data


@pytest.mark.parametrize(
    "digest",
    [
        pytest.param(sha256_of(b"x").upper(), id="uppercase"),
        pytest.param(sha256_of(b"x")[:63], id="short"),
        pytest.param(sha256_of(b"x") + "0", id="long"),
        pytest.param("../../etc/passwd", id="traversal"),
        pytest.param("../" * 21 + "a", id="traversal-64-chars"),
        pytest.param("g" * 64, id="non-hex"),
        pytest.param(sha256_of(b"x")[:63] + "\n", id="trailing-newline"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_digest_is_rejected(tmp_path: Path, digest: str) -> None:
    """Anything but 64 lowercase hex characters raises InvalidDigest, a BadRequest."""
    store = make_store(tmp_path)
    assert not is_sha256(digest)
    with pytest.raises(InvalidDigest) as caught:
        store.path_for(digest)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.code == "invalid_digest"


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.exists("../../etc/passwd"), id="exists"),
        pytest.param(lambda s: s.size("../../etc/passwd"), id="size"),
        pytest.param(lambda s: s.open_range("../../etc/passwd", 0, 0), id="open_range"),
        pytest.param(lambda s: s.delete("../../etc/passwd"), id="delete"),
        pytest.param(lambda s: s.write_bytes(b"x", expected_sha256="XYZ"), id="write_bytes"),
    ],
)
def test_every_digest_taking_method_validates(
    tmp_path: Path, call: Callable[[BlobStore], object]
) -> None:
    """Each public method that takes a digest refuses a malformed one before touching disk."""
    store = make_store(tmp_path)
    with pytest.raises(InvalidDigest):
        call(store)
    assert not store.root.exists()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(0, 3 * CHUNK + 16, id="whole-file"),
        pytest.param(0, 0, id="first-byte"),
        pytest.param(3 * CHUNK + 16, 3 * CHUNK + 16, id="last-byte"),
        pytest.param(500, 500, id="single-middle-byte"),
        pytest.param(0, CHUNK - 1, id="exactly-one-chunk"),
        pytest.param(CHUNK, 2 * CHUNK - 1, id="aligned-second-chunk"),
        pytest.param(CHUNK - 1, CHUNK, id="straddles-boundary"),
        pytest.param(10, 3 * CHUNK + 5, id="unaligned-multi-chunk"),
        pytest.param(2 * CHUNK, 3 * CHUNK + 16, id="aligned-to-end"),
    ],
)
def test_range_read_returns_exact_bytes(tmp_path: Path, start: int, end: int) -> None:
    """open_range yields exactly data[start:end+1], in pieces no larger than chunk_size."""
    store = make_store(tmp_path)
    data = make_content(3 * CHUNK + 17)
    blob = store.write_bytes(data)
    pieces = list(store.open_range(blob.sha256, start, end, chunk_size=CHUNK))
    assert b"".join(pieces) == data[start : end + 1]
    assert all(0 < len(piece) <= CHUNK for piece in pieces)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(0, 100, id="end-at-size"),
        pytest.param(-1, 5, id="negative-start"),
        pytest.param(10, 5, id="end-before-start"),
    ],
)
def test_range_outside_blob_raises_invalid_range(tmp_path: Path, start: int, end: int) -> None:
    """Bounds outside the blob raise InvalidRange with the size, before any read."""
    store = make_store(tmp_path)
    blob = store.write_bytes(make_content(100))
    with pytest.raises(InvalidRange) as caught:
        store.open_range(blob.sha256, start, end)
    assert caught.value.details == {"size": 100}


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, d: s.size(d), id="size"),
        pytest.param(lambda s, d: s.open_range(d, 0, 0), id="open_range"),
        pytest.param(lambda s, d: s.delete(d), id="delete"),
    ],
)
def test_missing_blob_raises_not_found(
    tmp_path: Path, call: Callable[[BlobStore, str], object]
) -> None:
    """Asking for an absent blob raises BlobNotFound naming its digest, at call time."""
    store = make_store(tmp_path)
    digest = sha256_of(b"never stored")
    with pytest.raises(BlobNotFound, match=digest):
        call(store, digest)


def test_deleted_blob_is_gone(tmp_path: Path) -> None:
    """After delete, the blob no longer exists."""
    store = make_store(tmp_path)
    blob = store.write_bytes(b"short-lived")
    store.delete(blob.sha256)
    assert not store.exists(blob.sha256)


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    """sweep_temp deletes temp files older than the cutoff and spares fresh ones and blobs."""
    store = make_store(tmp_path)
    blob = store.write_bytes(b"kept")
    stale = store.temp_dir / "blob-crashed.part"
    fresh = store.temp_dir / "blob-uploading.part"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    an_hour_ago = time.time() - 3601
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert store.sweep_temp(older_than_s=3600) == 1
    assert files_under(store.root) == sorted([blob.path, fresh])


def test_sweep_of_a_fresh_store_finds_nothing(tmp_path: Path) -> None:
    """sweep_temp on a store never written to returns 0."""
    assert make_store(tmp_path).sweep_temp() == 0


async def test_async_stream_round_trips(tmp_path: Path) -> None:
    """A body streamed through write_async_stream reads back by digest."""
    store = make_store(tmp_path)
    data = make_content(3 * 1024 * 1024 + 3)  # several thread batches
    blob = await store.write_async_stream(achunked(data, 64 * 1024))
    assert blob.sha256 == sha256_of(data)
    assert blob.path.read_bytes() == data


async def test_async_stream_enforces_max_bytes(tmp_path: Path) -> None:
    """An async stream past max_bytes raises PayloadTooLarge and leaves no file."""
    store = make_store(tmp_path)
    with pytest.raises(PayloadTooLarge):
        await store.write_async_stream(achunked(make_content(4 * CHUNK)), max_bytes=CHUNK)
    assert files_under(store.root) == []


async def test_async_stream_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    """An async stream with the wrong expected_sha256 raises and leaves no file."""
    store = make_store(tmp_path)
    with pytest.raises(BlobDigestMismatch):
        await store.write_async_stream(
            achunked(make_content(100)), expected_sha256=sha256_of(b"other")
        )
    assert files_under(store.root) == []
