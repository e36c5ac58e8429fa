"""Building blocks shared by the models, each twice: as autodiff operations for training
and numpy evaluation, and as ONNX nodes for export. The two must compute the same thing;
``tests/models/test_export.py`` holds them to it through whole models."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from models import autodiff as ad
from models.autodiff import Array, Tensor
from models.graph import GraphBuilder
from models.training import Params


def glorot(rng: np.random.Generator, rows: int, cols: int) -> Array:
    limit = np.sqrt(6.0 / (rows + cols))
    return rng.uniform(-limit, limit, size=(rows, cols)).astype(np.float32)


def init_mlp(rng: np.random.Generator, prefix: str, sizes: Sequence[int]) -> Params:
    """Weights ``{prefix}.w{i}`` and biases ``{prefix}.b{i}`` of an MLP with these sizes."""
    params: Params = {}
    for i, (rows, cols) in enumerate(itertools.pairwise(sizes)):
        params[f"{prefix}.w{i}"] = glorot(rng, rows, cols)
        params[f"{prefix}.b{i}"] = np.zeros(cols, np.float32)
    return params


def _layers(params: Mapping[str, object], prefix: str) -> int:
    return sum(1 for name in params if name.startswith(f"{prefix}.w"))


def mlp(params: Mapping[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    """ReLU between layers, none after the last: the output is a logit [batch]."""
    layers = _layers(params, prefix)
    for i in range(layers):
        x = ad.add(ad.matmul(x, params[f"{prefix}.w{i}"]), params[f"{prefix}.b{i}"])
        if i < layers - 1:
            x = ad.relu(x)
    return ad.reshape(x, (x.shape[0],))


def mlp_graph(g: GraphBuilder, params: Params, prefix: str, x: str) -> str:
    """The MLP's ONNX nodes, ending in the click probability [batch]."""
    layers = _layers(params, prefix)
    for i in range(layers):
        w = g.weight(f"{prefix}.w{i}", params[f"{prefix}.w{i}"])
        b = g.weight(f"{prefix}.b{i}", params[f"{prefix}.b{i}"])
        x = g.op("Add", g.op("MatMul", x, w), b)
        if i < layers - 1:
            x = g.op("Relu", x)
    return g.op("Squeeze", g.op("Sigmoid", x), g.axes(1))


def history_mask(history: NDArray[np.int64]) -> Array:
    """1 where a history slot holds an item, 0 at padding."""
    return (history > 0).astype(np.float32)


def inverse_count(mask: Array) -> Array:
    """1 / max(items in the history, 1), shaped [batch, 1]."""
    inverse: Array = (1.0 / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)).astype(np.float32)
    return inverse


def weighted_mean(values: Tensor, weights: Array, inverse: Array) -> Tensor:
    """sum over history of ``weights`` [B, L] x ``values`` [B, L, d], over the item count."""
    summed = ad.reduce_sum(ad.mul(values, ad.constant(weights[..., None])), axis=1)
    return ad.mul(summed, ad.constant(inverse))


def history_mask_graph(g: GraphBuilder, history: str) -> tuple[str, str]:
    """The mask [B, L] and 1 / max(count, 1) [B, 1] as ONNX nodes."""
    mask = g.op("Cast", g.op("Greater", history, g.const(0, np.int64)), to=1)
    count = g.op("ReduceSum", mask, g.axes(1), keepdims=1)
    inverse = g.op("Div", g.const(1.0), g.op("Max", count, g.const(1.0)))
    return mask, inverse


def weighted_mean_graph(g: GraphBuilder, values: str, weights: str, inverse: str) -> str:
    weighted = g.op("Mul", values, g.op("Unsqueeze", weights, g.axes(2)))
    return g.op("Mul", g.op("ReduceSum", weighted, g.axes(1), keepdims=0), inverse)
