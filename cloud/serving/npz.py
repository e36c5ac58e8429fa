"""Reading ``np.savez`` archives from untrusted bytes, quickly and safely.

An archive of a few small arrays (one request's rows) costs more to open with ``zipfile``
and numpy's header parser than everything else in a request. So the archives numpy writes
(stored members, the header numpy emits) take a direct path: the central directory is read
with ``struct``, each member's CRC is checked, its header matched by one regular expression,
and its array made over the body's bytes without a copy. Anything else (compressed members,
zip64, other writers' headers) goes through ``zipfile`` and numpy's own parser. Both paths
refuse object dtypes, so nothing is ever unpickled, and both bound the array bytes.

What a client's ``np.savez`` writes is cheaper still: :func:`read_plain` reads such an
archive (no comment, native C-order arrays, each member's name and header looked up whole
in a cache of those seen before) in one pass over the directory, a few operations a
member, and builds each array with one constructor call. At the first thing it does not
expect it gives up and the member-by-member reader decides, with its errors. A request
body of seven small arrays costs about a third of what that reader takes.
"""

from __future__ import annotations

import functools
import io
import math
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from cloud.core.errors import InvalidModelInput, InvalidTensorBody, PayloadTooLarge

MAX_ARRAYS = 256
_NPY_HEADER = re.compile(
    r"\{'descr': '([<>|=]?[biuf]\d{1,2})', 'fortran_order': (False|True), "
    r"'shape': \(((?:\d+, ?)*\d*)\), \} *\n?"
)
_NPY_MAGIC = b"\x93NUMPY"
# Room for an .npy header beyond the array data, when sizing what a member may hold.
_HEADER_ALLOWANCE = 64 * 1024
END = struct.Struct("<4sHHHHIIH")  # end of central directory
ENTRY = struct.Struct("<4s4xHH4xIIIHHH8xI")  # central directory entry (46 bytes)
_LOCAL = struct.Struct("<4s22xHH")  # local file header (30 bytes)


def _stored_members(body: bytes) -> list[tuple[str, bytes]] | None:
    """The members of a plain archive of stored files; None when it is anything else."""
    end = body.rfind(b"PK\x05\x06", max(0, len(body) - 65_557))
    if end < 0 or end + END.size > len(body):
        return None
    _, disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = END.unpack_from(body, end)
    if disk or cd_disk or on_disk != total or total > MAX_ARRAYS or cd_offset + cd_size > end:
        return None
    members = []
    position = cd_offset
    for _ in range(total):
        if position + ENTRY.size > end:
            return None
        signature, flags, method, crc, size, full, name_len, extra_len, comment_len, local = (
            ENTRY.unpack_from(body, position)
        )
        if signature != b"PK\x01\x02" or method != 0 or flags & 0x1 or size != full:
            return None
        raw_name = body[position + 46 : position + 46 + name_len]
        position += 46 + name_len + extra_len + comment_len
        if local + _LOCAL.size > len(body):
            return None
        local_signature, local_name, local_extra = _LOCAL.unpack_from(body, local)
        start = local + _LOCAL.size + local_name + local_extra
        if local_signature != b"PK\x03\x04" or start + size > cd_offset:
            return None
        data = body[start : start + size]
        if zlib.crc32(data) != crc:
            return None
        members.append((raw_name.decode("utf-8" if flags & 0x800 else "cp437"), data))
    return members


def _zip_members(body: bytes, max_bytes: int) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_ARRAYS:
            raise InvalidTensorBody(f"The archive holds {len(infos)} files; at most {MAX_ARRAYS}.")
        members = []
        for info in infos:
            if info.file_size > max_bytes + _HEADER_ALLOWANCE:
                raise _too_large(info.filename[:-4], info.file_size, max_bytes)
            members.append((info.filename, archive.read(info)))
        return members


@functools.lru_cache(maxsize=64)
def _dtype(descr: str) -> np.dtype[Any]:
    return np.dtype(descr)


@functools.lru_cache(maxsize=256)
def _numpy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any]] | None:
    """A header as numpy writes it, parsed; cached, as a client sends the same few."""
    match = _NPY_HEADER.fullmatch(header.decode("latin-1"))
    if match is None:
        return None
    descr, fortran, dims = match.groups()
    shape = tuple(int(d) for d in dims.replace(" ", "").split(",") if d)
    return shape, fortran == "True", _dtype(descr)


