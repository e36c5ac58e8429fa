"""The .npz reader and writer: what numpy writes is read exactly, and numpy reads ours."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from cloud.core.errors import InvalidTensorBody, PayloadTooLarge
from cloud.serving import npz
from tests.cloud.serving import onnx_models
from tests.cloud.serving.helpers import npz_bytes

ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "scores": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
    "ids": np.arange(5, dtype=np.int64),
    "scalar": np.array(2.5),
    "flags": np.array([True, False]),
    "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    "empty": np.zeros((0, 7), dtype=np.float16),
    "námé": np.ones((1,), dtype=np.uint8),
}


def savez(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_reads_what_numpy_writes(compressed: bool) -> None:
    """Every array of an np.savez (or savez_compressed) archive comes back equal, same shape."""
    arrays = npz.read_arrays(savez(compressed, **ARRAYS), max_bytes=1 << 20)
    assert arrays.keys() == ARRAYS.keys()
    for name, expected in ARRAYS.items():
        assert arrays[name].shape == expected.shape, name
        assert arrays[name].dtype == expected.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(arrays[name], expected)


def test_numpy_reads_what_we_write() -> None:
    """np.load reads write_arrays' archive as the same arrays, and so does our reader."""
    data = npz.write_arrays(ARRAYS)
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        for name, expected in ARRAYS.items():
            assert archive[name].shape == expected.shape, name
            np.testing.assert_array_equal(archive[name], expected)
    assert npz.read_arrays(data, max_bytes=1 << 20).keys() == ARRAYS.keys()


def test_array_data_is_bounded() -> None:
    """Arrays beyond max_bytes in total are refused with 413, whatever the archive claims."""
    data = savez(a=np.zeros(1000, dtype=np.float64), b=np.zeros(1000, dtype=np.float64))
    npz.read_arrays(data, max_bytes=16_000)
    with pytest.raises(PayloadTooLarge):
        npz.read_arrays(data, max_bytes=15_999)


def test_request_bodies_take_the_direct_path_with_the_general_paths_result() -> None:
    """A body as np.savez writes it for a request is read by the direct path, into the
    same arrays (names, dtypes, shapes, values) as the general reader's."""
    body = npz_bytes(**onnx_models.recommender_inputs(3))
    direct = npz.read_plain(body, 1 << 20)
    assert direct is not None
    general = npz.read_arrays(body + b"", max_bytes=1 << 20)
    assert direct.keys() == general.keys()
    for name, array in general.items():
        assert direct[name].dtype == array.dtype and direct[name].shape == array.shape
        np.testing.assert_array_equal(direct[name], array)


@pytest.mark.parametrize(
    "arrays",
    [
        {"big_endian": ARRAYS["big_endian"]},
        {"fortran": ARRAYS["fortran"]},
        {"námé": ARRAYS["námé"]},
    ],
    ids=["big-endian", "fortran", "non-ascii-name"],
)
def test_unusual_archives_are_left_to_the_general_path(arrays: dict[str, Any]) -> None:
    """Byte orders, layouts and names the direct path does not expect are read by the
    general path, correctly."""
    body = savez(**arrays)
    assert npz.read_plain(body, 1 << 20) is None
    read = npz.read_arrays(body, max_bytes=1 << 20)
    for name, expected in arrays.items():
        np.testing.assert_array_equal(read[name], expected)


def test_a_corrupted_member_is_refused() -> None:
    """A body whose array bytes do not match their CRC is a 400, not arrays."""
    body = bytearray(savez(x=np.arange(4, dtype=np.int64)))
    body[body.index(b"NUMPY") + 130] ^= 0xFF  # a byte of the array data
    assert npz.read_plain(bytes(body), 1 << 20) is None
    with pytest.raises(InvalidTensorBody):
        npz.read_arrays(bytes(body), max_bytes=1 << 20)
