"""Split the edge model for on-device learning: a frozen backbone and a trainable head.

The edge model is ``sigmoid(relu(x @ w0 + b0) @ w1 + b1)`` over the item embedding, the
mean embedding of the recent history, their product and the genres. The **backbone** is
everything up to the ReLU; it is exported as an ONNX file with two outputs:

- ``activation`` float32 [batch, hidden]: the penultimate activations, what the head reads;
- ``embedding`` float32 [batch, 2 * dim]: the target item's embedding beside the mean
  embedding of the user's recent movies (the item/user representation CoDA matches on),
  each half scaled to unit length and the whole to unit length, so that an inner product
  is a cosine similarity in which item and user weigh the same.

The **head** (``w1``, ``b1``) goes to an ``.npz`` with arrays ``w`` [hidden] and ``b`` [].
``head(backbone(x)) == edge(x)``: ``tests/models/test_coda_split.py`` holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from models import layers
from models.errors import ExportError
from models.graph import BATCH, IR_VERSION, OPSET, GraphBuilder, InputSpec

ACTIVATION = "activation"
EMBEDDING = "embedding"
_NEEDED = ("item_embedding", "mlp.w0", "mlp.b0", "mlp.w1", "mlp.b1")


@dataclass(frozen=True)
class EdgeSplit:
    """The backbone's ONNX bytes and the head's weights."""

    backbone: bytes
    head_w: NDArray[np.float32]  # [hidden]
    head_b: NDArray[np.float32]  # []

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``backbone.onnx`` and ``head.npz`` into ``out_dir``; return both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        backbone, head = out_dir / "backbone.onnx", out_dir / "head.npz"
        backbone.write_bytes(self.backbone)
        np.savez(head, w=self.head_w, b=self.head_b)
        return backbone, head


def split_edge(edge_onnx: bytes) -> EdgeSplit:
    """Split an ``edge.onnx`` written by ``tandem models build`` into backbone and head."""
    model = onnx.load_from_string(edge_onnx)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    missing = [name for name in _NEEDED if name not in weights]
    if missing or any(name.startswith("mlp.w2") for name in weights):
        raise ExportError(
            "this is not an edge model from `tandem models build` (a one-hidden-layer MLP "
            f"over item embeddings); missing weights: {', '.join(missing) or 'none'}."
        )
    inputs = {i.name: i for i in model.graph.input}
    history = (
        inputs["history"].type.tensor_type.shape.dim[1].dim_value if "history" in inputs else 0
    )
    genres = inputs["genres"].type.tensor_type.shape.dim[1].dim_value if "genres" in inputs else 0
    if not history or not genres:
        raise ExportError("the edge model must take `history` [batch, L] and `genres` [batch, G].")
    backbone = _backbone(weights, history, genres)
    return EdgeSplit(
        backbone=backbone,
        head_w=weights["mlp.w1"].reshape(-1).astype(np.float32),
        head_b=np.asarray(weights["mlp.b1"].reshape(()), np.float32),
    )


def _backbone(weights: dict[str, NDArray[Any]], history: int, genres: int) -> bytes:
    g = GraphBuilder("tandem_edge_backbone")
    g.input(InputSpec("item", "int64", (BATCH,), "target movie index"))
    g.input(InputSpec("history", "int64", (BATCH, history), "recent movies, left-padded"))
    g.input(InputSpec("genres", "float32", (BATCH, genres), "target genres, multi-hot"))
    table = g.weight("item_embedding", weights["item_embedding"])
    target = g.op("Gather", table, "item", axis=0)
    mask, inverse = layers.history_mask_graph(g, "history")
    recent = layers.weighted_mean_graph(g, g.op("Gather", table, "history", axis=0), mask, inverse)
    x = g.op("Concat", target, recent, g.op("Mul", target, recent), "genres", axis=-1)
    w0 = g.weight("mlp.w0", weights["mlp.w0"])
    b0 = g.weight("mlp.b0", weights["mlp.b0"])
    hidden = g.op("Relu", g.op("Add", g.op("MatMul", x, w0), b0))
    embedding = g.op("Concat", _unit(g, target), _unit(g, recent), axis=-1)
    embedding = g.op("Mul", embedding, g.const(np.float32(1.0 / np.sqrt(2.0))))
    g.nodes.append(helper.make_node("Identity", [hidden], [ACTIVATION]))
    g.nodes.append(helper.make_node("Identity", [embedding], [EMBEDDING]))
    dim = int(weights["item_embedding"].shape[1])
    outputs = [
        helper.make_tensor_value_info(
            ACTIVATION, TensorProto.FLOAT, [BATCH, int(weights["mlp.w0"].shape[1])]
        ),
        helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, [BATCH, 2 * dim]),
    ]
    graph = helper.make_graph(g.nodes, g.name, g.inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tandem.models",
        doc_string="Frozen backbone of the Tandem edge model: penultimate activations and "
        "the item/user embedding CoDA matches on.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _unit(g: GraphBuilder, x: str) -> str:
    """``x`` [batch, d] scaled to unit length per row; a zero row (padding) stays zero."""
    norm = g.op("ReduceL2", x, axes=[1], keepdims=1)  # opset 17: axes is an attribute
    return g.op("Div", x, g.op("Max", norm, g.const(1e-8)))
