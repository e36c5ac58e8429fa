"""``build_models``: train the edge and cloud models, export them to ONNX, write the cards.

The output directory holds ``edge.onnx``, ``edge_int8.onnx``, ``cloud.onnx``, ``cards.json``,
``vocab.json`` (movieId -> item index), and ``edge.sample.npz`` / ``cloud.sample.npz``
(512 held-out rows, arrays named as the model's inputs, plus ``label``). One seed gives
byte-identical ONNX files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from models import autodiff as ad
from models import card as cards
from models import features, metrics, movielens, runtime
from models.cloud import CloudConfig, CloudModel
from models.edge import EdgeConfig, EdgeModel
from models.errors import DatasetError, ExportError, OutputError
from models.features import Examples
from models.quantize import quantize_int8
from models.recommender import Recommender
from models.training import Params, TrainReport, train

HOLDOUT = 0.2  # the last 20% of ratings, by time, are held out
VALIDATION = 0.1  # the last 10% of the training period picks the epoch
HISTORY = 100  # the longest history any model reads
SAMPLE_ROWS = 512
# --quick: the most recent training examples only, one epoch, a slice of the held-out set.
QUICK_TRAIN, QUICK_VALIDATION, QUICK_TEST = 12_000, 3_000, 6_000
# Same shapes as the full models (so quick files serve the same requests), faster steps.
QUICK_EDGE = EdgeConfig(epochs=1, learning_rate=3e-3)
QUICK_CLOUD = CloudConfig(epochs=1, learning_rate=2e-3)
# onnxruntime and numpy sum in different orders; beyond this they disagree for a reason.
AGREEMENT = 1e-4
TARGETS = {"edge": "device", "edge_int8": "device", "cloud": "cloud"}


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    files: dict[str, Path]  # model name -> its .onnx file
    cards: dict[str, dict[str, Any]]
    seconds: float


@dataclass(frozen=True)
class _Split:
    fit: Examples
    validation: Examples
    test: Examples


def build_models(data_dir: Path, out_dir: Path, seed: int = 0, quick: bool = False) -> BuildResult:
    """Build every model from the MovieLens directory ``data_dir`` into ``out_dir``."""
    started = time.perf_counter()
    # One BLAS thread: the matrices are small, and threads on busy cores cost far more.
    with threadpool_limits(1):
        dataset = movielens.load(data_dir)
        cut = movielens.time_cut(dataset.ratings, HOLDOUT)
        vocab = features.build_vocabulary(dataset.ratings, cut)
        split = _split(features.build_examples(dataset, vocab, HISTORY), cut, quick)
        _prepare(out_dir)  # before training, so that a bad --out fails in seconds
        genres = len(dataset.movies.genre_names)
        data = cards.DataSummary(
            source=f"MovieLens ({data_dir.name})",
            ratings=len(dataset.ratings),
            time_cut=cut,
            train_examples=len(split.fit),
            validation_examples=len(split.validation),
            test_examples=len(split.test),
            test_click_share=float(split.test.label.mean()),
            vocab_size=vocab.size,
            genres=dataset.movies.genre_names,
            quick=quick,
            baselines=_baselines(split.test),
        )
        edge = EdgeModel(vocab.size, genres, QUICK_EDGE if quick else EdgeConfig())
        cloud = CloudModel(vocab.size, genres, QUICK_CLOUD if quick else CloudConfig())
        blobs: dict[str, bytes] = {}
        built: dict[str, dict[str, Any]] = {}
        for index, model in enumerate((edge, cloud)):
            rng = np.random.default_rng([seed, index])
            params, report = _fit(model, split, rng)
            test_inputs = model.inputs_from(split.test)
            scores = model.predict(params, test_inputs)
            training = _training_record(model, params, report, seed)
            card = cards.model_card(
                model,
                name=model.name,
                target=TARGETS[model.name],
                metrics=_metrics(split.test.label, scores),
                data=data,
                training=training,
            )
            exported = model.export(params, cards.metadata(card))
            blob = exported.SerializeToString()
            _check_agreement(model, blob, test_inputs, scores)
            blobs[model.name], built[model.name] = blob, card
            if model is edge:
                blobs["edge_int8"], built["edge_int8"] = _int8_variant(
                    model, exported, test_inputs, split.test.label, data, training
                )
        sample = _sample_rows(len(split.test), seed)
        files = _write(out_dir, blobs, built)
        for model in (edge, cloud):
            rows = split.test.take(sample)
            _write_npz(out_dir / f"{model.name}.sample.npz", model.inputs_from(rows), rows.label)
        _write_text(out_dir / "vocab.json", json.dumps(vocab.to_json(), separators=(",", ":")))
    return BuildResult(out_dir, files, built, time.perf_counter() - started)


def _prepare(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(
            f"{out_dir} exists and is not a directory; give --out a directory."
        ) from None
    except OSError as exc:
        raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    if not os.access(out_dir, os.W_OK):
        raise OutputError(f"{out_dir} is not writable; give --out a directory you can write.")


def _training_record(
    model: Recommender, params: Params, report: TrainReport, seed: int
) -> dict[str, Any]:
    config = model.train_config
    return {
        "seed": seed,
        "optimizer": "Adam, linear learning-rate decay, decoupled weight decay",
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "max_epochs": config.epochs,
        "best_epoch": report.best_epoch,
        "validation_auc": [round(v, 6) for v in report.validation],
        "parameters": int(sum(v.size for v in params.values())),
    }


def _int8_variant(
    model: Recommender,
    exported: onnx.ModelProto,
    test_inputs: Mapping[str, Any],
    labels: np.ndarray[Any, Any],
    data: cards.DataSummary,
    training: dict[str, Any],
) -> tuple[bytes, dict[str, Any]]:
    """The quantized file and its card, whose AUC is onnxruntime's on the int8 graph."""
    int8 = quantize_int8(exported)
    scores = runtime.score(int8.SerializeToString(), test_inputs)
    card = cards.model_card(
        model,
        name="edge_int8",
        target=TARGETS["edge_int8"],
        metrics=_metrics(labels, scores),
        data=data,
        training=training | {"quantization": "dynamic int8 (onnxruntime)"},
        notes="Weights quantized to int8.",
    )
    del int8.metadata_props[:]
    onnx.helper.set_model_props(int8, cards.metadata(card))
    return int8.SerializeToString(), card


