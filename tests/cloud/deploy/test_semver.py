"""Semantic versions and npm-style ranges."""

from __future__ import annotations

import itertools

import pytest

from cloud.core.errors import InvalidInput
from cloud.deploy.semver import MAX_LENGTH, InvalidVersion, InvalidVersionRange, Range, Version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("5.2.0", Version(5, 2, 0), id="full"),
        pytest.param("5.2", Version(5, 2, 0), id="major-minor"),
        pytest.param("5", Version(5, 0, 0), id="major"),
        pytest.param("v5.2.0", Version(5, 2, 0), id="leading-v"),
        pytest.param("  5.2.0 ", Version(5, 2, 0), id="surrounding-space"),
        pytest.param("5.2.0.1", Version(5, 2, 0, 1), id="android-revision"),
        pytest.param("5.02.0", Version(5, 2, 0), id="leading-zero"),
        pytest.param("1.0.0-beta.1", Version(1, 0, 0, prerelease=("beta", "1")), id="prerelease"),
        pytest.param("1.0.0-x-y.7", Version(1, 0, 0, prerelease=("x-y", "7")), id="hyphen-in-pre"),
        pytest.param("1.0.0+build.5", Version(1, 0, 0), id="build-ignored"),
        pytest.param(
            "1.0.0-rc.1+abc", Version(1, 0, 0, prerelease=("rc", "1")), id="pre-and-build"
        ),
    ],
)
def test_version_parses(text: str, expected: Version) -> None:
    """Versions parse with missing parts as 0, an optional v, prerelease kept, build dropped."""
    assert Version.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("v", id="only-v"),
        pytest.param("1.2.3.4.5", id="five-parts"),
        pytest.param("1..2", id="empty-part"),
        pytest.param("1.2.x", id="wildcard"),
        pytest.param("\u0661.\u0662.\u0663", id="arabic-digits"),
        pytest.param("1.\u00b2", id="superscript-digit"),
        pytest.param("1.2-beta", id="prerelease-on-partial"),
        pytest.param("1.2.3-", id="empty-prerelease"),
        pytest.param("1.2.3-beta..1", id="empty-identifier"),
        pytest.param("1.2.3-01", id="leading-zero-prerelease"),
        pytest.param("1.2.3+", id="empty-build"),
        pytest.param("1.2.3-bêta", id="non-ascii-prerelease"),
        pytest.param("1" * (MAX_LENGTH + 1), id="too-long"),
        pytest.param("latest", id="word"),
    ],
)
def test_invalid_version_is_refused(text: str) -> None:
    """A string that is not a version raises InvalidVersion, an InvalidInput."""
    with pytest.raises(InvalidVersion) as caught:
        Version.parse(text)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "invalid_version"


def test_try_parse_returns_none_for_garbage() -> None:
    """try_parse answers None instead of raising."""
    assert Version.try_parse("not a version") is None
    assert Version.try_parse("1.2") == Version(1, 2, 0)


def test_release_order_is_numeric() -> None:
    """Parts compare as numbers, not strings, and the fourth part counts."""
    texts = ["10.0.0", "2.10.0", "2.9.0.1", "2.9", "1.0.0"]
    assert sorted(texts, key=Version.parse) == ["1.0.0", "2.9", "2.9.0.1", "2.10.0", "10.0.0"]


def test_prerelease_order_follows_semver() -> None:
    """The SemVer 2.0 example chain sorts as the specification lists it."""
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    versions = [Version.parse(text) for text in chain]
    assert sorted(reversed(versions)) == versions
    assert all(a < b for a, b in itertools.pairwise(versions))


def test_missing_revision_equals_zero() -> None:
    """5.2.0 and 5.2.0.0 are the same version, and hash alike."""
    assert Version.parse("5.2.0") == Version.parse("5.2.0.0")
    assert hash(Version.parse("5.2")) == hash(Version.parse("5.2.0.0"))


