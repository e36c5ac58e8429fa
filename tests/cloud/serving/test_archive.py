"""Archives by layout: a body of a known layout decodes exactly as the full reader would
(any byte changed, it is parsed in full), batches merge by bytes, responses are written
from templates byte for byte as the writer would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from cloud.core.errors import PayloadTooLarge, TandemError
from cloud.serving import archive, npz
from cloud.serving.batcher import Arrays, BatchPolicy, MicroBatcher
from cloud.serving.signature import Signature, read_signature
from tests.cloud.serving import onnx_models
from tests.cloud.serving.helpers import npz_bytes


@pytest.fixture(autouse=True)
def no_layouts() -> Iterator[None]:
    archive._layouts.clear()
    yield
    archive._layouts.clear()


def inputs(seed: int, rows: int = 1) -> dict[str, np.ndarray[Any, Any]]:
    return onnx_models.recommender_inputs(rows, seed=seed)


def same(a: dict[str, np.ndarray[Any, Any]], b: dict[str, np.ndarray[Any, Any]]) -> None:
    assert list(a) == list(b)
    for name, array in b.items():
        assert a[name].dtype == array.dtype and a[name].shape == array.shape, name
        np.testing.assert_array_equal(a[name], array)


def outcome(read: Any, body: bytes, max_bytes: int = 1 << 20) -> Any:
    """The arrays ``read`` makes of ``body``, or the class of the error it raises."""
    try:
        result = read(body, max_bytes=max_bytes)
    except TandemError as exc:
        return type(exc)
    return result.arrays() if isinstance(result, archive.Archive) else result


def test_the_second_body_of_a_layout_is_checked_not_parsed() -> None:
    first, second = npz_bytes(**inputs(1)), npz_bytes(**inputs(2))
    assert len(first) == len(second)
    assert isinstance(archive.decode(first, max_bytes=1 << 20), dict)  # learned
    decoded = archive.decode(second, max_bytes=1 << 20)
    assert isinstance(decoded, archive.Archive)
    same(decoded.arrays(), npz.read_arrays(second, max_bytes=1 << 20))


def test_any_changed_byte_reads_as_the_full_reader_reads_it() -> None:
    """Every byte of a known layout's body changed in turn: the result (arrays, or the
    error) is the full reader's, whether the change is in a header, a CRC, a name or
    the data."""
    body = npz_bytes(a=np.arange(3, dtype=np.int64), b=np.ones((1, 2), np.float32))
    archive.decode(body, max_bytes=1 << 20)
    rng = np.random.default_rng(0)
    for position in range(len(body)):
        changed = bytearray(body)
        changed[position] ^= int(rng.integers(1, 256))
        hostile = bytes(changed)
        want = outcome(npz.read_arrays, hostile)
        got = outcome(archive.decode, hostile)
        if isinstance(want, dict):
            assert isinstance(got, dict), position
            same(got, want)
        else:
            assert got == want, position
        archive.decode(body, max_bytes=1 << 20)  # (a changed body may teach a layout)


@pytest.mark.parametrize(
    "other",
    [
        {"a": np.arange(3, dtype=np.float64), "b": np.ones((1, 2), np.float32)},  # dtype
        {"a": np.arange(3, dtype=np.int64), "b": np.ones((2, 1), np.float32)},  # shape
        {"c": np.arange(3, dtype=np.int64), "b": np.ones((1, 2), np.float32)},  # name
        {"b": np.ones((1, 2), np.float32), "a": np.arange(3, dtype=np.int64)},  # order
    ],
    ids=["dtype", "shape", "name", "order"],
)
def test_a_body_of_the_same_length_and_another_layout_is_parsed(
    other: dict[str, np.ndarray[Any, Any]],
) -> None:
    known = npz_bytes(a=np.arange(3, dtype=np.int64), b=np.ones((1, 2), np.float32))
    body = npz_bytes(**other)
    assert len(body) == len(known)
    archive.decode(known, max_bytes=1 << 20)
    decoded = archive.decode(body, max_bytes=1 << 20)
    assert isinstance(decoded, dict)
    same(decoded, other)


def test_the_array_bound_holds_for_a_known_layout() -> None:
    body = npz_bytes(x=np.zeros(100, np.float64))
    archive.decode(body, max_bytes=1 << 20)
    assert isinstance(archive.decode(body, max_bytes=800), archive.Archive)
    with pytest.raises(PayloadTooLarge):
        archive.decode(body, max_bytes=799)


def test_layouts_remembered_are_bounded() -> None:
    for n in range(archive.MAX_LAYOUTS + 20):
        archive.decode(npz_bytes(x=np.zeros(n + 1, np.uint8)), max_bytes=1 << 20)
    assert len(archive._layouts) == archive.MAX_LAYOUTS


def signature() -> Signature:
    model = onnx_models.recommender()
    return read_signature(ort.InferenceSession(model), model)


def known(seed: int, rows: int = 1) -> archive.Archive:
    archive.decode(npz_bytes(**inputs(0, rows)), max_bytes=1 << 20)
    decoded = archive.decode(npz_bytes(**inputs(seed, rows)), max_bytes=1 << 20)
    assert isinstance(decoded, archive.Archive)
    return decoded


def test_a_layout_matches_the_models_plan_once() -> None:
    plan = signature().plan
    assert plan is not None
    two = known(1, rows=2)
    rows, key = two.layout.exact(plan, max_rows=10) or (0, ())
    assert rows == 2
    assert key == tuple(tail for *_, tail in plan)
    assert two.layout.exact(plan, max_rows=1) is None  # too many rows: the full check words it
    other = archive.learn(npz_bytes(**{**inputs(0), "item": np.zeros(1, np.int32)}))
    assert other.exact(plan, max_rows=10) is None  # an input of another dtype


def test_archives_of_one_layout_merge_like_their_arrays() -> None:
    parts = [known(seed) for seed in range(1, 6)]
    merged = parts[0].layout.merge([p.body for p in parts])
    expected = {
        name: np.concatenate([p.arrays()[name] for p in parts]) for name in parts[0].arrays()
    }
    same(merged, expected)


class Echo:
    """Scores each row with its item id, so every request can tell its rows."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, feeds: Arrays) -> Arrays:
        self.calls.append(len(feeds["item"]))
        return {"score": feeds["item"].astype(np.float32)}


