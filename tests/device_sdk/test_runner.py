"""The model runner: sessions cached per digest, warm-up, input checks, batches."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_sdk import InvalidBundle, InvalidModelInput, LoadedModel, ModelRunner
from examples.tiny_model import tiny_model


class RecordingSession(onnxruntime.InferenceSession):  # type: ignore[misc]
    """An InferenceSession that remembers every session made and every feed it ran."""

    made: ClassVar[list[RecordingSession]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feeds: list[dict[str, Any]] = []
        RecordingSession.made.append(self)

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        self.feeds.append(dict(input_feed))
        return super().run(output_names, input_feed, run_options)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[RecordingSession]:
    RecordingSession.made = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    return RecordingSession


def linear(seed: int = 0) -> bytes:
    """y = x @ W + b with x float32 [batch, 4] and y [batch, 2]."""
    return tiny_model(4, 2, seed).SerializeToString()


def two_inputs() -> bytes:
    """y = (x + offset) @ W: x float32 [batch, 4], offset float32 [1, 4] (fixed)."""
    weights = np.arange(8, dtype=np.float32).reshape(4, 2)
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "offset"], ["shifted"]),
            helper.make_node("MatMul", ["shifted", "W"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def model_file(directory: Path, data: bytes, name: str = "model.onnx") -> tuple[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def loaded(tmp_path: Path, data: bytes) -> LoadedModel:
    return ModelRunner().load(*model_file(tmp_path, data))


def x(rows: int = 1) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)


def test_one_session_per_digest(tmp_path: Path, recording: type[RecordingSession]) -> None:
    """The same model file under two task directories shares one cached session."""
    runner = ModelRunner()
    first = runner.load(*model_file(tmp_path / "a", linear()))
    second = runner.load(*model_file(tmp_path / "b", linear()))
    other = runner.load(*model_file(tmp_path / "c", linear(seed=1)))
    assert first is second and other is not first
    assert len(recording.made) == 2
    assert runner.cached == {first.sha256, other.sha256}


def test_concurrent_first_uses_create_one_session(
    tmp_path: Path, recording: type[RecordingSession]
) -> None:
    """Eight threads asking for a model at once get one session between them."""
    runner = ModelRunner()
    path, digest = model_file(tmp_path, linear())
    barrier = threading.Barrier(8)
    models: list[LoadedModel] = []

    def load() -> None:
        barrier.wait(timeout=10)
        models.append(runner.load(path, digest))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(models) == 8 and all(m is models[0] for m in models)
    assert len(recording.made) == 1


def test_load_warms_up_with_zeros_shaped_by_the_signature(
    tmp_path: Path, recording: type[RecordingSession]
) -> None:
    """Loading runs the model once on zeros, symbolic dimensions set to 1."""
    loaded(tmp_path, two_inputs())
    (session,) = recording.made
    (feed,) = session.feeds
    assert feed["x"].shape == (1, 4) and feed["x"].dtype == np.float32
    assert feed["offset"].shape == (1, 4) and not feed["x"].any()


def test_session_options_use_one_thread_and_full_optimisation(
    tmp_path: Path, recording: type[RecordingSession]
) -> None:
    """Sessions run with the configured intra-op threads, one inter-op thread, all optimisations."""
    ModelRunner(intra_op_num_threads=2).load(*model_file(tmp_path, linear()))
    options = recording.made[0].get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_forget_drops_sessions_not_kept(tmp_path: Path) -> None:
    """forget(keep) leaves only the sessions of the kept digests in the cache."""
    runner = ModelRunner()
    kept = runner.load(*model_file(tmp_path / "a", linear()))
    runner.load(*model_file(tmp_path / "b", linear(seed=1)))
    runner.forget({kept.sha256})
    assert runner.cached == {kept.sha256}


def test_changed_model_file_is_refused(tmp_path: Path) -> None:
    """A model file whose bytes no longer match the manifest's digest is not loaded."""
    path, digest = model_file(tmp_path, linear())
    path.write_bytes(linear(seed=1))
    with pytest.raises(InvalidBundle, match="no longer matches its digest"):
        ModelRunner().load(path, digest)


