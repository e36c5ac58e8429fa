"""What every click-through model here provides: inputs, parameters, a forward pass that
trains in numpy, and the same forward pass as an ONNX graph."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from models import autodiff as ad
from models.autodiff import Array, Tensor
from models.features import Examples
from models.graph import GraphBuilder, InputSpec
from models.training import Params, TrainConfig

Inputs = dict[str, NDArray[Any]]


class Recommender(ABC):
    """A click-through model: P(rating >= 4 | the target movie, what was known before)."""

    name: str
    description: str

    @property
    @abstractmethod
    def inputs(self) -> tuple[InputSpec, ...]: ...

    @property
    @abstractmethod
    def train_config(self) -> TrainConfig: ...

    @abstractmethod
    def init_params(self, rng: np.random.Generator) -> Params: ...

    @abstractmethod
    def inputs_from(self, examples: Examples) -> Inputs:
        """The model's input arrays (named as in the ONNX graph) for these examples."""

    @abstractmethod
    def logits(self, params: Mapping[str, Tensor], inputs: Inputs) -> Tensor:
        """The click logit [batch], as autodiff operations."""

    @abstractmethod
    def score_graph(self, g: GraphBuilder, params: Params) -> str:
        """Add the ONNX nodes from the inputs to the click probability; return its name."""

    def predict(self, params: Params, inputs: Inputs, batch_size: int = 4096) -> Array:
        """Click probabilities [n] from the numpy forward pass (no ONNX involved)."""
        constants = {name: ad.constant(value) for name, value in params.items()}
        rows = next(iter(inputs.values())).shape[0]
        scores = [
            ad.sigmoid(
                self.logits(constants, {k: v[i : i + batch_size] for k, v in inputs.items()}).value
            )
            for i in range(0, rows, batch_size)
        ]
        return np.concatenate(scores) if scores else np.zeros(0, np.float32)

    def export(self, params: Params, metadata: Mapping[str, str]) -> onnx.ModelProto:
        g = GraphBuilder(self.name)
        for spec in self.inputs:
            g.input(spec)
        score = self.score_graph(g, params)
        return g.model(score, self.description, metadata)
