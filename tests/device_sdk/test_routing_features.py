"""Text features for routing: the same on every process and platform, bounded, and
identical on the device and in the cloud (one implementation, pinned by golden values)."""

from __future__ import annotations

import binascii
import json
import subprocess
import sys

import numpy as np
import pytest

from device_sdk.text_features import (
    FeatureSpec,
    bucket,
    explain,
    featurize,
    pad_batch,
    terms,
    tokenize,
)

TEXTS = [
    "",
    "   ",
    "Which of the following is a prime number?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:",
    "ÉCOLE école ÉCOLE",  # case folding
    # NFKC: a ligature, full-width letters, circled digits.
    "\ufb01ne \uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28 \u2460\u2461",
    "straße STRASSE",  # casefold turns ß into ss
    "日本語のテキストです。漢字とかな",
    "مرحبا بالعالم، كيف حالك؟",
    "emoji 🤖🚀 and ZWJ 👩‍👩‍👧 family",
    "\u202eright-to-left override\u202c",
    "tab\tnew\nline\r\nvertical\x0bform\x0c",
    "control \x01\x02\x7f chars",
    "lone surrogate \ud800 here",
    "a\x1fb",  # the bigram separator inside a text
    "x" * 50_000,
    "word " * 10_000,
    "<script>alert('x')</script> ' OR 1=1; -- DROP TABLE",
]


def test_tokens_are_words_or_single_symbols() -> None:
    """Tokens are case-folded word runs or single non-space symbols."""
    assert tokenize("Hello, World! x2") == ["hello", ",", "world", "!", "x2"]


def test_normalisation_merges_compatible_forms() -> None:
    """NFKC and case folding map compatible spellings to the same tokens."""
    assert tokenize("\uff26\uff35\uff2c\uff2c \ufb01ne Stra\u00dfe") == tokenize(
        "full fine STRASSE"
    )


def test_bigrams_follow_unigrams() -> None:
    """With ngrams=2 the terms are the unigrams, then each neighbouring pair."""
    spec = FeatureSpec(ngrams=2)
    assert terms(["a", "b", "c"], spec) == ["a", "b", "c", "a\x1fb", "b\x1fc"]
    assert terms(["a", "b"], FeatureSpec(ngrams=1)) == ["a", "b"]


@pytest.mark.parametrize("text", TEXTS)
def test_features_are_sorted_unit_and_in_range(text: str) -> None:
    """Indices are distinct, sorted and below dim; values form a unit vector (or none)."""
    spec = FeatureSpec(dim=1024)
    hashed = featurize(text, spec)
    assert list(hashed.indices) == sorted(set(hashed.indices.tolist()))
    assert all(0 <= i < 1024 for i in hashed.indices)
    if len(hashed.indices):
        assert np.dot(hashed.values, hashed.values) == pytest.approx(1.0)
    else:
        assert not text.strip()


def test_chained_bigram_hash_matches_the_string_hash() -> None:
    """featurize hashes bigrams by chaining CRCs; that equals hashing the bigram string."""
    spec = FeatureSpec(dim=2**20)
    text = "the quick brown fox jumps over the lazy dog"
    expected = sorted({bucket(t, spec.dim) for t in terms(tokenize(text, spec), spec)})
    assert featurize(text, spec).indices.tolist() == expected


def test_long_texts_are_cut_to_the_bounds() -> None:
    """At most max_chars characters and max_tokens tokens are read."""
    spec = FeatureSpec(max_chars=100, max_tokens=5)
    assert len(tokenize("a " * 1000, spec)) == 5
    assert tokenize("b" * 1000 + " tail", FeatureSpec(max_chars=100)) == ["b" * 100]


def test_explain_names_the_terms_of_an_index() -> None:
    """explain maps a feature index back to the text's terms, bigrams with a space."""
    spec = FeatureSpec(dim=2**20)
    index = bucket("integral\x1fof", spec.dim)
    assert explain("The integral of x", [index], spec) == {index: ["integral of"]}


def test_padding_adds_nothing() -> None:
    """A padded batch has equal-width rows whose padding is index 0 with value 0."""
    spec = FeatureSpec(dim=2**20)
    indices, values = pad_batch([featurize("a b c", spec), featurize("", spec)])
    assert indices.shape == values.shape == (2, 5)
    assert indices.dtype == np.int64 and values.dtype == np.float32
    assert indices[1].tolist() == [0] * 5 and values[1].tolist() == [0.0] * 5


def test_features_do_not_depend_on_the_process() -> None:
    """A fresh interpreter with another hash seed featurizes every text identically."""
    probe = (
        "import json, sys\n"
        "from device_sdk.text_features import FeatureSpec, featurize\n"
        "texts = json.loads(sys.stdin.read())\n"
        "out = [featurize(t, FeatureSpec(dim=4096)) for t in texts]\n"
        "print(json.dumps([[h.indices.tolist(), h.values.tolist()] for h in out]))\n"
    )
    payload = json.dumps(TEXTS)
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    theirs = json.loads(result.stdout)
    ours = [featurize(t, FeatureSpec(dim=4096)) for t in TEXTS]
    assert [[h.indices.tolist(), h.values.tolist()] for h in ours] == theirs


def test_golden_values_pin_the_featurizer() -> None:
    """Known texts keep their exact indices: a changed tokenizer or hash would silently
    break every router already on devices, so it must fail here first."""
    spec = FeatureSpec(dim=2**18)
    assert featurize("Hello, world", spec).indices.tolist() == [
        42630,
        55942,
        164718,
        201027,
        229250,
    ]
    assert featurize("日本語 ﬁne", spec).indices.tolist() == [10822, 87186, 217829]


def test_indices_are_crc32_of_the_utf8_terms() -> None:
    """The documented recipe, spelled out with binascii: CRC-32 of each term's UTF-8 bytes,
    bigrams joined by 0x1f, modulo dim."""
    grams = [b"hello", b",", b"world", b"hello\x1f,", b",\x1fworld"]
    expected = sorted({binascii.crc32(g) % 2**18 for g in grams})
    assert featurize("Hello, world", FeatureSpec(dim=2**18)).indices.tolist() == expected
