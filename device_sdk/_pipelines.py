"""The device's pipelines: one engine built from the installed tasks' ``pipeline`` specs.

``Device.track`` hands every new event to :meth:`DevicePipelines.on_event`, which runs it
through the :class:`pipelines.Engine` of the active tasks' specs (compiled together, so
triggers of all tasks are matched at once), writes the features it changed to the
device's :class:`~device_sdk.FeatureStore` (typed, with the spec's TTL), and starts the
entry of every task whose ``trigger`` is ``{"kind": "event", "pattern": <name>}`` for
each firing of the trigger ``<name>``, with the matched events (as JSON objects) as its
inputs. Events stay on the device.

**Tasks change.** When the active tasks change, the engine is rebuilt from their specs.
A task whose spec is invalid (or defines a feature or trigger another task's spec
already defines) has its pipeline disabled: the others run, the problem is logged and
reported as a failure of that task (``Device.status().tasks``, and a ``task_errors``
upload). The cloud refuses such bundles at publish, so this guards older or hand-made
bundles.

**Restarts.** Engine state (windows, partial matches) is kept in memory. A rebuilt
engine (a restart, a task change) first replays the last :data:`REPLAY_EVENTS` events
of the durable event log, firing nothing and rewriting the features they give, so
windows and partial matches carry over; older history is lost to it.

**Never into the app.** Nothing here raises into ``track``: a failure is logged (and the
event is still stored). The features an event changed are written after it, in one
transaction, so a task fired by that event, and the app, read fresh values.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from device_sdk._errors import InvalidFeature
from device_sdk._events import EventLog, FeatureStore
from device_sdk._runtime import TaskRuntime
from device_sdk._store import DeviceStore
from device_sdk.wire import TaskManifest, TriggerKind
from pipelines import Engine, Event, Firing, SpecError, validate
from pipelines.spec import PipelineSpec

log = logging.getLogger("device_sdk.pipelines")

REPLAY_EVENTS = 2000
"""How many of the most recent stored events a rebuilt engine replays."""

_Spec = tuple[str, int, PipelineSpec]


class _Open:
    """Stands in for the store inside a transaction already open: FeatureStore.set writes
    through it into that transaction instead of committing one of its own."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        yield self._db


class DevicePipelines:
    """The pipelines of the tasks ``runtime`` runs. ``open_store`` yields the device
    store (for the event log and the features); see the module docstring."""

    def __init__(
        self,
        runtime: TaskRuntime,
        open_store: Callable[[], AbstractContextManager[DeviceStore]],
    ) -> None:
        self._runtime = runtime
        self._open_store = open_store
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._built_from: tuple[tuple[str, int, str], ...] = ()
        self._listeners: dict[str, list[str]] = {}  # trigger name -> tasks to fire
        self.problems: dict[str, str] = {}
        """Why a task's pipeline is disabled, by task name."""

    @property
    def engine(self) -> Engine | None:
        """The engine now running (None: no active task ships a valid pipeline)."""
        return self._engine

    def update(self) -> None:
        """Rebuild the engine if the active tasks' specs changed; never raises."""
        try:
            self._update(self._runtime.manifests())
        except Exception:
            log.exception("the pipelines could not be rebuilt; the previous ones keep running")

    def _update(self, manifests: dict[str, TaskManifest]) -> None:
        shipped = tuple(
            sorted(
                (name, m.version, repr(m.pipeline))
                for name, m in manifests.items()
                if m.pipeline is not None
            )
        )
        listeners: dict[str, list[str]] = {}
        for name in sorted(manifests):
            trigger = manifests[name].trigger
            if trigger.kind is TriggerKind.event and trigger.pattern is not None:
                listeners.setdefault(trigger.pattern, []).append(name)
        with self._lock:
            self._listeners = listeners
            if shipped == self._built_from:
                return
            specs, problems = self._valid_specs(manifests)
            engine = Engine([spec for _, _, spec in specs]) if specs else None
            if engine is not None:
                self._replay(engine)
            self._engine = engine
            self._built_from = shipped
            self.problems = problems
        for name, message in problems.items():
            log.error("pipeline of task %r disabled: %s", name, message)
            self._runtime.report(name, SpecError([message], subject=f"Task {name!r}'s pipeline"))
        defined = set() if engine is None else set(engine.triggers)
        for pattern, tasks in listeners.items():
            if pattern not in defined:
                log.warning(
                    "tasks %s wait for trigger %r, which no installed pipeline defines",
                    ", ".join(tasks),
                    pattern,
                )

    def _valid_specs(
        self, manifests: dict[str, TaskManifest]
    ) -> tuple[list[_Spec], dict[str, str]]:
        specs: list[_Spec] = []
        problems: dict[str, str] = {}
        for name in sorted(manifests):
            manifest = manifests[name]
            if manifest.pipeline is None:
                continue
            try:
                spec = validate(manifest.pipeline)
                Engine([s for _, _, s in specs] + [spec])  # clashes with the specs kept?
            except SpecError as exc:
                problems[name] = "; ".join(exc.problems)
                continue
            specs.append((name, manifest.version, spec))
        return specs, problems

    def _replay(self, engine: Engine) -> None:
        with self._open_store() as store:
            recent = EventLog(store).recent(REPLAY_EVENTS)
        # One batch, its firings dropped (a replay fires nothing), one write of the
        # features: the last value of each, as feeding them one by one would leave.
        engine.feed_many(Event(event.id, event.type, event.ts, event.attrs) for event in recent)
        self._write(engine)

    def on_event(self, event: Any) -> None:
        """Run one tracked event through the pipelines; never raises."""
        try:
            with self._lock:
                engine = self._engine
                if engine is None:
                    return
                firings = engine.feed(Event(event.id, event.type, event.ts, dict(event.attrs)))
                self._write(engine)
                listeners = self._listeners
            for firing in firings:
                self._fire(firing, listeners)
        except Exception:
            log.exception(
                "the pipelines failed on an event of type %r", getattr(event, "type", None)
            )

    def _write(self, engine: Engine) -> None:
        features = engine.drain()
        if not features:
            return
        # One transaction (one fsync) for all the features of an event, each still checked
        # and encoded by FeatureStore.set; a bad one is skipped, logged.
        with self._open_store() as store, store.transaction() as db:
            in_transaction = FeatureStore(_Open(db))  # type: ignore[arg-type]
            for feature in features:
                try:
                    in_transaction.set(feature.name, feature.value, feature.ttl_s)
                except InvalidFeature as exc:
                    log.warning("feature %r not written: %s", feature.name, exc)

    def _fire(self, firing: Firing, listeners: dict[str, list[str]]) -> None:
        tasks = listeners.get(firing.trigger)
        if not tasks:
            return
        for task in tasks:  # each task its own copy of the matched events
            self._runtime.fire(task, [e.to_json() for e in firing.events])
