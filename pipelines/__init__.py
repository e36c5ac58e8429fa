"""Tandem pipelines: declarative stream processing that runs on the device and in the cloud.

A pipeline spec is JSON data (:mod:`pipelines.spec`): filters, maps, key-bys, windowed
aggregates that become features, and triggers on event sequences. The :class:`Engine`
compiles the specs of a device together and processes its events one at a time
(``process``) or in batches (``process_many``, the same outputs); :func:`run_batch` runs
the same specs over a batch of events in the cloud, with the same outputs. The library
imports neither the device SDK nor the cloud.

    from pipelines import Engine, validate

    engine = Engine([validate(spec)])
    outputs = engine.process({"id": "e1", "type": "view", "ts": 1.7e9, "attrs": {"item": 3}})
    outputs.features, outputs.firings
"""

from __future__ import annotations

from pipelines.durations import parse_duration
from pipelines.engine import BatchResult, Engine, Outputs, run_batch
from pipelines.errors import PipelineError, SpecError
from pipelines.events import BadEvent, Event, as_event
from pipelines.limits import Limits, Stats
from pipelines.patterns import Firing
from pipelines.spec import SUPPORTED_VERSIONS, PipelineSpec, problems_of, validate
from pipelines.windows import FeatureValue

__all__ = [
    "SUPPORTED_VERSIONS",
    "BadEvent",
    "BatchResult",
    "Engine",
    "Event",
    "FeatureValue",
    "Firing",
    "Limits",
    "Outputs",
    "PipelineError",
    "PipelineSpec",
    "SpecError",
    "Stats",
    "as_event",
    "parse_duration",
    "problems_of",
    "run_batch",
    "validate",
]
