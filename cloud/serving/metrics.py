"""Serving metrics, kept in the app's Prometheus registry (exported on ``/metrics``).

Queue time and latency are per request, but a batcher knows them a run at a time: they
are kept in :class:`BatchHistogram`, which buckets a whole batch's values in one numpy
pass. A prometheus_client ``observe`` per request (two locks and a bucket search each)
was a measurable part of an inference request's own cost.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# The bucket names prometheus_client's own histograms use ("0.005", "1.0", "+Inf").
_bucket_name = cast(Callable[[float], str], floatToGoString)

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
# From this many values a batch is bucketed with numpy rather than one bisect each.
NUMPY_FROM = 16


class BatchHistogram:
    """A histogram labelled by model, fed many observations at once; exposed exactly like
    a prometheus_client Histogram's buckets, ``_count`` and ``_sum`` (by a collector)."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets]
        self._array_bounds = np.array(self._bounds)
        self._bucket_names = [_bucket_name(b) for b in buckets] + ["+Inf"]
        # model -> count per bucket (not cumulative; the last is +Inf), and the sum.
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        # Written on the event loop, read by scrapes, which may run in a worker thread.
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, model: str, values: Sequence[float] | np.ndarray[Any, Any]) -> None:
        # Bucket i counts bounds[i - 1] < value <= bounds[i] ("le"), as prometheus_client.
        found: list[int] | None = None
        if len(values) > NUMPY_FROM:  # fewer (batching off, light load): one bisect each
            array = np.asarray(values, dtype=np.float64)
            found = np.bincount(
                np.searchsorted(self._array_bounds, array), minlength=len(self._bounds) + 1
            ).tolist()
            total = float(array.sum())
        else:
            total = float(sum(values))
        with self._lock:
            counts = self._counts.get(model)
            if counts is None:
                counts = self._counts[model] = [0] * (len(self._bounds) + 1)
                self._sums[model] = 0.0
            if found is None:
                for value in values:
                    counts[bisect.bisect_left(self._bounds, value)] += 1
            else:
                counts[:] = [a + b for a, b in zip(counts, found, strict=True)]
            self._sums[model] += total

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=["model"])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model"])
        with self._lock:
            snapshot = [(m, list(counts), self._sums[m]) for m, counts in self._counts.items()]
        for model, counts, total in snapshot:
            cumulative = map(float, itertools.accumulate(counts))
            family.add_metric(
                [model], list(zip(self._bucket_names, cumulative, strict=True)), total
            )
        yield family


class ServingMetrics:
    """Per model name: batch sizes, queue time, run time, end-to-end latency, outcomes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_rows = Histogram(
            "tandem_serving_batch_rows",
            "Rows in each onnxruntime call.",
            ["model"],
            buckets=_ROWS,
            registry=registry,
        )
        self.batch_requests = Histogram(
            "tandem_serving_batch_requests",
            "Requests merged into each onnxruntime call.",
            ["model"],
            buckets=_ROWS,
            registry=registry,
        )
        self.queue_seconds = BatchHistogram(
            "tandem_serving_queue_seconds",
            "Time a request waited before its batch started running.",
            _SECONDS,
            registry,
        )
        self.run_seconds = Histogram(
            "tandem_serving_run_seconds",
            "Time of each onnxruntime call.",
            ["model"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.latency_seconds = BatchHistogram(
            "tandem_serving_latency_seconds",
            "Time from a request's arrival in the queue to its result.",
            _SECONDS,
            registry,
        )
        self.requests = Counter(
            "tandem_serving_requests_total",
            "Inference requests by outcome (ok, overloaded, failed).",
            ["model", "outcome"],
            registry=registry,
        )
        self.queued_rows = Gauge(
            "tandem_serving_queued_rows",
            "Rows waiting for a batch, per model version.",
            ["model", "version"],
            registry=registry,
        )
        self.loaded = Gauge(
            "tandem_serving_loaded_versions",
            "Model versions loaded on this replica.",
            registry=registry,
        )
        self.load_seconds = Histogram(
            "tandem_serving_load_seconds",
            "Time to load and warm a model version.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
