"""The federated recommendation model: P(click) from the movie and an anonymous user embedding.

Inputs: the target movie's index (a row of the sparse table ``item_emb``), its genres, and
``user``, float32 [batch, rank]: a fresh draw from the user's distribution (see
``device_sdk/_anon_embedding.py``), never an identity. The dense head concatenates the
movie's embedding, the user embedding, their interaction (the movie's embedding times a
projection of the user embedding) and the genres into an MLP with one hidden layer; the
output is ``p_click`` [batch].

The base model trains centrally on the ratings before the cut (no per-user parameters),
with user embeddings drawn as devices draw them at the anonymity it is built for, so it
learns how much to trust a noisy embedding. Devices then train the head and the rows of the
movies they rated (``device_sdk/_federation.py``), and the cloud aggregates the updates.
Everything a device needs beside the ONNX file is in an ``.npz`` (``write_bundle``): the
trainable parameters named as the ONNX initializers, the shared basis and quantiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper

from models import autodiff as ad
from models import federated_data as fd
from models import layers, metrics
from models.autodiff import Array, Tensor
from models.graph import BATCH, IR_VERSION, OPSET, GraphBuilder, InputSpec
from models.training import Params, TrainConfig, TrainReport, train

OUTPUT = "p_click"
ITEM_EMB = "item_emb"
USER_PROJ = "user_proj"
NONE, STATIC, ANONYMOUS = "none", "static", "anonymous"
DEFAULT_ANONYMITY = 0.5


@dataclass(frozen=True)
class FederatedConfig:
    dim: int = 16
    hidden: int = 32
    rank: int = 1  # user statistics the embedding carries (the shared subspace's dimension)
    # Statistics of recent behaviour: ratings weighted 2 ** (-age / half_life); None: the
    # user's all-time means. 10 was picked on the devices' local data (its last 30 % by
    # time as validation), never on their held-out ratings.
    half_life: float | None = 10.0
    epochs: int = 3
    learning_rate: float = 2e-3
    batch_size: int = 256
    item_decay: float = 0.3


def draw(
    ranks: NDArray[np.float32], anonymity: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Anonymous embeddings around ``ranks`` (population ranks in [-0.5, 0.5]): the same
    mechanism as ``device_sdk.AnonymousEmbedding.draw``, for many users at once."""
    noise = rng.random(ranks.shape) - 0.5
    out: NDArray[np.float32] = ((1.0 - anonymity) * ranks + anonymity * noise).astype(np.float32)
    return out


def user_input(
    mode: str, ranks: NDArray[np.float32], anonymity: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """The ``user`` input for ``mode``: zeros (no embedding), the exact ranks (a static,
    linkable per-user embedding) or a fresh anonymous draw."""
    if mode == NONE:
        return np.zeros_like(ranks)
    if mode == STATIC:
        return ranks
    return draw(ranks, anonymity, rng)


class FederatedModel:
    name = "federated"

    def __init__(self, vocab_size: int, genres: int, config: FederatedConfig) -> None:
        self.vocab_size = vocab_size
        self.genres = genres
        self.config = config

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        return (
            InputSpec("item", "int64", (BATCH,), "the movie's index in the catalogue; 0 = none"),
            InputSpec("genres", "float32", (BATCH, self.genres), "the movie's genres, multi-hot"),
            InputSpec(
                "user",
                "float32",
                (BATCH, self.config.rank),
                "an anonymous user embedding: a fresh draw from the user's distribution",
            ),
        )

    def init_params(self, rng: np.random.Generator) -> Params:
        c = self.config
        params: Params = {
            ITEM_EMB: rng.normal(0.0, 0.01, (self.vocab_size, c.dim)).astype(np.float32),
            USER_PROJ: layers.glorot(rng, c.rank, c.dim),
        }
        params[ITEM_EMB][0] = 0.0
        width = 2 * c.dim + c.rank + self.genres
        return params | layers.init_mlp(rng, "mlp", [width, c.hidden, 1])

    def logits(self, params: Mapping[str, Tensor], inputs: Mapping[str, NDArray[Any]]) -> Tensor:
        item = ad.gather(params[ITEM_EMB], inputs["item"])
        user = ad.constant(inputs["user"])
        mixed = ad.mul(item, ad.matmul(user, params[USER_PROJ]))
        x = ad.concat([item, user, mixed, ad.constant(inputs["genres"])], axis=-1)
        return layers.mlp(params, "mlp", x)

    def predict(self, params: Params, inputs: Mapping[str, NDArray[Any]]) -> Array:
        constants = {name: ad.constant(value) for name, value in params.items()}
        return ad.sigmoid(self.logits(constants, inputs).value)

    def export(self, params: Params, metadata: Mapping[str, str]) -> onnx.ModelProto:
        """The ONNX model: the same forward pass, output ``p_click`` float32 [batch]."""
        g = GraphBuilder("tandem_federated")
        for spec in self.inputs:
            g.input(spec)
        table = g.weight(ITEM_EMB, params[ITEM_EMB])
        item = g.op("Gather", table, "item", axis=0)
        projected = g.op("MatMul", "user", g.weight(USER_PROJ, params[USER_PROJ]))
        x = g.op("Concat", item, "user", g.op("Mul", item, projected), "genres", axis=-1)
        score = layers.mlp_graph(g, params, "mlp", x)
        g.nodes.append(helper.make_node("Identity", [score], [OUTPUT]))
        output = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH])
        graph = helper.make_graph(g.nodes, g.name, g.inputs, [output], initializer=g.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="tandem.models",
            doc_string="Tandem federated click-through model (MovieLens): P(rating >= 4) "
            "from the movie and an anonymous user embedding.",
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, dict(metadata))
        onnx.checker.check_model(model, full_check=True)
        return model


