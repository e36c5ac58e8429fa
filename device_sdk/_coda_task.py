"""CoDA as a task the cloud deploys: the app supplies its data, the task decides when.

A task bundle carries the backbone (a model named ``backbone`` in its manifest) and a
``main.py`` whose ``run`` hands over to :meth:`CodaLearner.step`. The app, which owns the
labelled local data and the connection to the cloud, registers a learner for the task's
name once at start-up::

    learner = CodaLearner(
        pool="movielens", head_path=data_dir / "head.npz", initial_head=Head.load(...),
        local=lambda: my_local_samples(), retrieve=device_client.coda_retrieve,
    )
    register_learner("movielens-coda", learner)

The task runs on its trigger: ``schedule`` (every ``every_s``) always trains; any other
trigger (``event``, ``predict``) trains only once ``min_new_samples`` local samples arrived
since the last round. The head in use is kept in ``head_path`` (written atomically), so
the app's own predictions read the newest accepted head.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from device_sdk._coda import CodaConfig, CodaResult, LocalSamples, Retrieve, coda_round
from device_sdk._learning import ActivationCache, Backbone, Head, LearningError
from device_sdk._runner import LoadedModel

_LEARNERS: dict[str, CodaLearner] = {}
_REGISTRY_LOCK = threading.Lock()


class CodaLearner:
    """Runs CoDA rounds for one task: when to train, and where the head lives."""

    def __init__(
        self,
        *,
        pool: str,
        head_path: Path,
        initial_head: Head,
        local: Callable[[], LocalSamples],
        retrieve: Retrieve | None,
        config: CodaConfig | None = None,
        min_new_samples: int = 20,
    ) -> None:
        self.head_path = head_path
        self.local = local
        self.retrieve = retrieve
        self.config = replace(config, pool=pool) if config else CodaConfig(pool=pool)
        self.min_new_samples = min_new_samples
        self.last_result: CodaResult | None = None
        self._initial = initial_head
        self._trained_on = 0
        self._cache: ActivationCache | None = None
        self._lock = threading.Lock()

    @property
    def head(self) -> Head:
        """The head in use: the newest accepted one, or the initial head."""
        return Head.load(self.head_path) if self.head_path.exists() else self._initial

    def due(self, trigger: str, available: int) -> bool:
        """Whether a round should run now for ``trigger`` with ``available`` local samples."""
        if available < self.config.min_local:
            return False
        return trigger == "schedule" or available - self._trained_on >= self.min_new_samples

    def step(self, backbone: Backbone | LoadedModel, trigger: str) -> dict[str, Any]:
        """Train if due; returns a summary (JSON-friendly) of what happened."""
        with self._lock:
            local = self.local()
            if not self.due(trigger, len(local)):
                return {
                    "trained": False,
                    "local_samples": len(local),
                    "new_samples": len(local) - self._trained_on,
                }
            net = backbone if isinstance(backbone, Backbone) else Backbone(backbone)
            if self._cache is None or self._cache.backbone is not net:
                self._cache = ActivationCache(net)
            result = coda_round(net, self.head, local, self.retrieve, self.config, self._cache)
            if result.accepted:
                self.head_path.parent.mkdir(parents=True, exist_ok=True)
                result.head.save(self.head_path)
            self._trained_on = len(local)
            self.last_result = result
            return {
                "trained": True,
                "accepted": result.accepted,
                "local_samples": len(local),
                "retrieved": result.retrieved,
                "kept": result.kept,
                "validation_loss_before": round(result.old_validation_loss, 6),
                "validation_loss_after": round(result.new_validation_loss, 6),
                "bytes_down": result.bytes_down,
                "seconds": round(result.train_seconds, 4),
            }


def register_learner(task: str, learner: CodaLearner) -> None:
    """Make ``learner`` the one task ``task``'s ``main.py`` finds with :func:`learner_for`."""
    with _REGISTRY_LOCK:
        _LEARNERS[task] = learner


def learner_for(task: str) -> CodaLearner:
    """The learner the app registered for ``task``; raises :class:`LearningError` if none."""
    with _REGISTRY_LOCK:
        learner = _LEARNERS.get(task)
    if learner is None:
        raise LearningError(
            f"No CoDA learner is registered for task {task!r}; the app must call "
            f"device_sdk.register_learner({task!r}, CodaLearner(...)) at start-up."
        )
    return learner
