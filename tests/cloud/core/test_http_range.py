"""Parsing the HTTP Range header for a resource of known size."""

from __future__ import annotations

import random

import pytest

from cloud.core.errors import InvalidRange
from cloud.core.http_range import ByteRange, parse_range, unsatisfied_content_range

SIZE = 1000


def random_header(rng: random.Random, size: int) -> str:
    """A single-range header of a random form whose numbers fall around ``size``."""

    def pos() -> int:
        return rng.randint(0, 2 * size + 2)

    form = rng.choice(["closed", "open", "suffix"])
    if form == "closed":
        return f"bytes={pos()}-{pos()}"
    if form == "open":
        return f"bytes={pos()}-"
    return f"bytes=-{pos()}"


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        pytest.param("bytes=0-499", SIZE, ByteRange(0, 499), id="closed"),
        pytest.param("bytes=500-999", SIZE, ByteRange(500, 999), id="closed-to-last-byte"),
        pytest.param("bytes=7-7", SIZE, ByteRange(7, 7), id="single-byte"),
        pytest.param("bytes=0-0", 1, ByteRange(0, 0), id="one-byte-resource"),
        pytest.param("bytes=900-", SIZE, ByteRange(900, 999), id="open-ended"),
        pytest.param("bytes=0-", SIZE, ByteRange(0, 999), id="open-ended-whole"),
        pytest.param("bytes=999-", SIZE, ByteRange(999, 999), id="open-ended-last-byte"),
        pytest.param("bytes=-100", SIZE, ByteRange(900, 999), id="suffix"),
        pytest.param("bytes=-1", SIZE, ByteRange(999, 999), id="suffix-last-byte"),
        pytest.param("bytes=-1000", SIZE, ByteRange(0, 999), id="suffix-exactly-size"),
        pytest.param("bytes=-5000", SIZE, ByteRange(0, 999), id="suffix-longer-than-size"),
        pytest.param("bytes=500-5000", SIZE, ByteRange(500, 999), id="clamped-last"),
        pytest.param("bytes=0-" + "9" * 5000, SIZE, ByteRange(0, 999), id="clamped-huge-last"),
        pytest.param("bytes=-" + "9" * 5000, SIZE, ByteRange(0, 999), id="huge-suffix"),
        pytest.param("bytes=0005-0010", SIZE, ByteRange(5, 10), id="leading-zeros"),
        pytest.param("BYTES=1-2", SIZE, ByteRange(1, 2), id="unit-case-insensitive"),
        pytest.param(" bytes=1-2\t", SIZE, ByteRange(1, 2), id="outer-whitespace"),
        pytest.param("bytes=1-2,", SIZE, ByteRange(1, 2), id="empty-list-element"),
        pytest.param("bytes= 1-2", SIZE, ByteRange(1, 2), id="whitespace-before-element"),
    ],
)
def test_satisfiable_single_range_is_returned(header: str, size: int, expected: ByteRange) -> None:
    """A well-formed single range that selects bytes comes back clamped to the resource."""
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        pytest.param("bytes=1000-1001", SIZE, id="start-at-size"),
        pytest.param("bytes=1000-", SIZE, id="open-start-at-size"),
        pytest.param("bytes=5000-6000", SIZE, id="start-past-size"),
        pytest.param("bytes=" + "9" * 5000 + "-", SIZE, id="huge-start"),
        pytest.param("bytes=-0", SIZE, id="zero-suffix"),
        pytest.param("bytes=-000", SIZE, id="zero-suffix-padded"),
        pytest.param("bytes=0-0", 0, id="empty-resource-closed"),
        pytest.param("bytes=0-", 0, id="empty-resource-open"),
        pytest.param("bytes=-5", 0, id="empty-resource-suffix"),
    ],
)
def test_unsatisfiable_single_range_raises_416(header: str, size: int) -> None:
    """A well-formed single range that selects no bytes raises InvalidRange carrying the size."""
    with pytest.raises(InvalidRange) as caught:
        parse_range(header, size)
    assert caught.value.status_code == 416
    assert caught.value.details == {"size": size}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("items=0-5", id="other-unit"),
        pytest.param("bytes", id="no-equals"),
        pytest.param("bytes=", id="no-ranges"),
        pytest.param("bytes=,,", id="only-commas"),
        pytest.param("bytes=-", id="lone-dash"),
        pytest.param("bytes=5-3", id="last-before-first"),
        pytest.param("bytes=5000-3", id="last-before-first-past-size"),
        pytest.param("bytes=" + "9" * 5000 + "-" + "9" * 4999, id="huge-last-before-huge-first"),
        pytest.param("bytes=0-5,10-20", id="two-ranges"),
        pytest.param("bytes=0-5, 5000-6000", id="two-ranges-one-unsatisfiable"),
        pytest.param("bytes=-5,-10,0-", id="three-ranges"),
        pytest.param("bytes=-5-10", id="negative-start"),
        pytest.param("bytes=5--10", id="negative-end"),
        pytest.param("bytes=--5", id="double-dash"),
        pytest.param("bytes=+5-10", id="plus-sign"),
        pytest.param("bytes=0x10-20", id="hex"),
        pytest.param("bytes=1e3-", id="exponent"),
        pytest.param("bytes=1.5-2", id="fraction"),
        pytest.param("bytes=1 - 2", id="inner-spaces"),
        pytest.param("bytes =1-2", id="space-before-equals"),
        pytest.param("bytes=1-2\n", id="trailing-newline"),
        pytest.param("bytes=\x001-2", id="nul-byte"),
        pytest.param("bytes=1-2;x", id="trailing-junk"),
        pytest.param("bytes=0-5=6", id="extra-equals"),
        pytest.param("bytes=\u0661-\u0662", id="arabic-indic-digits"),
        pytest.param("bytes=\uff11-\uff12", id="fullwidth-digits"),
        pytest.param("bytes=\u00b2-", id="superscript-digit"),
        pytest.param("bytes=1-2\u00a0", id="non-breaking-space"),
    ],
)
def test_ignored_header_means_whole_resource(header: str | None) -> None:
    """An absent, foreign, malformed or multi-range header yields None, meaning a plain 200."""
    assert parse_range(header, SIZE) is None


