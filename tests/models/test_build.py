"""``build_models``: the files it writes, what they score, and that a seed fixes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import card, runtime
from models.build import SAMPLE_ROWS, BuildResult, build_models
from models.errors import DatasetError
from models.metrics import auc
from tests.models.factories import write_movielens

CONTRACT = [
    "edge.onnx",
    "edge_int8.onnx",
    "cloud.onnx",
    "cards.json",
    "vocab.json",
    "edge.sample.npz",
    "cloud.sample.npz",
]
TWO_MB = 2 * 1024 * 1024


def test_the_build_writes_every_contract_file(quick_build: BuildResult) -> None:
    """The output directory holds the three models, cards, vocabulary and both samples."""
    assert sorted(p.name for p in quick_build.out_dir.iterdir()) == sorted(CONTRACT)


def test_cards_describe_inputs_outputs_size_and_auc(quick_build: BuildResult) -> None:
    """cards.json has a card per model with its inputs, score output, true size and AUC."""
    cards = json.loads((quick_build.out_dir / "cards.json").read_text())
    assert sorted(cards) == ["cloud", "edge", "edge_int8"]
    for name, entry in cards.items():
        model = onnx.load(quick_build.out_dir / entry["file"])
        assert [i["name"] for i in entry["inputs"]] == [i.name for i in model.graph.input]
        assert entry["outputs"][0]["name"] == "score"
        assert entry["size_bytes"] == (quick_build.out_dir / f"{name}.onnx").stat().st_size
        assert 0.5 < entry["metrics"]["auc"] < 1.0
        assert entry["target"] == ("cloud" if name == "cloud" else "device")
        assert "rating >= 4" in entry["data"]["label"]
        assert 0.5 < entry["data"]["baseline_auc"]["user_plus_movie_click_rate"] < 1.0


def test_each_onnx_file_carries_its_card(quick_build: BuildResult) -> None:
    """The card inside each ONNX file's metadata equals cards.json's, less size and digest."""
    cards = json.loads((quick_build.out_dir / "cards.json").read_text())
    for name, entry in cards.items():
        model = onnx.load(quick_build.out_dir / f"{name}.onnx")
        props = {p.key: p.value for p in model.metadata_props}
        inside = json.loads(props[card.CARD_KEY])
        assert inside == {k: v for k, v in entry.items() if k not in {"size_bytes", "sha256"}}
        assert float(props["auc"]) == entry["metrics"]["auc"]


def test_the_cloud_model_beats_the_edge_model(quick_build: BuildResult) -> None:
    """Even in a quick build the cloud model's held-out AUC is clearly above the edge's."""
    cards = quick_build.cards
    assert cards["cloud"]["metrics"]["auc"] > cards["edge"]["metrics"]["auc"] + 0.03


def test_the_int8_edge_model_is_small_and_scores_like_the_float_one(
    quick_build: BuildResult,
) -> None:
    """edge_int8.onnx is under 2 MB, smaller than edge.onnx, and its AUC within 0.01."""
    cards = quick_build.cards
    assert cards["edge"]["size_bytes"] <= TWO_MB
    assert cards["edge_int8"]["size_bytes"] < cards["edge"]["size_bytes"] / 2
    assert abs(cards["edge_int8"]["metrics"]["auc"] - cards["edge"]["metrics"]["auc"]) < 0.01


@pytest.mark.parametrize("name", ["edge", "edge_int8", "cloud"])
def test_the_samples_feed_the_models_and_carry_labels(quick_build: BuildResult, name: str) -> None:
    """Each sample file's arrays are exactly the model's inputs (plus label), 512 rows."""
    stem = "edge" if name.startswith("edge") else "cloud"
    with np.load(quick_build.out_dir / f"{stem}.sample.npz") as sample:
        arrays = {k: sample[k] for k in sample.files}
    label = arrays.pop("label")
    blob = (quick_build.out_dir / f"{name}.onnx").read_bytes()
    model = onnx.load_from_string(blob)
    assert sorted(arrays) == sorted(i.name for i in model.graph.input)
    for value in model.graph.input:
        expected = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        assert arrays[value.name].dtype == expected, value.name
    assert label.shape == (SAMPLE_ROWS,) and set(np.unique(label)) == {0.0, 1.0}
    scores = runtime.score(blob, arrays)
    assert scores.shape == (SAMPLE_ROWS,)
    assert auc(label, scores) > 0.5


def test_the_vocabulary_maps_movie_ids_to_indices_from_one(quick_build: BuildResult) -> None:
    """vocab.json maps each movieId (as text) to a distinct index 1..n; 0 is left for padding."""
    vocab = json.loads((quick_build.out_dir / "vocab.json").read_text())
    indices = sorted(vocab.values())
    assert indices == list(range(1, len(vocab) + 1))
    assert quick_build.cards["edge"]["data"]["vocab_size"] == len(vocab) + 1


def test_one_seed_builds_byte_identical_models(
    quick_build: BuildResult, movielens_dir: Path, tmp_path: Path
) -> None:
    """Building again with the same seed gives the same ONNX bytes; another seed does not."""
    again = build_models(movielens_dir, tmp_path / "again", seed=0, quick=True)
    for name, path in quick_build.files.items():
        assert again.files[name].read_bytes() == path.read_bytes(), name
    other = build_models(movielens_dir, tmp_path / "other", seed=1, quick=True)
    assert other.files["edge"].read_bytes() != quick_build.files["edge"].read_bytes()


def test_too_little_data_is_refused_with_the_reason(tmp_path: Path) -> None:
    """A data set too small to split and sample raises DatasetError saying what is missing."""
    ratings = [
        (u, 10 * (1 + i % 3), 1.0 + i % 5, 1000 + 10 * i + u) for i in range(40) for u in (1, 2)
    ]
    data = write_movielens(tmp_path / "data", ratings)
    with pytest.raises(DatasetError, match=r"held-out period has .* ratings; the sample files"):
        build_models(data, tmp_path / "out", quick=True)
    assert not (tmp_path / "out").exists()
