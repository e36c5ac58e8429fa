"""Text to hashed features, identically on the device and in the cloud.

The edge/cloud router reads a request's text as a bag of hashed unigrams and bigrams. A
device that routes locally must turn a text into exactly the features the cloud trained
on, so this module is the one implementation both sides import: deterministic across
processes and platforms (CRC-32, never
Python's salted ``hash``), and bounded on hostile input (at most ``max_chars`` characters
and ``max_tokens`` tokens are read).

A text becomes features in four steps: Unicode NFKC normalisation and case folding;
tokens, each a run of word characters or a single other non-space character; the token
unigrams and the bigrams of neighbouring tokens; and for each distinct term its hashed
index in ``[0, dim)`` with the value ``log(1 + count)``, the vector scaled to unit length.
Two terms may share an index (a hash collision); their values are then summed.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Word characters as Python's Unicode-aware ``re`` defines them, or any single symbol.
_TOKEN = re.compile(r"\w+|[^\w\s]")
# Bigrams hash with a separator no token can contain, so ("a b") never equals ("ab").
_BIGRAM_SEPARATOR = "\x1f"
_SEPARATOR_BYTES = _BIGRAM_SEPARATOR.encode()
# Arguments for map(str.encode, ...): lone surrogates are kept, never an error.
_UTF8 = itertools.repeat("utf-8")
_SURROGATEPASS = itertools.repeat("surrogatepass")
FEATURIZER_KIND = "hashed-ngrams-v1"


class FeatureSpec(BaseModel):
    """How a text becomes hashed features; part of every exported router.

    ``dim`` is the number of hash buckets; ``ngrams`` is 1 (unigrams) or 2 (unigrams and
    bigrams); ``max_chars`` and ``max_tokens`` bound the work on a long or hostile text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(default=FEATURIZER_KIND, pattern=f"^{FEATURIZER_KIND}$")
    dim: int = Field(default=2**18, ge=16, le=2**22)
    ngrams: int = Field(default=2, ge=1, le=2)
    max_chars: int = Field(default=20_000, ge=1, le=1_000_000)
    max_tokens: int = Field(default=2_048, ge=1, le=100_000)


@dataclass(frozen=True)
class HashedText:
    """One text's features: sorted distinct ``indices`` (int64) with their ``values``
    (float64, unit length as a vector). Empty arrays for a text without tokens."""

    indices: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


def normalize(text: str, spec: FeatureSpec) -> str:
    """NFKC-normalised, case-folded ``text``, cut to ``spec.max_chars`` characters first."""
    return unicodedata.normalize("NFKC", text[: spec.max_chars]).casefold()


def tokenize(text: str, spec: FeatureSpec | None = None) -> list[str]:
    """The tokens of ``text``: runs of word characters, or single other non-space ones."""
    spec = spec or FeatureSpec()
    return _TOKEN.findall(normalize(text, spec))[: spec.max_tokens]


def terms(tokens: list[str], spec: FeatureSpec) -> list[str]:
    """The unigrams of ``tokens`` and, when ``spec.ngrams`` is 2, their bigrams."""
    found = list(tokens)
    if spec.ngrams >= 2:
        found.extend(f"{a}{_BIGRAM_SEPARATOR}{b}" for a, b in itertools.pairwise(tokens))
    return found


def bucket(term: str, dim: int) -> int:
    """The hash bucket of ``term``: CRC-32 of its UTF-8 bytes (lone surrogates kept)."""
    return zlib.crc32(term.encode("utf-8", "surrogatepass")) % dim


def display_term(term: str) -> str:
    """A term as people read it: a bigram's tokens joined by a space."""
    return term.replace(_BIGRAM_SEPARATOR, " ")


def featurize(text: str, spec: FeatureSpec | None = None) -> HashedText:
    """The hashed, unit-length bag of n-grams of ``text`` under ``spec``.

    Terms are told apart, and counted, by their CRC-32: the bigram's is chained from its
    first token's, so no bigram string is built (``bucket`` gives the same numbers).
    """
    import numpy as np

    spec = spec or FeatureSpec()
    tokens = tokenize(text, spec)
    encoded = list(map(str.encode, tokens, _UTF8, _SURROGATEPASS))
    if not encoded:
        return HashedText(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    crcs = list(map(zlib.crc32, encoded))
    if spec.ngrams >= 2 and len(encoded) > 1:
        prefixes = map(zlib.crc32, itertools.repeat(_SEPARATOR_BYTES), crcs[:-1])
        crcs.extend(map(zlib.crc32, encoded[1:], prefixes))
    distinct, counts = np.unique(np.asarray(crcs, dtype=np.int64), return_counts=True)
    indices, inverse = np.unique(distinct % spec.dim, return_inverse=True)
    values = np.bincount(inverse, weights=np.log1p(counts))
    return HashedText(indices, values / np.sqrt(np.dot(values, values)))


def explain(
    text: str, indices: Iterable[int], spec: FeatureSpec | None = None
) -> dict[int, list[str]]:
    """For each of ``indices``, the terms of ``text`` that hash there, as people read
    them (a bigram's tokens joined by a space), in their order of first appearance."""
    spec = spec or FeatureSpec()
    wanted = set(indices)
    found: dict[int, list[str]] = {}
    for term in dict.fromkeys(terms(tokenize(text, spec), spec)):
        index = bucket(term, spec.dim)
        if index in wanted:
            found.setdefault(index, []).append(display_term(term))
    return found


def pad_batch(texts: list[HashedText]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Rows of equal width for a batch (at least 1): indices padded with 0 and values with
    0.0, so the padding contributes nothing to a linear model."""
    import numpy as np

    width = max([1, *(len(t.indices) for t in texts)])
    indices = np.zeros((len(texts), width), dtype=np.int64)
    values = np.zeros((len(texts), width), dtype=np.float32)
    for r, text in enumerate(texts):
        indices[r, : len(text.indices)] = text.indices
        values[r, : len(text.values)] = text.values
    return indices, values
