"""Request archives by layout: the bytes of a client's ``np.savez`` body, checked against
the layout of one read before, and merged into a batch without building an array each.

A client scoring rows sends the same arrays, in the same shapes, request after request:
every such archive holds the same bytes everywhere but in its members' data, their CRCs
and their dates. So once :func:`npz.read_plain` has read one body in full, its
:class:`Layout` is kept (by the body's length), and a later body of that length is read
by comparing those fixed bytes and checking each member's CRC, which proves it holds the
same names, dtypes and shapes, without parsing anything. Its arrays are made only when
asked (:meth:`Archive.arrays`); a batch of archives of one layout is merged by joining
each input's data straight from the bodies (:meth:`Layout.merge`).

Responses go the other way: :func:`encode` writes the outputs' archive from a template
of the bytes that do not change, for the few output shapes a model answers in.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloud.serving import npz

Arrays = dict[str, np.ndarray[Any, Any]]
# (input name, dtype, rank, trailing dimensions), as ``signature.Signature.plan`` lists them.
Plan = tuple[tuple[str, np.dtype[Any], int, tuple[int, ...]], ...]

MAX_LAYOUTS = 256  # lengths remembered; past it the oldest is forgotten
_LOCAL_NAME = struct.Struct("<HH")  # a local header's name and extra lengths, at +26


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    data: int  # offset of the array's bytes in the body
    nbytes: int


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """Where every archive of one shape keeps its bytes."""

    size: int
    # (start, stop, bytes): every range outside the data, CRCs and dates, as learned.
    fixed: tuple[tuple[int, int, bytes], ...]
    # (start, stop, offset of its CRC in the central directory): each member's bytes.
    checked: tuple[tuple[int, int, int], ...]
    members: tuple[Member, ...]
    nbytes: int
    # Per model input plan: (rows, shape key) when the arrays are exactly its feeds.
    _exact: dict[Plan, tuple[int, tuple[tuple[int, ...], ...]] | None] = field(default_factory=dict)
    # The same ranges read in one call each: the fixed bytes, and the CRCs in the directory.
    _fixed_reader: struct.Struct = field(init=False)
    _fixed_bytes: tuple[bytes, ...] = field(init=False)
    _crc_reader: struct.Struct = field(init=False)

    def __post_init__(self) -> None:
        fixed_format, at = ["<"], 0
        for start, stop, _ in self.fixed:
            fixed_format.append(f"{start - at}x{stop - start}s")
            at = stop
        crc_format, at = ["<"], 0
        for _, _, crc in self.checked:  # (in directory order: their CRCs' offsets increase)
            crc_format.append(f"{crc - at}xI")
            at = crc + 4
        object.__setattr__(self, "_fixed_reader", struct.Struct("".join(fixed_format)))
        object.__setattr__(self, "_fixed_bytes", tuple(expected for *_, expected in self.fixed))
        object.__setattr__(self, "_crc_reader", struct.Struct("".join(crc_format)))

    def holds(self, body: bytes) -> bool:
        """Whether ``body`` (of this layout's length) is an archive of this layout."""
        if self._fixed_reader.unpack_from(body) != self._fixed_bytes:
            return False
        view = memoryview(body)
        computed = [zlib.crc32(view[start:stop]) for start, stop, _ in self.checked]
        return tuple(computed) == self._crc_reader.unpack_from(body)

    def exact(self, plan: Plan, max_rows: int) -> tuple[int, tuple[tuple[int, ...], ...]] | None:
        """(rows, trailing shapes in plan order) when this layout's arrays are exactly the
        feeds ``plan`` asks for (``signature._exact_feeds``'s test, made once a plan)."""
        try:
            known = self._exact[plan]
        except KeyError:
            known = self._exact[plan] = self._match(plan)
        if known is None or known[0] > max_rows:
            return None
        return known

    def _match(self, plan: Plan) -> tuple[int, tuple[tuple[int, ...], ...]] | None:
        by_name = {m.name: m for m in self.members}
        if len(by_name) != len(plan):
            return None
        rows = set()
        for name, dtype, rank, tail in plan:
            member = by_name.get(name)
            if (
                member is None
                or member.dtype != dtype
                or len(member.shape) != rank
                or member.shape[1:] != tail
            ):
                return None
            rows.add(member.shape[0])
        if len(rows) != 1 or min(rows) < 1:
            return None
        return rows.pop(), tuple(tail for *_, tail in plan)

    def merge(self, bodies: Sequence[bytes]) -> Arrays:
        """The arrays of archives of this layout, concatenated along the first axis."""
        n = len(bodies)
        # The bodies as rows of one byte matrix; each input is a block of its columns.
        matrix = np.frombuffer(b"".join(bodies), np.uint8).reshape(n, self.size)
        merged = {}
        for m in self.members:
            block = np.ascontiguousarray(matrix[:, m.data : m.data + m.nbytes])
            merged[m.name] = block.view(m.dtype).reshape((m.shape[0] * n, *m.shape[1:]))
        return merged


class Archive:
    """A request body known to be an archive of ``layout``; arrays made on demand."""

    __slots__ = ("body", "layout")

    def __init__(self, body: bytes, layout: Layout) -> None:
        self.body = body
        self.layout = layout

    def arrays(self) -> Arrays:
        body = self.body
        return {m.name: np.ndarray(m.shape, m.dtype, body, m.data) for m in self.layout.members}


# The layouts seen, by body length: a few a length (clients whose arrays differ in dtype
# or name but not in size), the lengths in order of last use. Used by the event loop only.
_layouts: dict[int, list[Layout]] = {}
LAYOUTS_PER_LENGTH = 4


def decode(body: bytes, *, max_bytes: int) -> Archive | Arrays:
    """The body's archive when its layout is known, else its arrays (learning the layout
    when the body is a plain ``np.savez`` archive); the errors of ``npz.read_arrays``."""
    known = _layouts.pop(len(body), None)
    if known is not None:
        _layouts[len(body)] = known  # (last used: the last to be forgotten)
        for layout in known:
            if layout.nbytes <= max_bytes and layout.holds(body):
                return Archive(body, layout)
    plain = npz.read_plain(body, max_bytes)
    if plain is None:
        return npz.read_arrays(body, max_bytes=max_bytes)
    learned = learn(body)
    if learned is not None:
        if known is None:
            if len(_layouts) >= MAX_LAYOUTS:
                del _layouts[next(iter(_layouts))]
            known = _layouts[len(body)] = []
        known.insert(0, learned)
        del known[LAYOUTS_PER_LENGTH:]
    return plain


def learn(body: bytes) -> Layout | None:
    """The layout of ``body``, an archive ``npz.read_plain`` accepted, when it is laid out
    as ``np.savez`` writes one (each member right after the one before, from the start of
    the body to the directory, its local name the directory's); None otherwise, and such
    a body is always read in full."""
    end = len(body) - npz.END.size
    *_, total, _, position, _ = npz.END.unpack_from(body, end)
    directory = position
    variable: list[tuple[int, int]] = []
    checked = []
    expected_local = 0
    members = []
    for _ in range(total):
        _, _, _, _, size, _, name_len, extra_len, comment_len, local = npz.ENTRY.unpack_from(
            body, position
        )
        raw_name = body[position + 46 : position + 46 + name_len]
        local_name, local_extra = _LOCAL_NAME.unpack_from(body, local + 26)
        if local != expected_local or body[local + 30 : local + 30 + local_name] != raw_name:
            return None
        start = local + 30 + local_name + local_extra
        data = start + 10 + int.from_bytes(body[start + 8 : start + 10], "little")
        plain = npz.plain_member(raw_name, body[start:data])
        if plain is None:  # (read_plain accepted it: it cannot be)
            raise ValueError("not an archive read_plain accepts")
        name, dtype, shape, nbytes = plain
        # Local header: time, date and CRC; the data; the entry's time, date and CRC.
        variable += [
            (local + 10, local + 18),
            (data, data + nbytes),
            (position + 12, position + 20),
        ]
        checked.append((start, start + size, position + 16))
        members.append(Member(name, dtype, shape, data, nbytes))
        position += 46 + name_len + extra_len + comment_len
        expected_local = start + size
    if expected_local != directory:  # (something between the last member and the directory)
        return None
    fixed = []
    at = 0
    for start, stop in sorted(variable):
        if start > at:
            fixed.append((at, start, body[at:start]))
        at = stop
    fixed.append((at, len(body), body[at:]))
    return Layout(
        len(body),
        tuple(fixed),
        tuple(checked),
        tuple(members),
        sum(m.nbytes for m in members),
    )


# -- responses -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Template:
    # The fixed bytes of the archive, around what changes: for each member, its CRC in the
    # local header, then its data; then each member's CRC in the central directory.
    pieces: tuple[bytes, ...]
    header_crcs: tuple[int, ...]  # each member's .npy header's CRC-32, to continue from


_templates: dict[tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...], _Template | None] = {}


