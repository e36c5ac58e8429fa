"""Semantic versions and npm-style version ranges, for targeting devices by app or OS version.

Versions
    ``5.2.0``, ``5.2`` and ``5`` (missing parts are 0), an optional leading ``v``, a
    prerelease (``5.2.0-beta.1``) and build metadata (``+abc``, ignored). Android apps often
    ship four-part versions (``5.2.0.1``): the fourth part, the *revision*, takes part in
    ordering and defaults to 0, so ``5.2.0 == 5.2.0.0 < 5.2.0.1 < 5.2.1``. Numeric parts
    are ASCII digits only; leading zeros are tolerated (``5.02`` is ``5.2``) because devices
    report whatever their build system wrote. Ordering follows SemVer 2.0: a prerelease
    sorts before its release; prerelease identifiers compare numerically when numeric,
    lexically otherwise, numeric before alphanumeric, and fewer identifiers first.

Ranges
    ========================  ==================================================
    ``>=1.2.0 >1.2 <2 <=2``   comparators; ``=1.2.3`` and ``1.2.3`` are exact
    ``>=1.2 <2``              space-separated comparators must all hold (AND)
    ``^1.2 || ~2.0.1``        ``||`` separates alternatives (OR)
    ``^1.2.3``                ``>=1.2.3 <2.0.0-0``; ``^0.2.3``: ``<0.3.0-0``;
                              ``^0.0.3``: ``<0.0.4-0``
    ``~1.2.3``                ``>=1.2.3 <1.3.0-0``
    ``1.2.x 1.x * 1.2``       x-ranges: every version that starts with the given parts
    ``1.2.3 - 2.3.4``         hyphen range, both ends inclusive (a partial upper end
                              covers its whole block: ``1 - 2`` is ``>=1.0.0-0 <3.0.0-0``)
    ========================  ==================================================

    A partial version (fewer than three parts, or ending in ``x``) names the block of every
    version that starts with it: ``1.2`` is ``>=1.2.0-0 <1.3.0-0``, so ``>=1.2`` starts at
    that block and ``<=1.2`` ends after it. Three or four parts name one exact version.

Prereleases
    One simple rule, instead of npm's special cases: a prerelease is in a range exactly when
    ordinary ordering puts it inside the bounds. Bounds derived from a partial version, a
    caret or a tilde stop at the first prerelease of the next line (``-0``), so ``^1.2.3``
    does not admit ``2.0.0-beta``, but an explicit ``<2.0.0`` does (``2.0.0-beta`` sorts
    before ``2.0.0``): write ``<2`` to exclude it. This is node-semver's behaviour with
    ``includePrerelease: true``.

Hostile input
    Ranges longer than 200 characters are refused before any work; parsing uses no
    backtracking regular expressions. Parsing a range raises only
    :class:`InvalidVersionRange`; :meth:`Range.contains` never raises.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cloud.core.errors import InvalidInput

__all__ = ["MAX_LENGTH", "InvalidVersion", "InvalidVersionRange", "Range", "Version"]

MAX_LENGTH = 200
"""The longest version or range text accepted, in characters."""

_RANGE_FORMS = (
    "accepted forms are comparators (>=1.2.0, >1.2, <2, <=2.0.0, =1.2.3, 1.2.3), "
    "caret ^1.2.3, tilde ~1.2.3, x-ranges 1.2.x, 1.x, *, and hyphen ranges 1.2.3 - 2.3.4; "
    "separate comparators with spaces (all must hold) and alternatives with ||"
)
_VERSION_FORMS = (
    "write MAJOR[.MINOR[.PATCH[.REVISION]]] with an optional -prerelease and +build, "
    "e.g. 5.2.0 or 5.2.0-beta.1"
)
_IDENTIFIER_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
_WILDCARDS = frozenset({"x", "X", "*"})
# Longest first, so ">=" is not read as ">" followed by a version starting with "=".
_OPERATORS = (">=", "<=", ">", "<", "=", "^", "~")
_PARTS = 4


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut short so hostile input cannot bloat the reply."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


class InvalidVersion(InvalidInput):
    """A version string that does not parse."""

    code = "invalid_version"

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(
            f"Version {_shown(text)} is not valid: {reason}; {_VERSION_FORMS}.",
            details={"version": text[:MAX_LENGTH], "reason": reason},
        )


class InvalidVersionRange(InvalidInput):
    """A version range that does not parse."""

    code = "invalid_version_range"

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(
            f"Version range {_shown(text)} is not valid: {reason}; {_RANGE_FORMS}.",
            details={"range": text[:MAX_LENGTH], "reason": reason},
        )


class _Unparseable(ValueError):
    """Internal: why a piece of text is not a version; callers turn it into a public error."""


def _prerelease_key(prerelease: tuple[str, ...]) -> tuple[tuple[int, int | str], ...]:
    # Tagging numeric identifiers (0, n) and alphanumeric ones (1, s) makes plain tuple
    # comparison implement SemVer's rules, including "fewer identifiers sort first".
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in prerelease)


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    """A parsed version, ordered by SemVer 2.0 precedence (with an optional fourth part).

    ``prerelease`` holds the dot-separated identifiers after ``-``; build metadata is
    dropped at parse time because it never affects precedence.
    """

    major: int
    minor: int = 0
    patch: int = 0
    revision: int = 0
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``text``, raising :class:`InvalidVersion` when it is not a version."""
        try:
            numbers, wildcard, prerelease = _split_version(text)
        except _Unparseable as problem:
            raise InvalidVersion(text, str(problem)) from None
        if wildcard:
            raise InvalidVersion(text, "a version cannot contain x or *")
        return cls._from_parts(numbers, prerelease)

    @classmethod
    def try_parse(cls, text: str) -> Version | None:
        """Parse ``text``, or return None when it is not a version."""
        return _cached_version(text) if isinstance(text, str) else None

    @classmethod
    def _from_parts(cls, numbers: tuple[int, ...], prerelease: tuple[str, ...] = ()) -> Version:
        padded = numbers + (0,) * (_PARTS - len(numbers))
        return cls(padded[0], padded[1], padded[2], padded[3], prerelease)

    @property
    def is_prerelease(self) -> bool:
        """Whether this version carries a prerelease tag."""
        return bool(self.prerelease)

    def _key(self) -> tuple[object, ...]:
        # A release sorts after all of its prereleases: (1,) beats any (0, ...).
        tail: tuple[object, ...] = (
            (0, _prerelease_key(self.prerelease)) if self.prerelease else (1,)
        )
        return (self.major, self.minor, self.patch, self.revision, tail)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.revision:
            text += f".{self.revision}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        return text