def test_version_renders_canonically() -> None:
    """str() gives three parts, the revision only when non-zero, then the prerelease."""
    assert str(Version.parse("v5.2")) == "5.2.0"
    assert str(Version.parse("5.2.0.3-rc.1+b")) == "5.2.0.3-rc.1"


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        pytest.param(">=1.2.0", ["1.2.0", "3.0.0"], ["1.1.9", "1.2.0-rc.1"], id="gte"),
        pytest.param(">1.2.0", ["1.2.0.1", "1.2.1"], ["1.2.0"], id="gt"),
        pytest.param(">1.2", ["1.3.0", "1.3.0-alpha"], ["1.2.9", "1.2.0"], id="gt-partial"),
        pytest.param("<2", ["1.99.99", "1.0.0"], ["2.0.0-alpha", "2.0.0"], id="lt-partial"),
        pytest.param("<2.0.0", ["1.9.9", "2.0.0-beta"], ["2.0.0"], id="lt-full"),
        pytest.param("<=2.0.0", ["2.0.0", "1.0.0"], ["2.0.0.1", "2.0.1"], id="lte"),
        pytest.param("<=1.2", ["1.2.99", "1.2.5.5"], ["1.3.0-0", "1.3.0"], id="lte-partial"),
        pytest.param("=1.2.3", ["1.2.3", "v1.2.3.0"], ["1.2.4", "1.2.3-rc.1"], id="eq"),
        pytest.param("1.2.3", ["1.2.3"], ["1.2.3.1", "1.2.2"], id="bare-exact"),
        pytest.param(">= 1.2 < 2", ["1.5.0"], ["2.0.0", "1.1.0"], id="spaced-operators"),
        pytest.param(">=5.2.0 <6", ["5.2.0", "5.9.9"], ["6.0.0", "5.1.9"], id="and"),
        pytest.param("<1 || >=3", ["0.9.0", "3.0.0"], ["1.0.0", "2.9.9"], id="or"),
        pytest.param("^1.2.3", ["1.2.3", "1.9.9", "1.3.0-beta"], ["2.0.0-0", "1.2.2"], id="caret"),
        pytest.param("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"], id="caret-zero-major"),
        pytest.param("^0.0.3", ["0.0.3", "0.0.3.7"], ["0.0.4", "0.0.2"], id="caret-zero-minor"),
        pytest.param("^1.2", ["1.2.0", "1.9.0"], ["2.0.0", "1.1.9"], id="caret-partial"),
        pytest.param("^0.x", ["0.0.1", "0.9.9"], ["1.0.0"], id="caret-zero-wild"),
        pytest.param("^1.2.3-beta.2", ["1.2.3-beta.3", "1.2.3"], ["1.2.3-beta.1"], id="caret-pre"),
        pytest.param("~1.2.3", ["1.2.3", "1.2.99"], ["1.3.0", "1.2.2"], id="tilde"),
        pytest.param("~1.2", ["1.2.0", "1.2.9"], ["1.3.0", "1.1.0"], id="tilde-partial"),
        pytest.param("~1", ["1.0.0", "1.9.9"], ["2.0.0"], id="tilde-major"),
        pytest.param("1.2.x", ["1.2.0", "1.2.99", "1.2.0-beta"], ["1.3.0-beta", "1.1.9"], id="x"),
        pytest.param("1.X", ["1.0.0", "1.99.0"], ["2.0.0", "0.9.0"], id="capital-x"),
        pytest.param("1.*", ["1.0.0"], ["2.0.0"], id="star-part"),
        pytest.param("1.2", ["1.2.0", "1.2.7"], ["1.3.0"], id="partial-is-x-range"),
        pytest.param("5.2.0.x", ["5.2.0", "5.2.0.9"], ["5.2.1"], id="revision-x"),
        pytest.param("*", ["0.0.0-0", "1.2.3", "99.0.0"], [], id="star"),
        pytest.param("x", ["1.0.0"], [], id="bare-x"),
        pytest.param("1.2.3 - 2.3.4", ["1.2.3", "2.3.4"], ["2.3.5", "1.2.2"], id="hyphen"),
        pytest.param("1.2 - 2.3", ["1.2.0", "2.3.9"], ["2.4.0", "1.1.9"], id="hyphen-partial"),
        pytest.param(">*", [], ["0.0.0", "1.0.0"], id="above-everything"),
        pytest.param("<*", [], ["0.0.0-0", "1.0.0"], id="below-everything"),
    ],
)
def test_range_form(text: str, inside: list[str], outside: list[str]) -> None:
    """Each range form contains exactly the versions npm (with prereleases) would."""
    version_range = Range(text)
    assert [v for v in inside if version_range.contains(v)] == inside
    assert [v for v in outside if version_range.contains(v)] == []


