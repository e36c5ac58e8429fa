"""Model cards: what a model takes, gives, weighs and scores, and what it was trained on.

A card travels twice: in ``cards.json`` beside the files, and inside each ONNX file as
metadata (``tandem.card``, plus ``auc`` on its own for quick reading). The copy inside the
file cannot hold the file's own size or digest; ``cards.json`` adds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.graph import BATCH, OPSET, OUTPUT
from models.movielens import CLICK_THRESHOLD
from models.recommender import Recommender

CARD_KEY = "tandem.card"


@dataclass(frozen=True)
class DataSummary:
    """Where the examples came from and how they were split."""

    source: str
    ratings: int
    time_cut: int
    train_examples: int
    validation_examples: int
    test_examples: int
    test_click_share: float
    vocab_size: int
    genres: tuple[str, ...]
    quick: bool
    # Held-out AUC of simple heuristics on the same rows, for scale.
    baselines: Mapping[str, float]

    def as_card(self) -> dict[str, Any]:
        cut = datetime.fromtimestamp(self.time_cut, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "source": self.source,
            "ratings": self.ratings,
            "label": f"click = rating >= {CLICK_THRESHOLD:g} stars",
            "split": (
                f"by time: ratings before {cut} train (the last 10% of them, by time, "
                "validate and pick the epoch); ratings from then on are held out. Each "
                "example's features use only ratings with an earlier timestamp."
            ),
            "time_cut": self.time_cut,
            "train_examples": self.train_examples,
            "validation_examples": self.validation_examples,
            "test_examples": self.test_examples,
            "test_click_share": round(self.test_click_share, 4),
            "vocab_size": self.vocab_size,
            "genres": list(self.genres),
            "quick": self.quick,
            "baseline_auc": {k: round(v, 6) for k, v in self.baselines.items()},
        }


def model_card(
    model: Recommender,
    *,
    name: str,
    target: str,
    metrics: Mapping[str, float],
    data: DataSummary,
    training: Mapping[str, Any],
    notes: str = "",
) -> dict[str, Any]:
    """The card of one model file, everything but its size and digest."""
    card: dict[str, Any] = {
        "name": name,
        "file": f"{name}.onnx",
        "target": target,
        "description": model.description + (f" {notes}" if notes else ""),
        "inputs": [spec.as_card() for spec in model.inputs],
        "outputs": [
            {
                "name": OUTPUT,
                "dtype": "float32",
                "shape": [BATCH],
                "meaning": f"probability that the user rates the movie >= {CLICK_THRESHOLD:g}",
            }
        ],
        "opset": OPSET,
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "data": data.as_card(),
        "training": dict(training),
    }
    return card


def metadata(card: Mapping[str, Any]) -> dict[str, str]:
    """ONNX ``metadata_props`` for a card."""
    props = {CARD_KEY: json.dumps(card, sort_keys=True, separators=(",", ":"))}
    props |= {k: repr(v) for k, v in card["metrics"].items()}
    return props
