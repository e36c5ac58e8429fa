"""The edge model: small enough to ship to a phone (well under 2 MB, less again in int8).

The target movie's embedding, the mean embedding of the user's 20 most recent movies,
their element-wise product, and the movie's genres feed a one-hidden-layer MLP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models import autodiff as ad
from models import layers
from models.autodiff import Tensor
from models.features import Examples
from models.graph import BATCH, GraphBuilder, InputSpec
from models.recommender import Inputs, Recommender
from models.training import Params, TrainConfig


@dataclass(frozen=True)
class EdgeConfig:
    history: int = 20
    dim: int = 16
    hidden: int = 32
    epochs: int = 5
    learning_rate: float = 5e-4


class EdgeModel(Recommender):
    name = "edge"
    description = (
        "Tandem edge click-through model (MovieLens): P(rating >= 4) from the movie's "
        "embedding, the mean embedding of the user's recent movies, and the movie's genres."
    )

    def __init__(self, vocab_size: int, genres: int, config: EdgeConfig) -> None:
        self.vocab_size = vocab_size
        self.genres = genres
        self.config = config

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        length = self.config.history
        return (
            InputSpec(
                "item", "int64", (BATCH,), "the target movie's index in vocab.json; 0 = unknown"
            ),
            InputSpec(
                "history",
                "int64",
                (BATCH, length),
                f"the user's {length} most recent movies before now, oldest first, "
                "indices as in vocab.json, left-padded with 0",
            ),
            InputSpec(
                "genres",
                "float32",
                (BATCH, self.genres),
                "the target movie's genres, multi-hot in the card's genre order",
            ),
        )

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.config.epochs,
            learning_rate=self.config.learning_rate,
            weight_decay={"item_embedding": 1.0},
        )

    def init_params(self, rng: np.random.Generator) -> Params:
        dim = self.config.dim
        params: Params = {
            "item_embedding": (rng.normal(0, 0.05, (self.vocab_size, dim))).astype(np.float32)
        }
        params |= layers.init_mlp(rng, "mlp", [3 * dim + self.genres, self.config.hidden, 1])
        return params

    def inputs_from(self, examples: Examples) -> Inputs:
        recent = examples.recent(self.config.history)
        return {"item": recent.item, "history": recent.history, "genres": recent.genres}

    def logits(self, params: Mapping[str, Tensor], inputs: Inputs) -> Tensor:
        table = params["item_embedding"]
        target = ad.gather(table, inputs["item"])
        mask = layers.history_mask(inputs["history"])
        recent = layers.weighted_mean(
            ad.gather(table, inputs["history"]), mask, layers.inverse_count(mask)
        )
        x = ad.concat(
            [target, recent, ad.mul(target, recent), ad.constant(inputs["genres"])], axis=-1
        )
        return layers.mlp(params, "mlp", x)

    def score_graph(self, g: GraphBuilder, params: Params) -> str:
        table = g.weight("item_embedding", params["item_embedding"])
        target = g.op("Gather", table, "item", axis=0)
        mask, inverse = layers.history_mask_graph(g, "history")
        recent = layers.weighted_mean_graph(
            g, g.op("Gather", table, "history", axis=0), mask, inverse
        )
        x = g.op("Concat", target, recent, g.op("Mul", target, recent), "genres", axis=-1)
        return layers.mlp_graph(g, params, "mlp", x)