def test_range_accepts_parsed_versions() -> None:
    """contains() takes a Version as well as a string, and `in` works too."""
    version_range = Range("^5")
    assert version_range.contains(Version(5, 4, 0))
    assert "5.0.1" in version_range
    assert 5 not in version_range


def test_caret_excludes_next_major_prerelease() -> None:
    """^1.2.3 stops before 2.0.0-beta, while an explicit <2.0.0 lets it in by ordering."""
    assert not Range("^1.2.3").contains("2.0.0-beta.1")
    assert Range(">=1.2.3 <2.0.0").contains("2.0.0-beta.1")


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="word"),
        pytest.param("\u0661.\u0662.\u0663", id="arabic-digits"),
        pytest.param("1.2.3.4.5.6", id="six-parts"),
        pytest.param("9" * 10_000, id="huge"),
        pytest.param("1.x", id="wildcard"),
        pytest.param(None, id="none"),
        pytest.param(123, id="int"),
    ],
)
def test_unparseable_version_never_matches(version: object) -> None:
    """A version that does not parse is in no range, not even *, and nothing raises."""
    # Wrong types on purpose: attributes come from devices, and contains() must not raise.
    assert not Range("*").contains(version)  # type: ignore[arg-type]
    assert not Range("<99999").contains(version)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(">=", id="lone-operator"),
        pytest.param("|| ||", id="empty-alternatives"),
        pytest.param("1 ||", id="trailing-or"),
        pytest.param("^^1", id="double-caret"),
        pytest.param("~>1.2", id="ruby-pessimistic"),
        pytest.param(">= >= 1", id="double-operator"),
        pytest.param("1.2.3.4.5.6", id="six-parts"),
        pytest.param("\u0661.\u0662.\u0663", id="arabic-digits"),
        pytest.param("1.x.3", id="number-after-wildcard"),
        pytest.param("1.2-beta", id="prerelease-on-partial"),
        pytest.param("1 - 2 - 3", id="double-hyphen"),
        pytest.param("1 -", id="open-hyphen"),
        pytest.param(">=1 - 2", id="operator-in-hyphen"),
        pytest.param("1 | 2", id="single-pipe"),
        pytest.param("latest", id="word"),
        pytest.param(">=1.2.3 <" + "9" * MAX_LENGTH, id="too-long"),
        pytest.param("1" * 100_000, id="very-long"),
        pytest.param("(" * 50 + "1" + ")" * 50, id="brackets"),
    ],
)
def test_invalid_range_raises(text: str) -> None:
    """A malformed range raises InvalidVersionRange, an InvalidInput, and nothing else."""
    with pytest.raises(InvalidVersionRange) as caught:
        Range(text)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "invalid_version_range"


def test_invalid_range_message_quotes_it_and_lists_forms() -> None:
    """The message names the range and the forms that are accepted."""
    with pytest.raises(InvalidVersionRange) as caught:
        Range("^^1")
    assert "'^^1'" in caught.value.message
    assert "caret ^1.2.3" in caught.value.message
    assert "hyphen ranges 1.2.3 - 2.3.4" in caught.value.message


def test_long_range_is_quoted_short() -> None:
    """Hostile input is cut short in the message so it cannot bloat the response."""
    with pytest.raises(InvalidVersionRange) as caught:
        Range("1" * 100_000)
    assert len(caught.value.message) < 600


def test_non_string_range_raises_invalid_range() -> None:
    """Even a non-string gives the documented error, not a TypeError."""
    with pytest.raises(InvalidVersionRange):
        Range(None)  # type: ignore[arg-type]


def test_range_equality_is_by_text() -> None:
    """Ranges written alike are equal and hash alike; str() gives the trimmed text."""
    assert Range(" ^1.2 ") == Range("^1.2")
    assert hash(Range(" ^1.2 ")) == hash(Range("^1.2"))
    assert str(Range(" ^1.2 ")) == "^1.2"
