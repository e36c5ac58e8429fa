"""Federated learning on the device: train the model's trainable parts on the user's own
ratings and turn the change into an anonymous :class:`ModelUpdate`.

The model (``models/federated.py``) is ``p_click = sigmoid(mlp([e, u, e * (u @ P), g]))``
with ``e`` the movie's row of the sparse table ``item_emb``, ``u`` the anonymous user
embedding, ``g`` the genres. Its parameters come beside the ONNX file as an ``.npz``
(``param:<initializer name>``). Local training is plain mini-batch SGD in numpy on the dense
head (``user_proj`` and the MLP) and on only the rows of the movies the user rated; every
example gets a fresh anonymous embedding, as the cloud model sees them: drawn around the
user's position at that example (``LocalExamples.user``) when given, else the current one.

The update holds the dense deltas and, for ``item_emb``, only the touched rows with their
ids and per-row counts; its L2 norm over all values is clipped to ``clip`` and, with
``noise_multiplier`` > 0, Gaussian noise of std ``noise_multiplier * clip`` is added to
every value sent. It carries no device or user id, no time and no embedding of the user.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_sdk._anon_embedding import AnonymousEmbedding, EmbeddingError
from device_sdk.federation_wire import DenseDelta, ModelUpdate, SparseDelta

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

ITEM_EMB = "item_emb"
USER_PROJ = "user_proj"
DENSE = (USER_PROJ, "mlp.w0", "mlp.b0", "mlp.w1", "mlp.b1")
_PARAM = "param:"
_DECIMALS = 8  # of every delta sent: keeps the JSON short, far below SGD's own noise


@dataclass(frozen=True)
class LocalExamples:
    """The user's rated movies, oldest first: item indices, genres [n, G], 1/0 clicks, and
    optionally ``user`` [n, rank], the user's exact position just before each rating
    (``AnonymousEmbedding.observe_each``); without it every example is drawn around the
    user's current position. Those positions are linkable: they stay on the device (only
    the update, trained on draws around them, leaves it)."""

    item: NDArray[np.int64]
    genres: NDArray[np.float32]
    click: NDArray[np.float32]
    user: NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return int(self.item.shape[0])


@dataclass(frozen=True)
class LocalTraining:
    """How a device trains: ``epochs`` of SGD over its examples in batches of
    ``batch_size`` at ``learning_rate``; an embedding row steps by ``row_learning_rate``
    times the summed gradient of its examples (a row sees a handful of examples, so the
    batch mean would barely move it); the update is clipped to L2 norm ``clip`` and
    noised with std ``noise_multiplier * clip`` (0: no local noise)."""

    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 0.1
    row_learning_rate: float = 0.002
    clip: float = 2.0
    noise_multiplier: float = 0.0


class TrainableModel:
    """The federated model's parameters on the device, with a numpy forward pass."""

    def __init__(self, params: Mapping[str, NDArray[Any]]) -> None:
        import numpy as np

        missing = [n for n in (ITEM_EMB, *DENSE) if n not in params]
        if missing:
            raise EmbeddingError(f"The model's parameters lack {missing}.")
        self.params = {n: np.asarray(v, np.float32) for n, v in params.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[Any]]) -> TrainableModel:
        """From a model bundle's arrays: every ``param:<name>`` entry."""
        return cls({k[len(_PARAM) :]: v for k, v in arrays.items() if k.startswith(_PARAM)})

    @classmethod
    def load(cls, path: Path) -> tuple[TrainableModel, AnonymousEmbedding]:
        """The model and a fresh (unlearned) user embedding from a bundle's ``.npz``."""
        import numpy as np

        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        return cls.from_arrays(arrays), AnonymousEmbedding.from_arrays(arrays)

    def predict(
        self, item: NDArray[np.int64], genres: NDArray[np.float32], user: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        """P(click) [n] for these movies, each with its row of ``user`` embeddings."""
        return _sigmoid(_forward(self.params, self.params[ITEM_EMB][item], genres, user)[0])


def train_update(
    model: TrainableModel,
    examples: LocalExamples,
    embedding: AnonymousEmbedding,
    *,
    model_name: str,
    base_version: int,
    config: LocalTraining = LocalTraining(),
    rng: np.random.Generator | None = None,
) -> ModelUpdate:
    """Train on ``examples`` from ``model`` (left unchanged) and return the update."""
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng()
    n = len(examples)
    if n == 0:
        raise EmbeddingError("There are no local examples to train on.")
    if examples.user is not None and len(examples.user) != n:
        raise EmbeddingError(
            f"LocalExamples.user has {len(examples.user)} rows for {n} examples; give the "
            "position before each example (AnonymousEmbedding.observe_each)."
        )
    ids, local_item = np.unique(examples.item, return_inverse=True)
    rows = model.params[ITEM_EMB][ids].copy()
    dense = {name: model.params[name].copy() for name in DENSE}
    lr = np.float32(config.learning_rate)
    row_lr = np.float32(config.row_learning_rate)
    for _ in range(config.epochs):
        order = rng.permutation(n)
        for start in range(0, n, config.batch_size):
            batch = order[start : start + config.batch_size]
            if examples.user is None:
                user = embedding.draw(len(batch))
            else:
                user = embedding.draw_around(examples.user[batch])
            grads, row_grad = _gradients(
                dense, rows, local_item[batch], examples.genres[batch], user,
                examples.click[batch],
            )  # fmt: skip
            for name, grad in grads.items():
                dense[name] -= lr * grad
            np.subtract.at(rows, local_item[batch], (row_lr * len(batch)) * row_grad)
    deltas = {name: dense[name] - model.params[name] for name in DENSE}
    row_deltas = rows - model.params[ITEM_EMB][ids]
    touched = ids != 0  # row 0 is padding / an unknown movie: never trained, never sent
    counts = np.bincount(local_item, minlength=len(ids))[touched]
    row_deltas, ids = row_deltas[touched], ids[touched]
    deltas, row_deltas = _clip_and_noise(deltas, row_deltas, config, rng)
    sparse = []
    if len(ids):
        sparse.append(
            SparseDelta(
                name=ITEM_EMB,
                ids=ids.tolist(),
                rows=np.round(row_deltas, _DECIMALS).tolist(),
                counts=counts.tolist(),
            )
        )
    return ModelUpdate(
        key=str(uuid.uuid4()),
        model=model_name,
        base_version=base_version,
        samples=n,
        dense=[
            DenseDelta(
                name=name, shape=list(d.shape), values=np.round(d, _DECIMALS).ravel().tolist()
            )
            for name, d in deltas.items()
        ],
        sparse=sparse,
    )


def _clip_and_noise(
    dense: dict[str, NDArray[np.float32]],
    rows: NDArray[np.float32],
    config: LocalTraining,
    rng: np.random.Generator,
) -> tuple[dict[str, NDArray[np.float32]], NDArray[np.float32]]:
    import numpy as np

    squares = sum(float(np.dot(v.ravel(), v.ravel())) for v in dense.values())
    norm = float(np.sqrt(squares + float(np.dot(rows.ravel(), rows.ravel()))))
    scale = np.float32(min(1.0, config.clip / norm) if norm > 0 else 1.0)
    std = config.noise_multiplier * config.clip
    out: dict[str, NDArray[np.float32]] = {}
    for name, value in dense.items():
        value = value * scale
        if std > 0:
            value = value + rng.normal(0.0, std, value.shape).astype(np.float32)
        out[name] = value
    rows = (rows * scale).astype(np.float32)
    if std > 0:
        rows = rows + rng.normal(0.0, std, rows.shape).astype(np.float32)
    return out, rows


def _forward(
    params: Mapping[str, NDArray[Any]],
    item: NDArray[Any],
    genres: NDArray[Any],
    user: NDArray[Any],
) -> tuple[NDArray[np.float32], dict[str, NDArray[np.float32]]]:
    """The logits [n] and what the backward pass needs."""
    import numpy as np

    projected = user @ params[USER_PROJ]
    x = np.concatenate([item, user, item * projected, genres], axis=1)
    pre = x @ params["mlp.w0"] + params["mlp.b0"]
    hidden = np.maximum(pre, 0.0)
    logits = (hidden @ params["mlp.w1"] + params["mlp.b1"]).reshape(-1)
    return logits, {"x": x, "pre": pre, "hidden": hidden, "projected": projected}


def _gradients(
    dense: Mapping[str, NDArray[np.float32]],
    rows: NDArray[np.float32],
    local_item: NDArray[np.int64],
    genres: NDArray[np.float32],
    user: NDArray[np.float32],
    click: NDArray[np.float32],
) -> tuple[dict[str, NDArray[np.float32]], NDArray[np.float32]]:
    """Gradients of the mean log-loss: of each dense tensor, and of each example's row."""
    import numpy as np

    item = rows[local_item]
    logits, c = _forward(dense, item, genres, user)
    d_logit = ((_sigmoid(logits) - click) / len(click)).astype(np.float32)[:, None]
    w0, w1 = dense["mlp.w0"], dense["mlp.w1"]
    d_pre = (d_logit @ w1.T) * (c["pre"] > 0)
    d_x = d_pre @ w0.T
    dim, rank = item.shape[1], user.shape[1]
    d_mixed = d_x[:, dim + rank : 2 * dim + rank]
    grads = {
        "mlp.w1": c["hidden"].T @ d_logit,
        "mlp.b1": d_logit.sum(axis=0),
        "mlp.w0": c["x"].T @ d_pre,
        "mlp.b0": d_pre.sum(axis=0),
        USER_PROJ: user.T @ (d_mixed * item),
    }
    row_grads: NDArray[np.float32] = (d_x[:, :dim] + d_mixed * c["projected"]).astype(np.float32)
    return grads, row_grads


def _sigmoid(x: NDArray[Any]) -> NDArray[np.float32]:
    import numpy as np

    out: NDArray[np.float32] = (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
    return out
