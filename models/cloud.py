"""The cloud model: larger, and better, than the edge model.

Over the user's 100 most recent movies it runs target attention (DIN-style: the target
movie asks which past movies matter, each history item carrying the stars it was given)
beside a plain mean and a stars-weighted mean. It adds the user's genre profile, the
user's and the movie's rating statistics as of that moment, and a wider two-layer MLP.

New inputs (issue 9 adds an anonymous user embedding) go in two places: ``inputs`` and the
``_features`` / ``_features_graph`` pair, each of which lists the MLP's input blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models import autodiff as ad
from models import layers
from models.autodiff import Array, Tensor
from models.features import PRIOR_RATING, Examples
from models.graph import BATCH, GraphBuilder, InputSpec
from models.recommender import Inputs, Recommender
from models.training import Params, TrainConfig

STATS = 3


@dataclass(frozen=True)
class CloudConfig:
    history: int = 100
    dim: int = 32
    hidden: tuple[int, ...] = (128, 64)
    epochs: int = 4
    learning_rate: float = 1e-3


class CloudModel(Recommender):
    name = "cloud"
    description = (
        "Tandem cloud click-through model (MovieLens): P(rating >= 4) from target attention "
        "over the user's 100 most recent rated movies, genre profile and rating statistics."
    )

    def __init__(self, vocab_size: int, genres: int, config: CloudConfig) -> None:
        self.vocab_size = vocab_size
        self.genres = genres
        self.config = config

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        length, genres = self.config.history, self.genres
        stats = "[log(1 + count), mean stars - 3.5, click rate - 0.5], means shrunk toward "
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
                "history_ratings",
                "float32",
                (BATCH, length),
                "the stars (0.5-5) the user gave each history movie; 0 at padding",
            ),
            InputSpec(
                "genres",
                "float32",
                (BATCH, genres),
                "the target movie's genres, multi-hot in the card's genre order",
            ),
            InputSpec(
                "user_genres",
                "float32",
                (BATCH, genres),
                "share of each genre among all movies the user rated before now",
            ),
            InputSpec(
                "item_stats",
                "float32",
                (BATCH, STATS),
                "the movie's ratings by everyone before now: "
                + stats
                + "3.5 stars / 0.5 with 5 pseudo-ratings",
            ),
            InputSpec(
                "user_stats",
                "float32",
                (BATCH, STATS),
                "the user's ratings before now: " + stats + "3.5 stars / 0.5 with 5 pseudo-ratings",
            ),
        )

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.config.epochs,
            learning_rate=self.config.learning_rate,
            weight_decay={"item_embedding": 1.0},
        )

    @property
    def _mlp_width(self) -> int:
        return 6 * self.config.dim + 3 * self.genres + 2 * STATS

    def init_params(self, rng: np.random.Generator) -> Params:
        dim = self.config.dim
        params: Params = {
            "item_embedding": rng.normal(0, 0.05, (self.vocab_size, dim)).astype(np.float32),
            "attention.query": layers.glorot(rng, dim, dim),
            "attention.stars": np.zeros(dim, np.float32),
        }
        params |= layers.init_mlp(rng, "mlp", [self._mlp_width, *self.config.hidden, 1])
        return params

    def inputs_from(self, examples: Examples) -> Inputs:
        recent = examples.recent(self.config.history)
        return {
            "item": recent.item,
            "history": recent.history,
            "history_ratings": recent.history_ratings,
            "genres": recent.genres,
            "user_genres": recent.user_genres,
            "item_stats": recent.item_stats,
            "user_stats": recent.user_stats,
        }

    def logits(self, params: Mapping[str, Tensor], inputs: Inputs) -> Tensor:
        table = params["item_embedding"]
        target = ad.gather(table, inputs["item"])
        mask = layers.history_mask(inputs["history"])
        inverse = layers.inverse_count(mask)
        stars: Array = ((inputs["history_ratings"] - PRIOR_RATING) * mask).astype(np.float32)
        past = ad.gather(table, inputs["history"])
        # Each history item as the user saw it: its embedding shifted by how they rated it.
        keys = ad.add(past, ad.mul(ad.constant(stars[..., None]), params["attention.stars"]))
        query = ad.reshape(
            ad.matmul(target, params["attention.query"]), (target.shape[0], 1, target.shape[1])
        )
        scale = ad.constant(float(1.0 / np.sqrt(self.config.dim)))
        scores = ad.mul(ad.reduce_sum(ad.mul(keys, query), axis=-1), scale)
        weights = ad.mul(ad.masked_softmax(scores, mask), ad.constant(mask))
        attended = ad.reduce_sum(ad.mul(keys, ad.reshape(weights, (*weights.shape, 1))), axis=1)
        mean = layers.weighted_mean(past, mask, inverse)
        liked = layers.weighted_mean(past, stars, inverse)
        return layers.mlp(params, "mlp", self._features(inputs, target, attended, mean, liked))

    def _features(
        self, inputs: Inputs, target: Tensor, attended: Tensor, mean: Tensor, liked: Tensor
    ) -> Tensor:
        genres, profile = inputs["genres"], inputs["user_genres"]
        return ad.concat(
            [
                target,
                attended,
                mean,
                liked,
                ad.mul(target, attended),
                ad.mul(target, liked),
                ad.constant(genres),
                ad.constant(profile),
                ad.constant(genres * profile),
                ad.constant(inputs["item_stats"]),
                ad.constant(inputs["user_stats"]),
            ],
            axis=-1,
        )

    def score_graph(self, g: GraphBuilder, params: Params) -> str:
        # The function :meth:`logits` computes, arranged for the runtime: the keys (history
        # embeddings shifted by the stars) are never built, and the three pools over the
        # history are one batched MatMul. As broadcast Mul + ReduceSum over [B, L, d] (the
        # way training computes them) they took most of a run; arranged so, a run of 30 rows
        # takes a third of the time, one of 64 rows under half.
        table = g.weight("item_embedding", params["item_embedding"])
        target = g.op("Gather", table, "item", axis=0)
        mask, inverse = layers.history_mask_graph(g, "history")
        stars = g.op("Mul", g.op("Sub", "history_ratings", g.const(PRIOR_RATING)), mask)
        past = g.op("Gather", table, "history", axis=0)  # [B, L, d]
        shift = g.weight("attention.stars", params["attention.stars"])  # [d]
        query = g.op("MatMul", target, g.weight("attention.query", params["attention.query"]))
        # score_l = (past_l + stars_l * shift) . query / sqrt(d)
        #         = past_l . query + stars_l * (shift . query), over sqrt(d)
        past_query = g.op(
            "Squeeze", g.op("MatMul", past, g.op("Unsqueeze", query, g.axes(2))), g.axes(2)
        )
        shift_query = g.op("MatMul", query, g.op("Unsqueeze", shift, g.axes(1)))  # [B, 1]
        scores = g.op(
            "Mul",
            g.op("Add", past_query, g.op("Mul", stars, shift_query)),
            g.const(1.0 / np.sqrt(self.config.dim)),
        )
        masked = g.op(
            "Add", scores, g.op("Mul", g.op("Sub", g.const(1.0), mask), g.const(ad.MASKED_SCORE))
        )
        weights = g.op("Mul", g.op("Softmax", masked, axis=-1), mask)
        # [B, 3, L] @ [B, L, d]: attention weights, the mask and the stars over the history.
        pooled = g.op(
            "MatMul",
            g.op(
                "Concat",
                *(g.op("Unsqueeze", w, g.axes(1)) for w in (weights, mask, stars)),
                axis=1,
            ),
            past,
        )
        # Each row of the three, by a one-element index (kept as an axis, then squeezed).
        first, second, third = (
            g.op("Squeeze", g.op("Gather", pooled, g.const([i], np.int64), axis=1), g.axes(1))
            for i in range(3)
        )
        # attended = sum_l w_l (past_l + stars_l * shift) = w @ past + (w . stars) * shift
        attended = g.op(
            "Add",
            first,
            g.op(
                "Mul",
                g.op("ReduceSum", g.op("Mul", weights, stars), g.axes(1), keepdims=1),
                shift,
            ),
        )
        mean = g.op("Mul", second, inverse)
        liked = g.op("Mul", third, inverse)
        return layers.mlp_graph(
            g, params, "mlp", self._features_graph(g, target, attended, mean, liked)
        )

    @staticmethod
    def _features_graph(g: GraphBuilder, target: str, attended: str, mean: str, liked: str) -> str:
        return g.op(
            "Concat",
            target,
            attended,
            mean,
            liked,
            g.op("Mul", target, attended),
            g.op("Mul", target, liked),
            "genres",
            "user_genres",
            g.op("Mul", "genres", "user_genres"),
            "item_stats",
            "user_stats",
            axis=-1,
        )
