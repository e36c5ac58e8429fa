"""Value checks on (merged) feeds: ids within their table, finite floats."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cloud.core.errors import InvalidModelInput
from cloud.serving.signature import InputSpec, Signature, check_values


def signature(dtype: str) -> Signature:
    return Signature(
        inputs=(InputSpec("item", np.dtype(dtype), (None, 1), index_bound=50),),
        outputs=("score",),
        batchable=True,
    )


CASES = [([0, 49], True), ([49], True), ([50], False), ([0, 120], False)]
NEGATIVE = [([-1], False), ([3, -128], False)]
DTYPES = ["int8", "int32", "int64", "uint8", "uint32", "uint64", ">i8"]


@pytest.mark.parametrize(
    ("dtype", "ids", "ok"),
    [
        (dtype, ids, ok)
        for dtype in DTYPES
        for ids, ok in CASES + (NEGATIVE if np.dtype(dtype).kind == "i" else [])
    ],
)
def test_ids_must_lie_within_the_table(dtype: str, ids: list[int], ok: bool) -> None:
    """Negative ids and ids at or past the table's size are refused, whatever the integer
    type (one reduction sees a negative id as a huge unsigned one)."""
    feeds = {"item": np.array(ids).astype(dtype).reshape(-1, 1)}
    if ok:
        check_values(signature(dtype), feeds)
    else:
        with pytest.raises(InvalidModelInput) as error:
            check_values(signature(dtype), feeds)
        assert error.value.details["input"] == "item"


def test_ids_are_checked_in_strided_views_too() -> None:
    """A merged batch may be a view with strides; every element is still checked."""
    base = np.zeros((4, 2), dtype=np.int64)
    base[3, 0] = -5
    feeds: dict[str, Any] = {"item": base[:, :1]}  # non-contiguous
    assert not feeds["item"].flags.c_contiguous
    with pytest.raises(InvalidModelInput):
        check_values(signature("int64"), feeds)
    base[3, 0] = 7
    check_values(signature("int64"), feeds)


def test_non_finite_floats_are_refused() -> None:
    spec = InputSpec("x", np.dtype("float32"), (None, 2))
    sig = Signature(inputs=(spec,), outputs=("y",), batchable=True)
    check_values(sig, {"x": np.ones((2, 2), np.float32)})
    with pytest.raises(InvalidModelInput):
        check_values(sig, {"x": np.array([[1.0, np.nan]], np.float32)})


def test_negative_ids_are_refused_even_for_a_table_past_half_the_types_range() -> None:
    """A negative int8 id seen as unsigned is at least 128; with a 200-row table it must
    still be caught, by the two-sided check."""
    spec = InputSpec("item", np.dtype("int8"), (None,), index_bound=200)
    sig = Signature(inputs=(spec,), outputs=("y",), batchable=True)
    check_values(sig, {"item": np.array([0, 127], np.int8)})
    with pytest.raises(InvalidModelInput):
        check_values(sig, {"item": np.array([-100], np.int8)})