@functools.lru_cache(maxsize=4096)
def _cached_version(text: str) -> Version | None:
    # A fleet reports few distinct versions, and a deployment change evaluates every device:
    # caching turns 100,000 parses into a few dozen.
    try:
        return Version.parse(text)
    except InvalidVersion:
        return None


def _split_version(text: str) -> tuple[tuple[int, ...], bool, tuple[str, ...]]:
    """Split ``text`` into its leading numbers, whether a wildcard ended them, and prerelease.

    Written with ``str`` methods rather than a regular expression so that its cost is linear
    whatever the input.
    """
    if len(text) > MAX_LENGTH:
        raise _Unparseable(f"it is longer than {MAX_LENGTH} characters")
    text = text.strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    if not text:
        raise _Unparseable("it is empty")
    text, plus, build = text.partition("+")
    if plus:
        _identifiers(build, "build metadata")
    core, dash, pre = text.partition("-")
    prerelease = _identifiers(pre, "prerelease") if dash else ()
    parts = core.split(".")
    if len(parts) > _PARTS:
        raise _Unparseable(f"it has more than {_PARTS} dot-separated parts")
    numbers: list[int] = []
    wildcard = False
    for part in parts:
        if part in _WILDCARDS:
            wildcard = True
        elif part.isascii() and part.isdigit():
            if wildcard:
                raise _Unparseable(f"number {part} follows a wildcard")
            numbers.append(int(part))
        else:
            raise _Unparseable(f"{_shown(part)} is not a number, x or *")
    if prerelease and (wildcard or len(numbers) < 3):
        raise _Unparseable("a prerelease needs a full MAJOR.MINOR.PATCH version")
    return tuple(numbers), wildcard, prerelease


def _identifiers(text: str, what: str) -> tuple[str, ...]:
    identifiers = tuple(text.split("."))
    for identifier in identifiers:
        if not identifier or not _IDENTIFIER_CHARS.issuperset(identifier):
            raise _Unparseable(f"{what} identifiers must be non-empty and use [0-9A-Za-z-]")
        # SemVer forbids "01": it would compare equal to "1" yet print differently.
        if what == "prerelease" and identifier.isdigit() and identifier != str(int(identifier)):
            raise _Unparseable(f"numeric prerelease identifier {identifier} has a leading zero")
    return identifiers


@dataclass(frozen=True)
class _Interval:
    """The versions between two bounds; None is unbounded. Empty when the bounds cross."""

    low: Version | None = None
    low_inclusive: bool = True
    high: Version | None = None
    high_inclusive: bool = False

    def contains(self, version: Version) -> bool:
        low, high = self.low, self.high
        if low is not None and (version < low if self.low_inclusive else version <= low):
            return False
        return high is None or (version <= high if self.high_inclusive else version < high)

    def intersect(self, other: _Interval) -> _Interval:
        low, low_inclusive = self.low, self.low_inclusive
        if other.low is not None and (
            low is None or other.low > low or (other.low == low and not other.low_inclusive)
        ):
            low, low_inclusive = other.low, other.low_inclusive
        high, high_inclusive = self.high, self.high_inclusive
        if other.high is not None and (
            high is None or other.high < high or (other.high == high and not other.high_inclusive)
        ):
            high, high_inclusive = other.high, other.high_inclusive
        return _Interval(low, low_inclusive, high, high_inclusive)


