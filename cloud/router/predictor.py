"""The quality predictor: per metric, the probability D_i that the edge is as good.

One logistic model per metric over the hashed n-grams of the request text, weighted by
their inverse document frequency in the training requests and scaled to unit length
(``x``), plus the plain features, standardised (``f``):
``D_i = sigmoid(x . W[:, i] + f . V[:, i] + b_i)``. The Pareto
relative superiority is ``PRS = sum_i w_i D_i``. Key tokens fall out of the linear form:
a term's push on metric i is its value times its weight, negative towards the cloud.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from cloud.router.featurize import Batch, FloatArray
from device_sdk.text_features import FeatureSpec, HashedText, explain


@dataclass(frozen=True)
class KeyToken:
    """A term of the request and how far it pushes a metric's logit (< 0: to the cloud)."""

    token: str
    push: float


@dataclass(frozen=True)
class Prediction:
    """For each request (rows): ``d`` per metric (columns), and ``prs``."""

    d: FloatArray
    prs: FloatArray


@dataclass(frozen=True)
class RouterModel:
    """Trained weights. ``idf`` (dim) weighs the hashed text features; ``text_weights``
    has shape (dim, metrics); ``feature_weights`` (n_features, metrics) acts on
    ``(f - feature_mean) / feature_scale``."""

    spec: FeatureSpec
    metric_weights: FloatArray
    idf: FloatArray
    text_weights: FloatArray
    bias: FloatArray
    feature_mean: FloatArray
    feature_scale: FloatArray
    feature_weights: FloatArray

    @property
    def n_metrics(self) -> int:
        return int(self.bias.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.feature_mean.shape[0])

    def logits(self, batch: Batch) -> FloatArray:
        z = batch.sparse.weighted(self.idf).dot(self.text_weights) + self.bias
        if self.n_features:
            z += ((batch.dense - self.feature_mean) / self.feature_scale) @ self.feature_weights
        return z

    def predict(self, batch: Batch) -> Prediction:
        d = 1.0 / (1.0 + np.exp(-self.logits(batch)))
        return Prediction(d=d, prs=d @ self.metric_weights)

    def key_tokens(self, text: str, hashed: HashedText, metric: int, k: int = 5) -> list[KeyToken]:
        """The ``k`` terms of ``text`` (featurized as ``hashed``) that push metric
        ``metric`` hardest either way; terms sharing a hash bucket are shown together."""
        if not len(hashed.indices):
            return []
        values = hashed.values * self.idf[hashed.indices]
        values /= np.sqrt(np.dot(values, values))
        pushes = values * self.text_weights[hashed.indices, metric]
        order = [i for i in np.argsort(-np.abs(pushes), kind="stable")[:k] if pushes[i] != 0.0]
        names = explain(text, (int(hashed.indices[i]) for i in order), self.spec)
        return [
            KeyToken(
                token=" / ".join(names.get(int(hashed.indices[i]), ["?"])),
                push=float(pushes[i]),
            )
            for i in order
        ]

    def to_bytes(self) -> bytes:
        """The weights as an ``.npz`` file (float32), for the blob store."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            spec=np.frombuffer(self.spec.model_dump_json().encode(), dtype=np.uint8),
            metric_weights=self.metric_weights,
            idf=self.idf.astype(np.float32),
            text_weights=self.text_weights.astype(np.float32),
            bias=self.bias,
            feature_mean=self.feature_mean,
            feature_scale=self.feature_scale,
            feature_weights=self.feature_weights,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RouterModel:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(
                spec=FeatureSpec.model_validate_json(arrays["spec"].tobytes()),
                metric_weights=arrays["metric_weights"].astype(np.float64),
                idf=arrays["idf"].astype(np.float64),
                text_weights=arrays["text_weights"].astype(np.float64),
                bias=arrays["bias"].astype(np.float64),
                feature_mean=arrays["feature_mean"].astype(np.float64),
                feature_scale=arrays["feature_scale"].astype(np.float64),
                feature_weights=arrays["feature_weights"].astype(np.float64),
            )