def test_byte_range_length_counts_both_ends() -> None:
    """A range's length includes its first and last byte."""
    assert ByteRange(10, 19).length == 10


def test_byte_range_content_range_header() -> None:
    """A 206's Content-Range names the inclusive bounds and the total size."""
    assert ByteRange(0, 499).content_range(1234) == "bytes 0-499/1234"


def test_unsatisfied_content_range_names_only_the_size() -> None:
    """A 416's Content-Range carries an asterisk and the total size."""
    assert unsatisfied_content_range(1234) == "bytes */1234"


def test_byte_range_rejects_inverted_bounds() -> None:
    """A ByteRange cannot be built with its end before its start."""
    with pytest.raises(ValueError, match="start <= end"):
        ByteRange(5, 3)


def test_negative_size_is_a_programming_error() -> None:
    """Asking about a resource of negative size raises ValueError."""
    with pytest.raises(ValueError, match="size"):
        parse_range("bytes=0-1", -1)


def test_random_ranges_stay_inside_the_resource() -> None:
    """Any range the parser returns lies within [0, size-1] with start <= end."""
    rng = random.Random(0)  # noqa: S311  # seeded test data, not a secret
    returned = 0
    for _ in range(5000):
        size = rng.choice([0, 1, 2, rng.randint(0, 100), rng.randint(0, 10**12)])
        header = random_header(rng, size)
        try:
            byte_range = parse_range(header, size)
        except InvalidRange:
            continue
        if byte_range is not None:
            returned += 1
            assert 0 <= byte_range.start <= byte_range.end <= size - 1, (header, size)
    assert returned > 1000  # the loop really exercised returned ranges


def reference_parse(header: str, size: int) -> ByteRange | type[InvalidRange] | None:
    """A plain int-based model of parse_range for the headers random_header builds."""
    first, last = header.removeprefix("bytes=").split("-")
    if not first:
        if int(last) == 0 or size == 0:
            return InvalidRange
        return ByteRange(max(0, size - int(last)), size - 1)
    if last and int(last) < int(first):
        return None
    if int(first) >= size:
        return InvalidRange
    return ByteRange(int(first), size - 1 if not last else min(int(last), size - 1))


def test_random_ranges_match_a_reference_model() -> None:
    """For random single ranges the parser agrees with a straightforward model of RFC 9110."""
    rng = random.Random(0)  # noqa: S311  # seeded test data, not a secret
    for _ in range(5000):
        size = rng.choice([0, 1, 2, rng.randint(0, 100)])
        header = random_header(rng, size)
        expected = reference_parse(header, size)
        if expected is InvalidRange:
            with pytest.raises(InvalidRange):
                parse_range(header, size)
        else:
            assert parse_range(header, size) == expected, (header, size)
