"""Serving metrics: histograms fed a batch at a time read like prometheus_client's own."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from cloud.serving.metrics import _SECONDS, BatchHistogram


def exposition(registry: CollectorRegistry) -> list[str]:
    """The registry's text lines, less the creation time (which only a Histogram has) and
    the sum (the same values, added in another order)."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line and "_sum" not in line]


def test_batch_histogram_exposes_what_a_histogram_observing_each_value_would() -> None:
    """Values observed in batches of any size (bucket edges included) give the same
    buckets and count, per model, as prometheus_client observing them one by one."""
    rng = np.random.default_rng(0)
    edges = [0.0, 0.0005, 0.001, 5.0, 9.0]
    values = [float(v) for v in rng.exponential(0.01, 600)] + edges * 20
    single, batched = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("t_seconds", "Doc.", ["model"], buckets=_SECONDS, registry=single)
    batches = BatchHistogram("t_seconds", "Doc.", _SECONDS, batched)
    start = 0
    for size in [1, 3, 64, 17, 200] * 10:
        chunk = values[start : start + size]
        model = "a" if size % 2 else "b"
        for value in chunk:
            histogram.labels(model).observe(value)
        batches.observe_many(model, chunk)
        start += size
    assert exposition(batched) == exposition(single)
    sums = [line for line in generate_latest(batched).decode().splitlines() if "_sum" in line]
    assert abs(sum(float(line.rsplit(" ", 1)[1]) for line in sums) - sum(values[:start])) < 1e-9