def _header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, Fortran order, dtype, offset of the array data) of an .npy file's bytes."""
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        raise ValueError("not an .npy array (no magic string)")
    major = data[6]
    if major == 1:
        length, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f"unsupported .npy version {major}")
    known = _numpy_header(data[start : start + length])
    if known is not None:
        return (*known, start + length)
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    return tuple(shape), bool(fortran_order), dtype, stream.tell()


def _array(name: str, data: bytes, budget: int) -> np.ndarray[Any, Any]:
    shape, fortran, dtype, offset = _header(data)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise InvalidModelInput(
            f"Array {name!r} has dtype {dtype}; only numeric and boolean arrays are "
            "accepted (never pickled objects).",
            details={"input": name},
        )
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > budget:
        raise _too_large(name, nbytes, budget)
    if len(data) - offset != nbytes:
        raise ValueError(f"array data is {len(data) - offset} bytes, expected {nbytes}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran else "C")
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    # (ascontiguousarray would turn a 0-d array into a 1-d one)
    return array if array.flags.c_contiguous else array.copy(order="C")


def _too_large(name: str, nbytes: int, budget: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Array {name!r} would take {nbytes} bytes, over the {budget}-byte limit left for "
        "this request; send fewer rows per request.",
        details={"max_bytes": budget},
    )


_NPY_V1 = _NPY_MAGIC + b"\x01\x00"


@functools.lru_cache(maxsize=512)
def plain_member(
    raw_name: bytes, header: bytes
) -> tuple[str, np.dtype[Any], tuple[int, ...], int] | None:
    """(input name, dtype, shape, data bytes) of a member named ``raw_name`` whose .npy
    header (magic included) is ``header``, when both are as ``np.savez`` writes them for a
    native, C-order, numeric array; None for anything else."""
    if header[:8] != _NPY_V1 or not raw_name.endswith(b".npy") or not raw_name.isascii():
        return None
    try:
        known = _numpy_header(header[10:])
    except (TypeError, ValueError):  # a descr numpy does not know ('<f3')
        return None
    if known is None:
        return None
    shape, fortran, dtype = known
    if fortran or not dtype.isnative or dtype.kind not in "biuf":
        return None
    return raw_name[:-4].decode("ascii"), dtype, shape, math.prod(shape) * dtype.itemsize


def read_plain(body: bytes, max_bytes: int) -> dict[str, np.ndarray[Any, Any]] | None:
    """The arrays of an archive exactly as ``np.savez`` writes it, or None (undecided: the
    general path reads the body and words any error)."""
    end = len(body) - END.size
    if end < 0 or body[end : end + 4] != b"PK\x05\x06":
        return None
    _, disk, cd_disk, on_disk, total, cd_size, cd_offset, comment = END.unpack_from(body, end)
    if disk or cd_disk or comment or on_disk != total or total > MAX_ARRAYS:
        return None
    if cd_offset + cd_size != end:
        return None
    view = memoryview(body)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    budget = max_bytes
    position = cd_offset
    for _ in range(total):
        if position + ENTRY.size > end:
            return None
        signature, flags, method, crc, size, full, name_len, extra_len, comment_len, local = (
            ENTRY.unpack_from(body, position)
        )
        if signature != b"PK\x01\x02" or method != 0 or flags & 0x1 or size != full:
            return None
        raw_name = body[position + 46 : position + 46 + name_len]
        position += 46 + name_len + extra_len + comment_len
        if local + _LOCAL.size > cd_offset:
            return None
        local_signature, local_name, local_extra = _LOCAL.unpack_from(body, local)
        start = local + _LOCAL.size + local_name + local_extra
        if local_signature != b"PK\x03\x04" or start + size > cd_offset or size < 10:
            return None
        if zlib.crc32(view[start : start + size]) != crc:
            return None
        data = start + 10 + body[start + 8] + (body[start + 9] << 8)
        member = plain_member(raw_name, body[start:data])
        if member is None:
            return None
        name, dtype, shape, nbytes = member
        if nbytes > budget or data + nbytes != start + size or name in arrays:
            return None
        # (the constructor over the body's bytes: a third of frombuffer and reshape)
        arrays[name] = np.ndarray(shape, dtype, body, data)
        budget -= nbytes
    return arrays


def read_arrays(body: bytes, *, max_bytes: int) -> dict[str, np.ndarray[Any, Any]]:
    """The named arrays of an ``np.savez`` archive holding at most ``max_bytes`` of data.

    Total over its input: arrays, or InvalidTensorBody (unreadable), InvalidModelInput (a
    non-numeric array) or PayloadTooLarge.
    """
    plain = read_plain(body, max_bytes)
    if plain is not None:
        return plain
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    try:
        members = _stored_members(body)
        if members is None:
            members = _zip_members(body, max_bytes)
        budget = max_bytes
        for filename, data in members:
            name = filename[:-4]
            if not filename.endswith(".npy") or name in arrays:
                raise InvalidTensorBody(
                    f"Archive member {filename[:64]!r} is not a uniquely named .npy array; "
                    "build the body with np.savez(buffer, **inputs)."
                )
            arrays[name] = _array(name, data, budget)
            budget -= arrays[name].nbytes
    except (InvalidTensorBody, InvalidModelInput, PayloadTooLarge):
        raise
    except Exception as exc:
        # Hostile bytes can fail anywhere in zipfile, zlib or numpy's header parser; each
        # such failure means the body is not a readable archive, never a server error.
        raise InvalidTensorBody(
            f"The body is not a readable .npz archive ({exc.__class__.__name__}); build it "
            "with np.savez(buffer, **inputs) and send the whole buffer.",
        ) from None
    return arrays


_LOCAL_OUT = struct.Struct("<4sHHHHHIIIHH")
_ENTRY_OUT = struct.Struct("<4sHHHHHHIIIHHHHHII")
_DOS_DATE = (1 << 5) | 1  # 1980-01-01, the zip format's epoch


@functools.lru_cache(maxsize=64)
def _descr(dtype: np.dtype[Any]) -> str:
    return str(np.lib.format.dtype_to_descr(dtype))


@functools.lru_cache(maxsize=256)
def npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> tuple[bytes, int]:
    """The .npy header (format 1.0) ``np.save`` writes for an array, and its CRC-32; cached,
    as a model answers in the same few shapes."""
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    header = f"{{'descr': '{_descr(dtype)}', 'fortran_order': False, 'shape': ({dims}), }}"
    # Magic, version, length, header and its newline end on a 64-byte boundary.
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    raw = b"".join((_NPY_MAGIC, b"\x01\x00", len(header).to_bytes(2, "little"), header.encode()))
    return raw, zlib.crc32(raw)


def _npy_member(array: np.ndarray[Any, Any]) -> tuple[tuple[bytes, Any], int, int]:
    """``array`` as an .npy file (header, data), its size and CRC-32."""
    if not array.flags.c_contiguous:
        array = array.copy(order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    header, header_crc = npy_header(array.dtype, array.shape)
    data = array.data
    return (header, data), len(header) + array.nbytes, zlib.crc32(data, header_crc)


def write_arrays(arrays: dict[str, np.ndarray[Any, Any]]) -> bytes:
    """An archive ``np.load`` reads as ``arrays``: what ``np.savez`` writes, built directly
    (stored members, no zip64) when that is possible, by ``np.savez`` otherwise."""
    simple = all(a.dtype.kind in "biuf" and a.nbytes < (1 << 31) for a in arrays.values())
    if not simple or len(arrays) > MAX_ARRAYS:
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        return buffer.getvalue()
    parts: list[Any] = []  # bytes, and the arrays' buffers
    entries: list[bytes] = []
    offset = 0
    for name, array in arrays.items():
        data, size, crc = _npy_member(array)
        filename = f"{name}.npy".encode()
        local = _LOCAL_OUT.pack(
            b"PK\x03\x04", 20, 0x800, 0, 0, _DOS_DATE, crc, size, size, len(filename), 0
        )
        entries.append(
            _ENTRY_OUT.pack(
                b"PK\x01\x02",
                20,
                20,
                0x800,
                0,
                0,
                _DOS_DATE,
                crc,
                size,
                size,
                len(filename),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + filename
        )
        parts += (local, filename, *data)
        offset += len(local) + len(filename) + size
    directory = b"".join(entries)
    end = END.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), offset, 0)
    return b"".join((*parts, directory, end))
