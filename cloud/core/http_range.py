"""The HTTP ``Range`` request header (RFC 9110, section 14), for one resource of known size.

We serve a single byte range or the whole resource. A header we cannot or will not honour
(another unit, bad syntax, several ranges) is ignored, which RFC 9110 allows a server to
do for any Range: the client then gets a 200 with everything, which every client handles.
Multipart/byteranges responses are left out on purpose: downloaders resume with one range,
and multi-range requests are a known amplification vector.

A route uses it like this::

    try:
        byte_range = parse_range(request.headers.get("range"), size)
    except InvalidRange as exc:  # 416, with Content-Range: unsatisfied_content_range(size)
        ...
    if byte_range is None:
        ...  # 200, whole body
    else:
        ...  # 206, Content-Range: byte_range.content_range(size)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloud.core.errors import InvalidRange

# ASCII digits only: str.isdigit() and int() also accept digits from other scripts.
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
# Optional whitespace as RFC 9110 defines it: spaces and tabs, nothing else.
_OWS = " \t"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` through ``end`` of a resource, both inclusive."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"need 0 <= start <= end, got {self.start}-{self.end}")

    @property
    def length(self) -> int:
        """How many bytes the range covers."""
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        """The ``Content-Range`` value of a 206 carrying this range of ``total`` bytes."""
        return f"bytes {self.start}-{self.end}/{total}"


def unsatisfied_content_range(size: int) -> str:
    """The ``Content-Range`` value of a 416 for a resource of ``size`` bytes."""
    return f"bytes */{size}"


def _position(digits: str, size: int) -> int:
    """``digits`` as an int, capped at ``size``.

    Every position >= size means the same thing here (past the end), and capping before
    int() keeps a hostile thousand-digit number cheap and inside int()'s digit limit.
    """
    significant = digits.lstrip("0")
    if len(significant) > len(str(size)):
        return size
    return min(int(significant or "0"), size)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range ``header`` asks for within ``size`` bytes, clamped to fit.

    Returns None when the whole resource should be sent with 200: no header, a unit other
    than ``bytes``, invalid syntax (``bytes=5-3`` included), or more than one range.
    Supports ``bytes=a-b``, ``bytes=a-`` and the suffix form ``bytes=-n``; a last
    position or suffix past the end is clamped. Raises :class:`InvalidRange` (416) with
    ``details={"size": size}`` for a well-formed range that selects nothing: a start at or
    past the end, a zero-length suffix, or any range of an empty resource.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if header is None or not header.isascii():
        return None
    unit, equals, range_set = header.strip(_OWS).partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    # The list syntax allows empty elements and whitespace around commas (RFC 9110 5.6.1).
    specs = [spec.strip(_OWS) for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        if last and _is_less(last, first):
            return None  # "bytes=5-3" is invalid, so ignored
        return _int_range(first, last, size, header)
    if last:
        return _suffix_range(last, size, header)
    return None  # a lone "-"


def _int_range(first: str, last: str, size: int, header: str) -> ByteRange:
    start = _position(first, size)
    if start >= size:
        raise _unsatisfiable(header, size)
    end = size - 1 if not last else min(_position(last, size), size - 1)
    return ByteRange(start, end)


def _suffix_range(last: str, size: int, header: str) -> ByteRange:
    suffix = _position(last, size)
    if suffix == 0 or size == 0:
        raise _unsatisfiable(header, size)
    return ByteRange(size - suffix, size - 1)


def _is_less(a: str, b: str) -> bool:
    """Whether digit string ``a`` is numerically less than ``b``, without int()."""
    a, b = a.lstrip("0"), b.lstrip("0")
    return (len(a), a) < (len(b), b)


def _unsatisfiable(header: str, size: int) -> InvalidRange:
    return InvalidRange(
        f"Range {header[:100]!r} selects no bytes of this {size}-byte resource; "
        "ask for a range that starts before the end, or omit Range to get it all.",
        details={"size": size},
    )
