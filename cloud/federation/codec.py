"""How a received update is stored: its arrays in one .npz, float32, without pickles.

Nothing but the numbers and the sample count goes in: no name of the sender, no time."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from cloud.federation.aggregate import SparseArrays, UpdateArrays

_HEADER = "header"


def encode(update: UpdateArrays) -> bytes:
    """The update as .npz bytes; array names are positions, the header maps them to params."""
    arrays: dict[str, np.ndarray] = {}
    dense = []
    for name, values in update.dense.items():
        arrays[f"a{len(arrays)}"] = values.astype(np.float32)
        dense.append(name)
    sparse = []
    for name, s in update.sparse.items():
        at = len(arrays)
        arrays[f"a{at}"] = s.ids.astype(np.int64)
        arrays[f"a{at + 1}"] = s.rows.astype(np.float32)
        if s.counts is not None:
            arrays[f"a{at + 2}"] = s.counts.astype(np.float64)
        sparse.append([name, at, s.counts is not None])
    header = json.dumps({"samples": update.samples, "dense": dense, "sparse": sparse})
    arrays[_HEADER] = np.frombuffer(header.encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, allow_pickle=False, **arrays)
    return out.getvalue()


def decode(data: bytes) -> UpdateArrays:
    """The update that :func:`encode` stored; ValueError for anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            header = json.loads(npz[_HEADER].tobytes().decode())
            dense = {name: npz[f"a{i}"] for i, name in enumerate(header["dense"])}
            sparse = {}
            for name, at, has_counts in header["sparse"]:
                sparse[name] = SparseArrays(
                    ids=npz[f"a{at}"],
                    rows=npz[f"a{at + 1}"],
                    counts=npz[f"a{at + 2}"] if has_counts else None,
                )
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a stored update ({exc.__class__.__name__})") from exc
    return UpdateArrays(samples=int(header["samples"]), dense=dense, sparse=sparse)
