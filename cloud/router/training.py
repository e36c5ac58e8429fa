"""Fitting the predictor: per-metric L2-regularised logistic regression, numpy only.

The text features are weighted by inverse document frequency over the training requests
(chosen by cross-validation on the MMLU training half: it recovered more of the accuracy
gap than raw log counts, see bench/router_eval.py).

The label of metric i for a logged request is 1 when the edge's score is at least the
cloud's (less the metric's tolerance), else 0. All metrics are fitted at once by
full-batch Adam on the mean log-loss plus ``l2 * |W|^2 / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloud.router.featurize import Batch, FloatArray, inverse_document_frequency
from cloud.router.predictor import RouterModel
from device_sdk.text_features import FeatureSpec


@dataclass(frozen=True)
class TrainingOptions:
    """``l2`` is the weight decay, ``epochs`` the number of full passes, ``learning_rate``
    Adam's step."""

    l2: float = 3e-5
    epochs: int = 300
    learning_rate: float = 0.05


@dataclass(frozen=True)
class TrainingReport:
    """Per metric: the share of requests where the edge was as good, and the model's
    in-sample log-loss and AUC."""

    edge_share: list[float]
    log_loss: list[float]
    auc: list[float]


def labels(edge: FloatArray, cloud: FloatArray, tolerance: FloatArray) -> FloatArray:
    """1.0 where the edge's score is at least the cloud's minus the tolerance."""
    return (edge >= cloud - tolerance).astype(np.float64)


def fit(
    batch: Batch,
    y: FloatArray,
    *,
    spec: FeatureSpec,
    metric_weights: FloatArray,
    options: TrainingOptions | None = None,
) -> tuple[RouterModel, TrainingReport]:
    """Fit one logistic model per column of ``y`` (rows: requests, columns: metrics)."""
    options = options or TrainingOptions()
    n, m = y.shape
    # Stored as float32, like everything the device's ONNX graph computes with.
    idf = inverse_document_frequency(batch.sparse).astype(np.float32).astype(np.float64)
    sparse = batch.sparse.weighted(idf)
    mean = batch.dense.mean(axis=0) if n else np.zeros(batch.dense.shape[1])
    scale = batch.dense.std(axis=0) if n else np.ones(batch.dense.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    dense = (batch.dense - mean) / scale
    # Start from each metric's base rate, clipped away from 0 and 1.
    base = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
    params = [
        np.zeros((spec.dim, m)),
        np.zeros((dense.shape[1], m)),
        np.log(base / (1 - base)),
    ]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    beta1, beta2 = 0.9, 0.999
    for step in range(1, options.epochs + 1):
        text_w, dense_w, bias = params
        z = sparse.dot(text_w) + dense @ dense_w + bias
        residual = (1.0 / (1.0 + np.exp(-z)) - y) / n
        grads = [
            sparse.transpose_dot(residual) + options.l2 * text_w,
            dense.T @ residual + options.l2 * dense_w,
            residual.sum(axis=0),
        ]
        for p, g, m1, m2 in zip(params, grads, first, second, strict=True):
            m1 *= beta1
            m1 += (1 - beta1) * g
            m2 *= beta2
            m2 += (1 - beta2) * g * g
            p -= (
                options.learning_rate
                * (m1 / (1 - beta1**step))
                / (np.sqrt(m2 / (1 - beta2**step)) + 1e-8)
            )
    model = RouterModel(
        spec=spec,
        metric_weights=metric_weights,
        idf=idf,
        text_weights=params[0].astype(np.float32).astype(np.float64),
        bias=params[2],
        feature_mean=mean,
        feature_scale=scale,
        feature_weights=params[1],
    )
    d = model.predict(batch).d
    return model, _report(y, d)


def _report(y: FloatArray, d: FloatArray) -> TrainingReport:
    clipped = np.clip(d, 1e-12, 1 - 1e-12)
    loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean(axis=0)
    return TrainingReport(
        edge_share=[float(v) for v in y.mean(axis=0)],
        log_loss=[float(v) for v in loss],
        auc=[auc(y[:, i], d[:, i]) for i in range(y.shape[1])],
    )


def auc(y: FloatArray, score: FloatArray) -> float:
    """Area under the ROC curve (ties count half); 0.5 when one class is missing."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    # Average the ranks of tied scores.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))
