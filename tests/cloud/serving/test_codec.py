"""Body formats: Content-Type and Accept negotiation, JSON decoding edge cases."""

from __future__ import annotations

import pytest

from cloud.core.errors import InvalidModelInput, NotAcceptable, UnsupportedMediaType
from cloud.serving import codec


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, codec.JSON),
        ("", codec.JSON),
        ("application/json; charset=utf-8", codec.JSON),
        ("application/vnd.api+json", codec.JSON),
        ("Application/X-NPZ", codec.NPZ),
    ],
)
def test_request_media_types(header: str | None, expected: str) -> None:
    """JSON (also when no Content-Type is sent, or a +json type) and .npz are read."""
    assert codec.media_type(header) == expected


def test_other_request_media_types_are_refused() -> None:
    """Any other Content-Type is a 415 naming the types that are read."""
    with pytest.raises(UnsupportedMediaType) as refused:
        codec.media_type("text/csv")
    assert codec.NPZ in refused.value.message


@pytest.mark.parametrize(
    ("accept", "request_type", "expected"),
    [
        (None, codec.NPZ, codec.NPZ),
        ("*/*", codec.JSON, codec.JSON),
        ("application/*", codec.NPZ, codec.NPZ),
        ("application/x-npz, application/json", codec.JSON, codec.NPZ),
        ("application/json;q=0, application/x-npz", codec.JSON, codec.NPZ),
        ("text/html, application/json;q=0.5", codec.NPZ, codec.JSON),
    ],
)
def test_response_type_follows_accept(accept: str | None, request_type: str, expected: str) -> None:
    """Accept picks the response format; wildcards and no Accept keep the request's."""
    assert codec.response_type(accept, request_type) == expected


def test_accept_refusing_both_formats_is_406() -> None:
    """An Accept that rules out JSON and .npz (q=0 included) is a 406."""
    for accept in ("text/html", "application/json;q=0"):
        with pytest.raises(NotAcceptable):
            codec.response_type(accept, codec.JSON)


def test_json_inputs_become_arrays() -> None:
    """Nested lists become arrays of the shape they spell; scalars become 0-d arrays."""
    arrays = codec.decode_json(b'{"inputs": {"x": [[1, 2], [3, 4]], "t": 0.5}}')
    assert arrays["x"].shape == (2, 2) and arrays["t"].shape == ()


@pytest.mark.parametrize("value", ["true", "null", '"text"', "[1, [2]]", '[{"a": 1}]'])
def test_json_values_that_are_not_numeric_arrays_are_refused(value: str) -> None:
    """Booleans, nulls, strings, ragged lists and objects name their input in a 422."""
    with pytest.raises(InvalidModelInput) as refused:
        codec.decode_json(b'{"inputs": {"x": ' + value.encode() + b"}}")
    assert refused.value.details["input"] == "x"