async def test_a_batch_mixing_archives_and_arrays_answers_each_its_own_rows() -> None:
    model = Echo()
    plan = signature().plan
    assert plan is not None
    with ThreadPoolExecutor(max_workers=1) as executor:
        batcher = MicroBatcher(
            model,
            policy=BatchPolicy(batching=True, max_batch=6, max_delay_s=60.0, max_queue_rows=99),
            executor=executor,
            batchable=True,
        )
        requests: list[Any] = [known(seed) for seed in (1, 2)]
        requests.append(inputs(3))
        requests += [known(seed, rows=2) for seed in (4,)]
        requests.append(known(5))
        calls = []
        for request in requests:
            if isinstance(request, archive.Archive):
                rows, key = request.layout.exact(plan, max_rows=10) or (0, ())
                calls.append(batcher.submit(request, rows, key))
            else:
                calls.append(batcher.submit(request, 1))
        answers = await asyncio.gather(*calls)
        await batcher.close()
    assert model.calls == [6]
    for request, answer in zip(requests, answers, strict=True):
        arrays = request.arrays() if isinstance(request, archive.Archive) else request
        np.testing.assert_array_equal(answer["score"], arrays["item"].astype(np.float32))


@pytest.mark.parametrize("seed", range(40))
def test_responses_are_the_writers_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    outputs = {}
    for k in range(int(rng.integers(1, 4))):
        dtype = rng.choice(["<f4", "<f8", "<i8", "<i4", "|u1", "|b1", ">f4"])
        shape = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 3))))
        outputs[f"out{k}" * (k + 1)] = (rng.random(shape) * 9).astype(dtype)
    for _ in range(2):  # the template's first use and a later one
        assert archive.encode(outputs) == npz.write_arrays(outputs)
    strided = {"s": np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1]}
    assert archive.encode(strided) == npz.write_arrays(strided)


def test_layouts_of_one_length_are_all_kept() -> None:
    """Two clients whose arrays differ in dtype only send bodies of one length: both
    layouts are kept, and neither is learned again."""
    floats = npz_bytes(x=np.zeros((1, 8), np.float32))
    ints = npz_bytes(x=np.zeros((1, 8), np.int32))
    assert len(floats) == len(ints)
    for body in (floats, ints):
        archive.decode(body, max_bytes=1 << 20)
    for body in (floats, ints, floats, ints):
        decoded = archive.decode(body, max_bytes=1 << 20)
        assert isinstance(decoded, archive.Archive)
        same(decoded.arrays(), npz.read_arrays(body, max_bytes=1 << 20))
    assert len(archive._layouts[len(floats)]) == 2


def test_an_archive_not_laid_out_as_numpy_writes_is_never_learned() -> None:
    """Bytes between the last member and the directory (read_plain accepts them): such a
    body is read in full every time."""
    body = npz_bytes(x=np.arange(3, dtype=np.int64))
    end = len(body) - npz.END.size
    *head, cd_offset, comment = npz.END.unpack_from(body, end)
    padded = body[:cd_offset] + b"\0" * 8 + body[cd_offset:end]
    padded += npz.END.pack(*head, cd_offset + 8, comment)
    assert npz.read_plain(padded, 1 << 20) is not None
    assert archive.learn(padded) is None
    for _ in range(2):
        decoded = archive.decode(padded, max_bytes=1 << 20)
        assert isinstance(decoded, dict)
        same(decoded, npz.read_arrays(padded, max_bytes=1 << 20))
