"""The federation wire contract: what a model update may and may not carry."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from device_sdk.federation_wire import (
    MAX_DENSE_VALUES,
    MAX_ROW_WIDTH,
    MAX_SPARSE_ROWS,
    ModelUpdate,
    UpdateAccepted,
)


def _update(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": str(uuid.uuid4()),
        "model": "recs",
        "base_version": 1,
        "samples": 5,
        "dense": [{"name": "head.w", "shape": [2, 1], "values": [0.5, -0.5]}],
        "sparse": [{"name": "movie_emb", "ids": [3, 1], "rows": [[1.0, 2.0], [3.0, 4.0]]}],
    }
    body.update(fields)
    return body


def test_a_well_formed_update_parses() -> None:
    """Dense and sparse deltas with matching sizes make a valid update."""
    update = ModelUpdate.model_validate(_update())
    assert update.dense[0].values == [0.5, -0.5]
    assert update.sparse[0].ids == [3, 1] and update.sparse[0].width == 2


def test_dense_values_must_fill_the_shape() -> None:
    """A dense delta needs exactly prod(shape) values."""
    with pytest.raises(ValidationError, match="needs 2"):
        ModelUpdate.model_validate(
            _update(dense=[{"name": "w", "shape": [2, 1], "values": [1.0, 2.0, 3.0]}])
        )


def test_sparse_ids_must_be_unique() -> None:
    """A row id appears at most once in a sparse delta."""
    with pytest.raises(ValidationError, match="unique"):
        ModelUpdate.model_validate(
            _update(sparse=[{"name": "e", "ids": [1, 1], "rows": [[1.0], [2.0]]}])
        )


def test_sparse_rows_must_match_ids_and_share_a_width() -> None:
    """Rows are one per id, all of one width; counts (if any) one per id."""
    cases: list[dict[str, Any]] = [
        {"name": "e", "ids": [1, 2], "rows": [[1.0]]},
        {"name": "e", "ids": [1, 2], "rows": [[1.0], [1.0, 2.0]]},
        {"name": "e", "ids": [1], "rows": [[1.0]], "counts": [1, 2]},
        {"name": "e", "ids": [1], "rows": [[1.0]], "counts": [0]},
        {"name": "e", "ids": [-1], "rows": [[1.0]]},
        {"name": "e", "ids": [1], "rows": [[0.0] * (MAX_ROW_WIDTH + 1)]},
    ]
    for sparse in cases:
        with pytest.raises(ValidationError):
            ModelUpdate.model_validate(_update(sparse=[sparse]))


def test_numbers_must_be_finite_and_bounded() -> None:
    """NaN, infinities and values beyond 1e6 are refused."""
    for bad in (float("nan"), float("inf"), 2e6):
        with pytest.raises(ValidationError):
            ModelUpdate.model_validate(
                _update(dense=[{"name": "w", "shape": [1], "values": [bad]}])
            )


def test_names_must_be_unique_and_not_both_dense_and_sparse() -> None:
    """Each tensor appears once: no repeated names, no name in both lists."""
    dense = {"name": "w", "shape": [1], "values": [1.0]}
    with pytest.raises(ValidationError, match="unique"):
        ModelUpdate.model_validate(_update(dense=[dense, dense]))
    with pytest.raises(ValidationError, match="both dense and sparse"):
        ModelUpdate.model_validate(
            _update(sparse=[{"name": "w", "ids": [0], "rows": [[1.0]]}], dense=[dense])
        )


def test_totals_are_bounded() -> None:
    """All dense values together, and all sparse rows together, have caps."""
    rows = MAX_DENSE_VALUES // 8 + 1  # two tensors of [rows, 4]: just over the cap together
    dense = [{"name": f"w{i}", "shape": [rows, 4], "values": [0.0] * rows * 4} for i in range(2)]
    with pytest.raises(ValidationError, match="dense values"):
        ModelUpdate.model_validate(_update(dense=dense, sparse=[]))
    rows = MAX_SPARSE_ROWS // 2 + 1
    sparse = [{"name": f"e{i}", "ids": list(range(rows)), "rows": [[0.0]] * rows} for i in range(2)]
    with pytest.raises(ValidationError, match="sparse rows"):
        ModelUpdate.model_validate(_update(dense=[], sparse=sparse))


def test_an_update_carries_nothing_else() -> None:
    """Extra fields (a device id, say) are refused, at every level."""
    with pytest.raises(ValidationError):
        ModelUpdate.model_validate(_update(device_id="d-1"))
    with pytest.raises(ValidationError):
        ModelUpdate.model_validate(
            _update(dense=[{"name": "w", "shape": [1], "values": [1.0], "user": "u"}])
        )


def test_key_is_a_lowercase_uuid_and_sizes_are_bounded() -> None:
    """The key, model name, version, samples and shape follow their patterns and ranges."""
    cases: tuple[dict[str, Any], ...] = (
        {"key": str(uuid.uuid4()).upper()},
        {"key": "not-a-uuid"},
        {"model": "Recs"},
        {"base_version": 0},
        {"samples": 0},
        {"dense": [{"name": "w", "shape": [1, 1, 1, 1, 1], "values": [1.0]}]},
        {"dense": [{"name": "w", "shape": [0], "values": []}]},
        {"dense": [{"name": "bad name", "shape": [1], "values": [1.0]}]},
        {"dense": [], "sparse": []},
    )
    for fields in cases:
        with pytest.raises(ValidationError):
            ModelUpdate.model_validate(_update(**fields))


def test_receipt_round_trips() -> None:
    """The receipt is plain data a device can parse back."""
    receipt = UpdateAccepted(round=3, received=2, k=20, duplicate=False)
    assert UpdateAccepted.model_validate_json(receipt.model_dump_json()) == receipt