@dataclass(frozen=True)
class BaseModel:
    """A centrally trained base: the model, its parameters and what devices need beside."""

    model: FederatedModel
    params: Params
    basis: NDArray[np.float32]  # [vocab, STATS - 1]
    quantiles: NDArray[np.float32]  # [STATS, QUANTILES]
    anonymity: float
    report: TrainReport

    @property
    def half_life(self) -> float | None:
        return self.model.config.half_life

    def embedding_arrays(self) -> dict[str, NDArray[Any]]:
        """What the device's ``AnonymousEmbedding.from_arrays`` reads: ``basis``, ``rank``
        and, for all-time statistics, ``quantiles``; for statistics of recent behaviour,
        ``half_life`` and their quantiles as ``quantiles_recent``. The other name is
        deliberate: an SDK that knows no half-life finds no ``quantiles`` and refuses the
        bundle, rather than mapping all-time statistics through recent ones' quantiles."""
        arrays: dict[str, NDArray[Any]] = {
            "basis": self.basis,
            "rank": np.asarray(self.model.config.rank, np.int64),
        }
        if self.half_life is None:
            arrays["quantiles"] = self.quantiles
        else:
            arrays["quantiles_recent"] = self.quantiles
            arrays["half_life"] = np.asarray(self.half_life, np.float64)
        return arrays

    def write_bundle(self, onnx_path: Path) -> Path:
        """Write the ONNX file and, beside it, ``<name>.npz`` with the trainable parameters
        (named as the ONNX initializers) and the embedding's arrays
        (:meth:`embedding_arrays`)."""
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"anonymity": str(self.anonymity), "rank": str(self.model.config.rank)}
        onnx_path.write_bytes(self.model.export(self.params, metadata).SerializeToString())
        npz = onnx_path.with_suffix(".npz")
        arrays: dict[str, Any] = {f"param:{k}": v for k, v in self.params.items()}
        np.savez(npz, **(arrays | self.embedding_arrays()))
        return npz


def train_base(
    data: fd.FederatedData,
    *,
    mode: str = ANONYMOUS,
    anonymity: float = DEFAULT_ANONYMITY,
    config: FederatedConfig = FederatedConfig(),
    seed: int = 0,
    limit: int | None = None,
) -> BaseModel:
    """Train the base model on the ratings before the cut (the latest ``limit`` of them, if
    given); the last 10 % by time pick the epoch. ``mode`` says what ``user`` holds.

    Every rating's ``user`` comes from the statistics of the user's ratings before it, as a
    device has them at a request. The population quantiles are over users' all-time
    statistics or, with a ``half_life``, over the request-time statistics of every rating."""
    rng = np.random.default_rng(seed)
    basis = fd.fit_basis(data.central, data.vocab_size)
    half_life = config.half_life
    central = (
        data.central if limit is None else data.central.take(np.arange(len(data.central))[-limit:])
    )
    stats = fd.earlier_statistics(central, basis, half_life)
    if half_life is None:
        quantiles = fd.population_quantiles(fd.user_statistics(data.central, basis))
    else:  # over every central rating: the ones trained on, when there is no limit
        everyone = stats if limit is None else fd.earlier_statistics(data.central, basis, half_life)
        quantiles = fd.population_quantiles(everyone)
    ranks = fd.ranks(stats, quantiles)[:, : config.rank]
    model = FederatedModel(data.vocab_size, len(data.genre_names), config)
    params = model.init_params(rng)
    fit = int(len(central) * 0.9)
    val_rows = np.arange(fit, len(central))
    val_inputs: dict[str, NDArray[Any]] = {
        "item": central.item[val_rows],
        "genres": central.genres[val_rows],
        "user": user_input(mode, ranks[val_rows], anonymity, np.random.default_rng(seed + 1)),
    }

    def loss_fn(tensors: Mapping[str, Tensor], rows: NDArray[np.int64]) -> Tensor:
        inputs: dict[str, NDArray[Any]] = {
            "item": central.item[rows],
            "genres": central.genres[rows],
            "user": user_input(mode, ranks[rows], anonymity, rng),
        }
        return ad.bce_with_logits(model.logits(tensors, inputs), central.click[rows])

    def validate(current: Params) -> float:
        return metrics.auc(central.click[val_rows], model.predict(current, val_inputs))

    train_config = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay={ITEM_EMB: config.item_decay},
    )
    report = train(params, loss_fn, fit, train_config, rng, validate)
    return BaseModel(model, params, basis, quantiles, anonymity, report)


def build(
    data_dir: Path, out_dir: Path, *, anonymity: float = DEFAULT_ANONYMITY, seed: int = 0
) -> Path:
    """Train the base model on the MovieLens directory ``data_dir`` and write
    ``federated.onnx`` and ``federated.npz`` into ``out_dir``; returns the ONNX path."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    with threadpool_limits(1):  # small matrices: one BLAS thread is fastest on busy cores
        base = train_base(fd.load(data_dir), anonymity=anonymity, seed=seed)
    path = out_dir / "federated.onnx"
    base.write_bundle(path)
    return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m models.federated MOVIELENS_DIR OUT_DIR")
    print(build(Path(sys.argv[1]), Path(sys.argv[2])))