def encode(outputs: Arrays) -> bytes:
    """``npz.write_arrays(outputs)``, byte for byte, from a template per output shape."""
    if len(outputs) == 1:  # (a model's usual answer: one output; the same, in fewer steps)
        ((name, array),) = outputs.items()
        key: tuple[Any, ...] = ((name, array.dtype, array.shape),)
    else:
        key = tuple([(name, a.dtype, a.shape) for name, a in outputs.items()])
    try:
        template = _templates[key]
    except KeyError:
        if len(_templates) >= MAX_LAYOUTS:
            del _templates[next(iter(_templates))]
        template = _templates[key] = _template(outputs)
    if template is None:
        return npz.write_arrays(outputs)
    pieces = template.pieces
    if len(outputs) == 1:
        data = array.data if array.flags.c_contiguous else array.tobytes()
        crc = zlib.crc32(data, template.header_crcs[0]).to_bytes(4, "little")
        return b"".join((pieces[0], crc, pieces[1], data, pieces[2], crc, pieces[3]))
    datas = [a.data if a.flags.c_contiguous else a.tobytes() for a in outputs.values()]
    crcs = [
        zlib.crc32(data, start).to_bytes(4, "little")
        for data, start in zip(datas, template.header_crcs, strict=True)
    ]
    variable: list[Any] = []
    for crc, data in zip(crcs, datas, strict=True):
        variable += (crc, data)
    variable += crcs
    parts: list[Any] = [pieces[0]]
    for value, piece in zip(variable, pieces[1:], strict=True):
        parts += (value, piece)
    return b"".join(parts)


