"""The predictor, its training, calibration and ONNX export, without HTTP."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cloud.router.calibration import calibrate, histogram
from cloud.router.export import to_onnx
from cloud.router.featurize import make_batch
from cloud.router.predictor import RouterModel
from cloud.router.training import TrainingOptions, auc, fit, labels
from device_sdk import EdgeRouter, InvalidBundle
from device_sdk.router_wire import MetricSpec, RouterExport
from device_sdk.text_features import FeatureSpec
from tests.cloud.router.factories import workload
from tests.device_sdk.test_routing_features import TEXTS

SPEC = FeatureSpec(dim=4096)


def trained(n_features: int = 0, metrics: int = 1) -> tuple[RouterModel, list[str]]:
    items = workload(120)
    texts = [i["text"] for i in items]
    features = [[float(i % 2), 0.5] if n_features else None for i in range(len(texts))]
    batch = make_batch(texts, features, spec=SPEC, n_features=n_features)
    edge = np.array([[i["edge"]["correct"]] * metrics for i in items])
    cloud = np.ones_like(edge)
    y = labels(edge, cloud, np.zeros(metrics))
    weights = np.full(metrics, 1.0 / metrics)
    model, _ = fit(batch, y, spec=SPEC, metric_weights=weights, options=TrainingOptions(epochs=80))
    return model, texts


def export_of(model: RouterModel, onnx: bytes) -> RouterExport:
    return RouterExport(
        name="qa",
        version=1,
        metrics=[
            MetricSpec(name=f"m{i}", weight=float(w)) for i, w in enumerate(model.metric_weights)
        ],
        feature_spec=model.spec,
        n_features=model.n_features,
        budget=0.3,
        window=100,
        threshold=0.5,
        onnx_sha256=hashlib.sha256(onnx).hexdigest(),
        onnx_size=len(onnx),
        download_url="/v1/blobs/x",
    )


def test_labels_compare_edge_and_cloud_with_tolerance() -> None:
    """The edge counts as at least as good within the metric's tolerance."""
    edge = np.array([[0.9, 1.0], [0.5, 0.0]])
    cloud = np.array([[1.0, 1.0], [0.4, 1.0]])
    assert labels(edge, cloud, np.array([0.2, 0.0])).tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_training_separates_hard_from_easy() -> None:
    """Trained on the workload, the model ranks hard requests below easy ones."""
    model, texts = trained()
    batch = make_batch(texts, [None] * len(texts), spec=SPEC, n_features=0)
    d = model.predict(batch).d[:, 0]
    hard = np.array(["integral" in t for t in texts])
    assert auc((~hard).astype(float), d) > 0.95


def test_key_tokens_name_the_driving_word() -> None:
    """The hardest push towards the cloud comes from the word that marks hard requests."""
    model, _ = trained()
    text = "question 999: integral river"
    hashed = make_batch([text], [None], spec=SPEC, n_features=0).texts[0]
    tokens = model.key_tokens(text, hashed, 0, k=3)
    assert "integral" in tokens[0].token and tokens[0].push < 0


def test_weights_survive_a_round_trip_through_bytes() -> None:
    """to_bytes/from_bytes keep every weight and the featurizer spec."""
    model, texts = trained(n_features=2)
    again = RouterModel.from_bytes(model.to_bytes())
    assert again.spec == model.spec
    batch = make_batch(texts, [[1.0, 0.5]] * len(texts), spec=SPEC, n_features=2)
    assert np.allclose(again.predict(batch).prs, model.predict(batch).prs)


@pytest.mark.parametrize(("n_features", "metrics"), [(0, 1), (2, 1), (0, 3), (2, 2)])
def test_onnx_on_the_device_scores_like_the_cloud(n_features: int, metrics: int) -> None:
    """The exported graph, run by the device's EdgeRouter, gives the cloud's D_i and PRS
    on training texts and on hostile ones (unicode, controls, very long)."""
    model, texts = trained(n_features, metrics)
    onnx = to_onnx(model)
    router = EdgeRouter(export_of(model, onnx), onnx)
    sample = texts[:40] + TEXTS
    features = [[float(i % 3), -1.5] for i in range(len(sample))] if n_features else None
    cloud = model.predict(
        make_batch(sample, features or [None] * len(sample), spec=SPEC, n_features=n_features)
    )
    d, prs = router.score(sample, features)
    assert np.allclose(d, cloud.d, atol=1e-5)
    assert np.allclose(prs, cloud.prs, atol=1e-5)


def test_device_refuses_an_onnx_file_with_another_digest() -> None:
    """An ONNX file that does not hash to the announced digest raises InvalidBundle."""
    model, _ = trained()
    onnx = to_onnx(model)
    with pytest.raises(InvalidBundle, match="digest"):
        EdgeRouter(export_of(model, onnx), onnx + b"x")


def test_device_keeps_decisions_for_the_report() -> None:
    """Each local decision waits for take_report; restore puts a failed report back."""
    model, _ = trained()
    onnx = to_onnx(model)
    router = EdgeRouter(export_of(model, onnx), onnx)
    for text in ("integral", "river", "capital"):
        router.decide(text)
    report = router.take_report()
    assert report is not None and len(report.decisions) == 3 and router.pending() == 0
    router.restore(report)
    assert router.pending() == 3


def test_calibration_takes_the_budget_quantile() -> None:
    """alpha puts about the budget's share of recent PRS below it."""
    prs = np.linspace(0.0, 1.0, 101)
    alpha = calibrate(prs, 0.3)
    assert np.mean(prs < alpha) == pytest.approx(0.3, abs=0.01)
    assert calibrate(prs, 0.0) == 0.0
    assert np.all(prs < calibrate(prs, 1.0))
    assert calibrate(np.zeros(0), 0.3) == 0.5


def test_histogram_bins_prs() -> None:
    """The histogram counts PRS in 20 bins over [0, 1], clipping strays."""
    counts = histogram(np.array([0.0, 0.01, 0.5, 1.0, 1.2]))
    assert len(counts) == 20 and sum(counts) == 5 and counts[0] == 2 and counts[-1] == 2