def _split(examples: Examples, cut: int, quick: bool) -> _Split:
    held_out = examples.timestamp >= cut
    train_rows = np.flatnonzero(~held_out)  # in time order
    test = examples.take(held_out)
    boundary = int(len(train_rows) * (1.0 - VALIDATION))
    fit_rows, validation_rows = train_rows[:boundary], train_rows[boundary:]
    if quick:
        fit_rows, validation_rows = fit_rows[-QUICK_TRAIN:], validation_rows[-QUICK_VALIDATION:]
        test = test.take(np.arange(min(QUICK_TEST, len(test))))
    split = _Split(examples.take(fit_rows), examples.take(validation_rows), test)
    for part, rows in (
        ("training", split.fit),
        ("validation", split.validation),
        ("held-out", split.test),
    ):
        if len(rows) < 2 or rows.label.min() == rows.label.max():
            raise DatasetError(
                f"the {part} period has {len(rows)} ratings and not both clicks (>= 4 stars) "
                "and non-clicks; the models need more data than this."
            )
    if len(split.test) < SAMPLE_ROWS:
        raise DatasetError(
            f"the held-out period has {len(split.test)} ratings; the sample files need "
            f"{SAMPLE_ROWS}. Give a larger MovieLens data set."
        )
    return split


def _fit(model: Recommender, split: _Split, rng: np.random.Generator) -> tuple[Params, TrainReport]:
    params = model.init_params(rng)
    fit_inputs = model.inputs_from(split.fit)
    validation_inputs = model.inputs_from(split.validation)
    labels = split.fit.label

    def loss(tensors: Mapping[str, ad.Tensor], rows: np.ndarray[Any, Any]) -> ad.Tensor:
        batch = {k: v[rows] for k, v in fit_inputs.items()}
        return ad.bce_with_logits(model.logits(tensors, batch), labels[rows])

    def validate(current: Params) -> float:
        return metrics.auc(split.validation.label, model.predict(current, validation_inputs))

    report = train(params, loss, len(split.fit), model.train_config, rng, validate)
    return params, report


def _baselines(test: Examples) -> dict[str, float]:
    """Scores anyone could compute from the statistics alone, with no model at all."""
    movie, user = test.item_stats[:, 2], test.user_stats[:, 2]  # earlier click rates
    return {
        "movie_click_rate": metrics.auc(test.label, movie),
        "user_click_rate": metrics.auc(test.label, user),
        "user_plus_movie_click_rate": metrics.auc(test.label, user + movie),
    }


def _metrics(labels: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> dict[str, float]:
    return {"auc": metrics.auc(labels, scores), "logloss": metrics.logloss(labels, scores)}


def _check_agreement(
    model: Recommender, blob: bytes, inputs: Mapping[str, Any], expected: np.ndarray[Any, Any]
) -> None:
    rows = slice(0, 2048)
    got = runtime.score(blob, {k: v[rows] for k, v in inputs.items()})
    gap = float(np.abs(got - expected[rows]).max())
    if not gap <= AGREEMENT:
        raise ExportError(
            f"the exported {model.name} model disagrees with its numpy forward pass by {gap:.2e} "
            f"(allowed {AGREEMENT:.0e}); the ONNX graph and the training code have diverged."
        )


def _sample_rows(rows: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng([seed, 2])
    return np.sort(rng.choice(rows, size=SAMPLE_ROWS, replace=False))


def _write(
    out_dir: Path, blobs: Mapping[str, bytes], built: dict[str, dict[str, Any]]
) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for name, blob in blobs.items():
        path = out_dir / f"{name}.onnx"
        _write_bytes(path, blob)
        built[name] |= {"size_bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        files[name] = path
    _write_text(out_dir / "cards.json", json.dumps(built, indent=2, sort_keys=True) + "\n")
    return files


def _write_npz(path: Path, arrays: Mapping[str, Any], label: np.ndarray[Any, Any]) -> None:
    scratch = path.with_name(path.name + ".partial.npz")
    np.savez(scratch, label=label, **arrays)
    os.replace(scratch, path)


def _write_bytes(path: Path, data: bytes) -> None:
    scratch = path.with_name(path.name + ".partial")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())