def test_run_returns_outputs_by_name(tmp_path: Path) -> None:
    """run() returns a dict of output name to array, the same as a raw session gives."""
    model = loaded(tmp_path, linear())
    raw = onnxruntime.InferenceSession(linear(), providers=["CPUExecutionProvider"])
    outputs = model.run({"x": x()})
    assert list(outputs) == ["y"]
    np.testing.assert_allclose(outputs["y"], raw.run(None, {"x": x()})[0])


def test_batch_inputs_give_one_row_each(tmp_path: Path) -> None:
    """A batch of five rows through a symbolic batch dimension gives five rows of output."""
    model = loaded(tmp_path, linear())
    batch = model.run({"x": x(5)})["y"]
    assert batch.shape == (5, 2)
    np.testing.assert_allclose(batch[3], model.run({"x": x(5)[3:4]})["y"][0], rtol=1e-6)


def test_lists_are_converted_to_the_models_dtype(tmp_path: Path) -> None:
    """Plain lists are accepted and converted to the input's dtype."""
    model = loaded(tmp_path, linear())
    np.testing.assert_allclose(model.run({"x": [[0, 1, 2, 3]]})["y"], model.run({"x": x()})["y"])


def test_wrong_dtype_names_input_and_expectation(tmp_path: Path) -> None:
    """A float64 array for a float32 input is refused with the dtype and shape expected."""
    model = loaded(tmp_path, linear())
    with pytest.raises(InvalidModelInput) as raised:
        model.run({"x": x().astype(np.float64)})
    assert str(raised.value).startswith(
        "input 'x' has dtype float64; the model expects float32 with shape [batch, 4]."
    )
    assert isinstance(raised.value, ValueError)


def test_wrong_rank_names_input_and_expectation(tmp_path: Path) -> None:
    """A 1-D array for a [batch, 4] input is refused, with a hint to add the batch axis."""
    model = loaded(tmp_path, linear())
    with pytest.raises(InvalidModelInput, match=r"input 'x' has shape \(4,\); the model expects "):
        model.run({"x": x()[0]})
    with pytest.raises(InvalidModelInput, match=r"float32 with shape \[batch, 4\]; .*x\[None\]"):
        model.run({"x": x()[0]})


def test_wrong_fixed_dimension_names_input_and_expectation(tmp_path: Path) -> None:
    """An array of 5 columns for a 4-column input is refused, naming the dimension."""
    model = loaded(tmp_path, linear())
    bad = np.zeros((2, 5), np.float32)
    with pytest.raises(
        InvalidModelInput, match=r"input 'x' has shape \(2, 5\).*dimension 1 must be 4"
    ):
        model.run({"x": bad})


def test_missing_input_names_it_and_the_signature(tmp_path: Path) -> None:
    """Leaving out an input is refused, naming it and every input the model takes."""
    model = loaded(tmp_path, two_inputs())
    with pytest.raises(InvalidModelInput) as raised:
        model.run({"x": x()})
    assert str(raised.value) == (
        "input 'offset' is missing; the model expects 'x' (float32 with shape [batch, 4]), "
        "'offset' (float32 with shape [1, 4])."
    )


def test_unknown_input_name_is_refused(tmp_path: Path) -> None:
    """An input name the model does not have is refused, naming it and the expected one."""
    model = loaded(tmp_path, linear())
    with pytest.raises(InvalidModelInput, match="input 'z' is not an input of the model"):
        model.run({"x": x(), "z": x()})
    with pytest.raises(InvalidModelInput, match="input 'x' is missing; input 'X' is not an"):
        model.run({"X": x()})


def test_inputs_must_be_a_mapping(tmp_path: Path) -> None:
    """A bare array instead of {name: array} is refused with what the model expects."""
    model = loaded(tmp_path, linear())
    with pytest.raises(InvalidModelInput, match=r"mapping of input name to array.*'x' \(float32"):
        model.run(x())  # type: ignore[arg-type]
