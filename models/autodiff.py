"""A small reverse-mode autodiff over numpy arrays: just the operations the models use.

Each operation returns a ``Tensor`` whose value is computed at once; when any input needs a
gradient the result also remembers how to pass its gradient back. ``backward(loss)`` walks
that record in reverse. With constant inputs nothing is recorded, so the same model code is
also the plain numpy forward pass used for evaluation and for checking the ONNX export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]
Backward = Callable[[Array], Sequence[Array | None]]
# Added to the attention score of padding so that softmax gives it no weight.
MASKED_SCORE = -1e9


class Tensor:
    __slots__ = ("backward_fn", "grad", "parents", "requires_grad", "value")

    def __init__(
        self,
        value: Array,
        parents: tuple[Tensor, ...] = (),
        backward_fn: Backward | None = None,
        requires_grad: bool = False,
    ) -> None:
        self.value = value
        self.parents = parents
        self.backward_fn = backward_fn
        self.requires_grad = requires_grad or backward_fn is not None
        self.grad: Array | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)


def parameter(value: Array) -> Tensor:
    return Tensor(value, requires_grad=True)


def constant(value: NDArray[np.floating] | float) -> Tensor:
    return Tensor(np.asarray(value, dtype=np.float32))


def _node(value: Array, parents: tuple[Tensor, ...], backward_fn: Backward) -> Tensor:
    if any(p.requires_grad for p in parents):
        return Tensor(value, parents, backward_fn)
    return Tensor(value)


def _unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def add(a: Tensor, b: Tensor) -> Tensor:
    return _node(
        a.value + b.value,
        (a, b),
        lambda g: (_unbroadcast(g, a.shape), _unbroadcast(g, b.shape)),
    )


def mul(a: Tensor, b: Tensor) -> Tensor:
    return _node(
        a.value * b.value,
        (a, b),
        lambda g: (_unbroadcast(g * b.value, a.shape), _unbroadcast(g * a.value, b.shape)),
    )


def matmul(a: Tensor, w: Tensor) -> Tensor:
    """``a`` [..., n] times the matrix ``w`` [n, m]."""

    def backward(g: Array) -> tuple[Array, Array]:
        flat_a = a.value.reshape(-1, a.shape[-1])
        flat_g = g.reshape(-1, g.shape[-1])
        return g @ w.value.T, flat_a.T @ flat_g

    return _node(a.value @ w.value, (a, w), backward)


def relu(a: Tensor) -> Tensor:
    positive = a.value > 0
    return _node(a.value * positive, (a,), lambda g: (g * positive,))


def reduce_sum(a: Tensor, axis: int, keepdims: bool = False) -> Tensor:
    def backward(g: Array) -> tuple[Array]:
        if not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, a.shape).astype(np.float32),)

    return _node(a.value.sum(axis=axis, keepdims=keepdims), (a,), backward)


def reshape(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    return _node(a.value.reshape(shape), (a,), lambda g: (g.reshape(a.shape),))


def concat(parts: Sequence[Tensor], axis: int = -1) -> Tensor:
    sizes = [p.shape[axis] for p in parts]
    bounds = np.cumsum(sizes)[:-1]
    return _node(
        np.concatenate([p.value for p in parts], axis=axis),
        tuple(parts),
        lambda g: np.split(g, bounds, axis=axis),
    )


def gather(table: Tensor, indices: NDArray[np.int64]) -> Tensor:
    """Rows of ``table`` [vocab, d] at ``indices`` (any shape): an embedding lookup."""

    def backward(g: Array) -> tuple[Array]:
        grad = np.zeros_like(table.value)
        np.add.at(grad, indices.ravel(), g.reshape(-1, table.shape[-1]))
        return (grad,)

    return _node(table.value[indices], (table,), backward)


def masked_softmax(scores: Tensor, mask: Array) -> Tensor:
    """Softmax over the last axis where ``mask`` is 1; masked positions get no weight."""
    shifted = scores.value + (1.0 - mask) * np.float32(MASKED_SCORE)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    weights /= weights.sum(axis=-1, keepdims=True)

    def backward(g: Array) -> tuple[Array]:
        return (weights * (g - (g * weights).sum(axis=-1, keepdims=True)),)

    return _node(weights, (scores,), backward)


def sigmoid(x: Array) -> Array:
    out: Array = (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
    return out


def bce_with_logits(logits: Tensor, labels: Array) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``."""
    x = logits.value
    loss = np.maximum(x, 0) - x * labels + np.log1p(np.exp(-np.abs(x)))
    count = np.float32(x.size)
    return _node(
        np.asarray(loss.mean(), dtype=np.float32),
        (logits,),
        lambda g: ((g * (sigmoid(x) - labels) / count).astype(np.float32),),
    )


def backward(loss: Tensor) -> None:
    """Fill ``grad`` of every tensor that ``loss`` depends on and that needs one."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(loss, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen or not node.requires_grad:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((parent, False) for parent in node.parents)
    loss.grad = np.ones_like(loss.value)
    for node in reversed(order):
        if node.backward_fn is None or node.grad is None:
            continue
        for parent, grad in zip(node.parents, node.backward_fn(node.grad), strict=True):
            if grad is None or not parent.requires_grad:
                continue
            parent.grad = grad if parent.grad is None else parent.grad + grad
        if node.parents:
            node.grad = None  # intermediate gradients are not needed once passed on
