"""``Device.predict(task, inputs, routing="auto")``: the device's model, or the cloud's.

A task opts in by shipping ``routing.json`` beside its manifest (a file of the bundle, so
manifests and their signatures are untouched)::

    {"router": "qa", "cloud_model": "qa-large", "text_input": "prompt"}

``router`` names the cloud's router, ``cloud_model`` the registered model that answers
when the router says cloud, ``text_input`` (and/or ``features_input``) the key of
``inputs`` that holds the request's text (plain features). Those keys are read for
routing and not passed on; the other inputs go to the local task or, as ``.npz``, to
``POST /v1/models/{cloud_model}/infer``, whose outputs come back as arrays.

The router runs on the device (:class:`EdgeRouter`, fetched from the cloud, refreshed
every ``refresh_s``) and every decision is reported back in batches, so the cloud counts
device traffic against the budget and publishes the threshold it holds. When the cloud
cannot be reached (or the device was never started), requests run on the device.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_sdk._client import CloudClient
from device_sdk._edge_router import EdgeRouter, LocalDecision
from device_sdk._errors import CloudError, CloudUnavailable, InvalidModelInput, TaskNotInstalled

log = logging.getLogger("device_sdk.routing")

ROUTING_FILE = "routing.json"
ROUTING_MODES = ("local", "auto", "cloud")
REPORT_EVERY = 100
_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class RoutingNotConfigured(TaskNotInstalled):
    """``routing="auto"`` or ``"cloud"`` for a task whose bundle has no usable
    ``routing.json``; the message says what the file must hold."""


class RoutingConfig(BaseModel):
    """A task's ``routing.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    router: str = Field(pattern=_NAME)
    cloud_model: str = Field(pattern=_NAME)
    text_input: str | None = Field(default=None, min_length=1, max_length=128)
    features_input: str | None = Field(default=None, min_length=1, max_length=128)


