"""Mini-batch training with Adam: seeded shuffles, so one seed gives one result."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from models.autodiff import Array, Tensor, backward, parameter

Params = dict[str, Array]
LossFn = Callable[[Mapping[str, Tensor], NDArray[np.int64]], Tensor]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 256
    learning_rate: float = 2e-3
    # Decoupled weight decay (AdamW) per parameter name; parameters not named get none.
    weight_decay: Mapping[str, float] = field(default_factory=dict)
    # The learning rate falls linearly to this share of itself by the last step.
    final_lr_share: float = 0.1


class Adam:
    """Adam with decoupled weight decay, updating numpy arrays in place."""

    def __init__(self, params: Params, config: TrainConfig) -> None:
        self.params = params
        self.config = config
        self.first = {k: np.zeros_like(v) for k, v in params.items()}
        self.second = {k: np.zeros_like(v) for k, v in params.items()}
        self.steps = 0

    def step(self, grads: Mapping[str, Array], lr: float) -> None:
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.steps += 1
        correction1 = 1.0 - beta1**self.steps
        correction2 = 1.0 - beta2**self.steps
        for name, value in self.params.items():
            grad = grads.get(name)
            if grad is None:
                continue
            m, v = self.first[name], self.second[name]
            m *= beta1
            m += (1.0 - beta1) * grad
            v *= beta2
            v += (1.0 - beta2) * grad * grad
            update = (m / correction1) / (np.sqrt(v / correction2) + eps)
            decay = self.config.weight_decay.get(name, 0.0)
            if decay:
                update += decay * value
            value -= np.float32(lr) * update.astype(np.float32)


@dataclass(frozen=True)
class TrainReport:
    losses: list[float]  # mean training loss of each epoch run
    validation: list[float]  # the validation score after each epoch (higher is better)
    best_epoch: int  # 1-based: the epoch whose parameters were kept


def train(
    params: Params,
    loss_fn: LossFn,
    rows: int,
    config: TrainConfig,
    rng: np.random.Generator,
    validate: Callable[[Params], float],
    patience: int = 1,
) -> TrainReport:
    """Train ``params`` in place on ``rows`` examples for at most ``config.epochs`` epochs,
    stopping once ``validate`` has not improved for ``patience`` epochs; the parameters
    left in ``params`` are those of the best epoch."""
    optimizer = Adam(params, config)
    batches_per_epoch = max(1, -(-rows // config.batch_size))
    total = batches_per_epoch * config.epochs
    losses: list[float] = []
    scores: list[float] = []
    best: Params = {k: v.copy() for k, v in params.items()}
    for _epoch in range(config.epochs):
        order = rng.permutation(rows)
        epoch_loss = 0.0
        for start in range(0, rows, config.batch_size):
            share = optimizer.steps / max(total - 1, 1)
            lr = config.learning_rate * (1.0 - (1.0 - config.final_lr_share) * share)
            tensors = {name: parameter(value) for name, value in params.items()}
            loss = loss_fn(tensors, order[start : start + config.batch_size])
            backward(loss)
            grads = {k: t.grad for k, t in tensors.items() if t.grad is not None}
            optimizer.step(grads, lr)
            epoch_loss += float(loss.value)
        losses.append(epoch_loss / batches_per_epoch)
        scores.append(validate(params))
        if scores[-1] >= max(scores):
            best = {k: v.copy() for k, v in params.items()}
        elif len(scores) - 1 - int(np.argmax(scores)) >= patience:
            break
    for name, value in best.items():
        params[name][...] = value
    return TrainReport(losses=losses, validation=scores, best_epoch=int(np.argmax(scores)) + 1)