def _template(outputs: Arrays) -> _Template | None:
    """The fixed pieces of ``npz.write_arrays``' archive for arrays of these dtypes and
    shapes; None where it would not write its own direct form."""
    if (
        not outputs
        or any(
            a.dtype.kind not in "biuf" or not a.dtype.isnative or a.nbytes >= 1 << 31
            for a in outputs.values()
        )
        or len(outputs) > npz.MAX_ARRAYS
    ):
        return None
    zeros = {name: np.zeros(a.shape, a.dtype) for name, a in outputs.items()}
    written = npz.write_arrays(zeros)
    variable = []  # (start, stop) of what changes, in order
    header_crcs = []
    at = 0
    for name, a in zeros.items():
        header, header_crc = npz.npy_header(a.dtype, a.shape)
        data = at + 30 + len(name.encode()) + 4 + len(header)
        variable += [(at + 14, at + 18), (data, data + a.nbytes)]
        header_crcs.append(header_crc)
        at = data + a.nbytes
    for name in zeros:
        variable.append((at + 16, at + 20))
        at += 46 + len(name.encode()) + 4
    pieces = []
    at = 0
    for start, stop in variable:
        pieces.append(written[at:start])
        at = stop
    pieces.append(written[at:])
    return _Template(tuple(pieces), tuple(header_crcs))