class RoutingAgent:
    """Routes ``Device.predict`` calls between the device and the cloud (see the module).

    ``client`` returns the device's cloud client, or None while the device is stopped.
    """

    def __init__(
        self,
        client: Callable[[], CloudClient | None],
        *,
        refresh_s: float = 300.0,
        report_every: int = REPORT_EVERY,
    ) -> None:
        self._client = client
        self._refresh_s = refresh_s
        self._report_every = report_every
        self._lock = threading.Lock()
        self._configs: dict[Path, RoutingConfig] = {}
        self._routers: dict[str, tuple[float, EdgeRouter]] = {}
        self._last: dict[str, LocalDecision] = {}
        self._reporting = threading.Lock()

    def predict(
        self,
        task: str,
        task_path: Path | None,
        inputs: Any,
        *,
        routing: str,
        run_local: Callable[[Any], Any],
    ) -> Any:
        """Route one call of ``task``; ``run_local`` runs it on the device."""
        if routing not in ROUTING_MODES:
            raise ValueError(f"routing must be one of {', '.join(ROUTING_MODES)}; got {routing!r}.")
        config = self._config(task, task_path)
        if not isinstance(inputs, Mapping):
            raise InvalidModelInput(
                f"Task {task!r} routes on inputs[{config.text_input or config.features_input!r}]; "
                f"pass inputs as a mapping, not {type(inputs).__name__}."
            )
        text, features, passed = self._split(task, config, inputs)
        client = self._client()
        target = (
            "cloud" if routing == "cloud" else self._decide(task, config, client, text, features)
        )
        if target == "cloud" and client is not None:
            try:
                return client.infer(config.cloud_model, passed)
            except CloudUnavailable as exc:
                log.warning(
                    "cloud model %r unreachable, running %r locally: %s",
                    config.cloud_model,
                    task,
                    exc,
                )
        return run_local(passed)

    def last_decision(self, task: str) -> LocalDecision | None:
        """The router's latest decision for ``task`` on this device, if any."""
        with self._lock:
            return self._last.get(task)

    def flush(self) -> int:
        """Report every pending decision now; returns how many the cloud accepted."""
        client = self._client()
        if client is None:
            return 0
        with self._lock:
            routers = [router for _, router in self._routers.values()]
        return sum(self._report(client, router) for router in routers)

    # --- plumbing -------------------------------------------------------------------

    def _config(self, task: str, task_path: Path | None) -> RoutingConfig:
        if task_path is None:
            raise TaskNotInstalled(f"Task {task!r} is not installed on this device.")
        path = task_path / ROUTING_FILE
        with self._lock:
            cached = self._configs.get(task_path)
        if cached is not None:
            return cached
        try:
            config = RoutingConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise RoutingNotConfigured(
                f"Task {task!r} ships no {ROUTING_FILE}, so it cannot be routed; add one to its "
                'bundle, e.g. {"router": "qa", "cloud_model": "qa-large", "text_input": '
                '"prompt"}, or call predict with routing="local".'
            ) from None
        except (ValueError, ValidationError, OSError) as exc:
            raise RoutingNotConfigured(
                f"Task {task!r} ships a {ROUTING_FILE} that cannot be used ({exc}); it needs "
                '"router", "cloud_model" and "text_input" and/or "features_input".'
            ) from exc
        if config.text_input is None and config.features_input is None:
            raise RoutingNotConfigured(
                f"Task {task!r}'s {ROUTING_FILE} names neither text_input nor features_input: "
                "the router has nothing to read."
            )
        with self._lock:
            self._configs[task_path] = config
        return config

    @staticmethod
    def _split(
        task: str, config: RoutingConfig, inputs: Mapping[str, Any]
    ) -> tuple[str | None, list[float] | None, dict[str, Any]]:
        text = features = None
        if config.text_input is not None:
            text = inputs.get(config.text_input)
            if not isinstance(text, str):
                raise InvalidModelInput(
                    f"Task {task!r} routes on the text in inputs[{config.text_input!r}]; "
                    f"pass a str there, not {type(text).__name__}."
                )
        if config.features_input is not None:
            raw = inputs.get(config.features_input)
            try:
                features = [float(v) for v in raw] if raw is not None else None
            except (TypeError, ValueError):
                raise InvalidModelInput(
                    f"Task {task!r} routes on the numbers in inputs[{config.features_input!r}]; "
                    "pass a sequence of numbers there."
                ) from None
        routing_keys = {config.text_input, config.features_input}
        return text, features, {k: v for k, v in inputs.items() if k not in routing_keys}

    def _decide(
        self,
        task: str,
        config: RoutingConfig,
        client: CloudClient | None,
        text: str | None,
        features: list[float] | None,
    ) -> str:
        router = self._router(config.router, client)
        if router is None:
            return "edge"
        decision = router.decide(text, features)
        with self._lock:
            self._last[task] = decision
        if client is not None and router.pending() >= self._report_every:
            threading.Thread(
                target=self._report,
                args=(client, router),
                name="tandem-routing-report",
                daemon=True,
            ).start()
        return decision.target

    def _router(self, name: str, client: CloudClient | None) -> EdgeRouter | None:
        """The cached router, refreshed from the cloud when it is older than refresh_s."""
        now = time.monotonic()
        with self._lock:
            cached = self._routers.get(name)
        if cached is not None and now - cached[0] < self._refresh_s:
            return cached[1]
        if client is None:
            return None if cached is None else cached[1]
        try:
            export = client.router_export(name)
            if cached is not None and cached[1].version == export.version:
                router = cached[1]
                router.follow(export.threshold)
            else:
                if cached is not None:
                    self._report(client, cached[1])  # the old version's decisions first
                data = client.fetch_blob(export.onnx_sha256, export.onnx_size)
                router = EdgeRouter(export, data)
        except CloudError as exc:
            log.warning(
                "router %r could not be fetched (%s); keeping what this device has", name, exc
            )
            if cached is not None:
                with self._lock:
                    self._routers[name] = (now, cached[1])
            return None if cached is None else cached[1]
        with self._lock:
            self._routers[name] = (now, router)
        return router

    def _report(self, client: CloudClient, router: EdgeRouter) -> int:
        accepted = 0
        with self._reporting:  # one report in flight at a time keeps them in order
            while (report := router.take_report()) is not None:
                try:
                    receipt = client.report_decisions(router.name, report)
                except CloudError as exc:
                    router.restore(report)
                    log.info("routing decisions not reported yet (%s); kept for later", exc)
                    break
                accepted += receipt.accepted
                router.follow(receipt.threshold)
        return accepted