_EVERYTHING = _Interval()
_NOTHING = _Interval(high=Version(0, prerelease=("0",)), high_inclusive=False)
"""Nothing sorts below 0.0.0-0, the smallest version there is."""


@dataclass(frozen=True)
class _Partial:
    """A version as written in a range: possibly cut short (``1.2``) or wildcarded."""

    numbers: tuple[int, ...]
    exact: bool
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> _Partial:
        numbers, wildcard, prerelease = _split_version(text)
        return cls(numbers, exact=len(numbers) >= 3 and not wildcard, prerelease=prerelease)

    @property
    def first(self) -> Version:
        """The smallest version this names: itself if exact, else its block's first."""
        if self.exact:
            return Version._from_parts(self.numbers, self.prerelease)
        return Version._from_parts(self.numbers, ("0",))

    def bump(self, index: int) -> Version:
        """The first version (prereleases included) after the block of numbers[:index + 1]."""
        head = list(self.numbers[: index + 1])
        head[index] += 1
        return Version._from_parts(tuple(head), ("0",))

    def block(self) -> _Interval:
        """Every version this names: one if exact, else all that start with its numbers."""
        if self.exact:
            return _Interval(self.first, True, self.first, True)
        if not self.numbers:
            return _EVERYTHING
        return _Interval(self.first, True, self.bump(len(self.numbers) - 1), False)


def _comparator(operator: str, partial: _Partial) -> _Interval:
    block = partial.block()
    if operator in ("", "="):
        return block
    if operator == ">=":
        return _Interval(low=block.low, low_inclusive=True)
    if operator == ">":
        if block.high is None:  # ">*": nothing is above every version
            return _NOTHING
        return _Interval(low=block.high, low_inclusive=not block.high_inclusive)
    if operator == "<":
        return _NOTHING if block.low is None else _Interval(high=block.low, high_inclusive=False)
    if operator == "<=":
        return _Interval(high=block.high, high_inclusive=block.high_inclusive)
    numbers = partial.numbers
    if not numbers:
        return _EVERYTHING
    if operator == "~":
        return _Interval(partial.first, True, partial.bump(min(len(numbers), 2) - 1), False)
    # Caret: everything up to the next change of the leftmost non-zero part among the first
    # three; a zero part that was left out still leaves room to move ("^0" is "<1.0.0-0").
    significant = numbers[:3]
    index = next((i for i, n in enumerate(significant) if n != 0), len(significant) - 1)
    return _Interval(partial.first, True, partial.bump(index), False)


def _parse_set(text: str) -> _Interval:
    tokens = text.split()
    if not tokens:
        raise _Unparseable("an alternative between || is empty")
    if "-" in tokens:
        if len(tokens) != 3 or tokens[1] != "-":
            raise _Unparseable("a hyphen range is written 'LOW - HIGH' and stands alone")
        low, high = _Partial.parse(tokens[0]), _Partial.parse(tokens[2])
        return _comparator(">=", low).intersect(_comparator("<=", high))
    interval = _EVERYTHING
    pending = ""
    for token in tokens:
        # npm accepts ">= 1.2.3": a bare operator takes the next token as its version.
        if token in _OPERATORS:
            if pending:
                raise _Unparseable(f"operator {pending!r} is followed by another operator")
            pending = token
            continue
        operator = pending or next((op for op in _OPERATORS if token.startswith(op)), "")
        version = token if pending else token[len(operator) :]
        pending = ""
        interval = interval.intersect(_comparator(operator, _Partial.parse(version)))
    if pending:
        raise _Unparseable(f"operator {pending!r} has no version after it")
    return interval


class Range:
    """A parsed version range: ``Range(">=5.2 <6").contains("5.3.1")`` is True.

    Equal when written the same way (after trimming); ``str()`` gives the text back.
    """

    __slots__ = ("_alternatives", "text")

    def __init__(self, text: str) -> None:
        """Parse ``text``, raising :class:`InvalidVersionRange` when it is not a range."""
        if not isinstance(text, str):
            raise InvalidVersionRange(repr(text), "a range must be a string")
        if len(text) > MAX_LENGTH:
            raise InvalidVersionRange(text, f"it is longer than {MAX_LENGTH} characters")
        if not text.strip():
            raise InvalidVersionRange(text, "it is empty (write * to accept every version)")
        try:
            alternatives = tuple(_parse_set(part) for part in text.split("||"))
        except _Unparseable as problem:
            raise InvalidVersionRange(text, str(problem)) from None
        self.text: str = text.strip()
        self._alternatives = alternatives

    def contains(self, version: str | Version) -> bool:
        """Whether ``version`` is in this range; a version that does not parse is not."""
        parsed = version if isinstance(version, Version) else Version.try_parse(version)
        if parsed is None:
            return False
        return any(interval.contains(parsed) for interval in self._alternatives)

    def __contains__(self, version: object) -> bool:
        return isinstance(version, (str, Version)) and self.contains(version)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Range) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Range({self.text!r})"
