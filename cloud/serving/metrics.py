"""Serving metrics, kept in the app's Prometheus registry (exported on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


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
        self.queue_seconds = Histogram(
            "tandem_serving_queue_seconds",
            "Time a request waited before its batch started running.",
            ["model"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.run_seconds = Histogram(
            "tandem_serving_run_seconds",
            "Time of each onnxruntime call.",
            ["model"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "tandem_serving_latency_seconds",
            "Time from a request's arrival in the queue to its result.",
            ["model"],
            buckets=_SECONDS,
            registry=registry,
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
