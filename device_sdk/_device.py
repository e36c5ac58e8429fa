"""The facade an app embeds: one ``Device`` per data directory."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import httpx

from device_sdk._client import CloudClient
from device_sdk._errors import IdentityMismatch, LocalStoreError, TaskNotInstalled
from device_sdk._events import DEFAULT_MAX_EVENTS, Event, EventLog, FeatureStore, FeaturesView
from device_sdk._installer import Installer
from device_sdk._outbox import Outbox
from device_sdk._pipelines import DevicePipelines
from device_sdk._reconcile import Reconciler
from device_sdk._records import Identity, InstalledTask, VersionState
from device_sdk._routing import RoutingAgent
from device_sdk._runner import ModelRunner
from device_sdk._runtime import TaskRuntime
from device_sdk._store import DeviceStore
from device_sdk._sync import SyncAgent
from device_sdk._task_context import TaskOutput, TaskStats
from device_sdk._task_errors import TaskErrorReporter
from device_sdk._uploader import Uploader
from device_sdk.wire import MAX_UPLOAD_PAYLOAD_BYTES, DeviceAttributes, RegisterDeviceRequest

log = logging.getLogger("device_sdk.runtime")


@dataclass(frozen=True)
class DeviceStatus:
    """A snapshot of the device's sync: who it is, whether it is connected, what runs.

    ``desired_rev`` is the revision of the last desired state fetched; ``installed`` maps
    each active task to its version; ``unsent_reports`` counts status reports waiting for
    the cloud; ``last_error`` is the latest sync problem (None after a clean pass);
    ``tasks`` holds each active task's run counters and last error (:class:`TaskStats`).
    """

    device_id: str | None
    running: bool
    stream_connected: bool
    desired_rev: int | None
    installed: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    unsent_reports: int = 0
    last_error: Exception | None = None
    tasks: Mapping[str, TaskStats] = field(default_factory=lambda: MappingProxyType({}))


class Device:
    """A device of a Tandem cloud: registers once, then keeps its tasks in sync.

    Everything the device keeps lives in ``data_dir``: its identity, the installed task
    versions and the status reports not yet delivered (``data_dir/device.db``), and the
    tasks' files (``data_dir/tasks``). Sync runs in background threads between
    :meth:`start` and :meth:`stop`; installed tasks stay usable while the cloud is away.

    ``fallback_interval_s`` is how often the device checks its desired state without a
    nudge (a lost nudge delays a release at most this long); ``heartbeat_timeout_s`` is
    how long the event stream may stay silent before the device reconnects.

    Installed tasks run through :meth:`predict` (and on their schedules while the device
    is started), whether or not the cloud is reachable. ``intra_op_num_threads`` is the
    number of threads one model run may use (1 suits running tasks side by side);
    ``task_workers`` bounds the worker threads that run tasks' entry code.

    :meth:`track` keeps the app's events on the device (at most ``max_events``, oldest
    evicted first); they are not uploaded unless the app queues them itself on the
    ``events`` channel. A task call that fails or times out is reported to the cloud on the
    ``task_errors`` channel, at most once per task version and kind every
    ``task_error_interval_s`` seconds (the failures in between are counted in the next).
    """

    def __init__(
        self,
        cloud_url: str,
        *,
        enrollment_key: str,
        data_dir: str | os.PathLike[str],
        attributes: DeviceAttributes | Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
        fallback_interval_s: float = 21600.0,
        heartbeat_timeout_s: float = 45.0,
        intra_op_num_threads: int = 1,
        task_workers: int = 4,
        outbox_max_bytes: int = 16 * 1024 * 1024,
        max_events: int = DEFAULT_MAX_EVENTS,
        task_error_interval_s: float = 60.0,
    ) -> None:
        if fallback_interval_s <= 0 or heartbeat_timeout_s <= 0:
            raise ValueError(
                "fallback_interval_s and heartbeat_timeout_s must be positive, got "
                f"{fallback_interval_s} and {heartbeat_timeout_s}."
            )
        self.cloud_url = cloud_url.rstrip("/")
        self.data_dir = Path(data_dir).expanduser()
        self._enrollment_key = enrollment_key
        self._attributes = DeviceAttributes.model_validate(attributes or {})
        self._transport = transport
        self._fallback_interval_s = fallback_interval_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._lifecycle = threading.Lock()
        self._store_lock = threading.RLock()
        self._tracking = threading.RLock()  # re-entrant: a callback may track in turn
        self._store: DeviceStore | None = None
        self._client: CloudClient | None = None
        self._agent: SyncAgent | None = None
        if outbox_max_bytes < MAX_UPLOAD_PAYLOAD_BYTES:
            # Checked here, not when start() builds the outbox with sync already running.
            raise ValueError(
                f"outbox_max_bytes must hold at least one largest payload "
                f"({MAX_UPLOAD_PAYLOAD_BYTES} bytes), got {outbox_max_bytes}."
            )
        self._outbox_max_bytes = outbox_max_bytes
        self._outbox: Outbox | None = None
        self._uploader: Uploader | None = None
        self._changed = threading.Condition()
        self._generation = 0
        self._max_events = max_events
        self._event_listeners: tuple[Callable[[Event], None], ...] = ()
        self._features = FeaturesView(self._feature_store)
        self._runtime = TaskRuntime(
            self.data_dir / "tasks",
            runner=ModelRunner(intra_op_num_threads=intra_op_num_threads),
            max_workers=task_workers,
            features=self._features,
            on_change=self._bump,
        )
        self._runtime.on_failure(TaskErrorReporter(self.queue, interval_s=task_error_interval_s))
        # The installed tasks' pipelines see each new event first, then the app's callbacks.
        self._pipelines = DevicePipelines(self._runtime, self._reading)
        self._event_listeners = (self._pipelines.on_event,)

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Register with the cloud if this data directory has no identity yet, then start
        syncing in the background. Calling it on a running device does nothing.

        Raises :class:`RegistrationRefused` for a refused enrollment key,
        :class:`CloudUnavailable` if the first registration cannot reach the cloud, and
        :class:`IdentityMismatch` if ``data_dir`` belongs to a device of another cloud.
        """
        with self._lifecycle:
            if self._agent is not None and self._agent.running:
                return
            with self._store_lock:
                store = self._open_store()
            client = CloudClient(
                self.cloud_url,
                transport=self._transport,
                heartbeat_timeout_s=self._heartbeat_timeout_s,
            )
            try:
                identity = self._identity(store, client)
                client.token = identity.token
                installer = Installer(self.data_dir, store)
                installer.sweep()
            except BaseException:
                client.close()
                raise
            self._client = client
            reconciler = Reconciler(
                client,
                store,
                installer,
                downloads_dir=self.data_dir / "downloads",
                public_key=identity.platform_public_key,
                failed_retry_max_s=self._fallback_interval_s,
            )
            self._agent = SyncAgent(
                client,
                store,
                reconciler,
                fallback_interval_s=self._fallback_interval_s,
                on_change=self._notify,
            )
            self._refresh_tasks()
            self._runtime.start()
            self._agent.start()
            self._outbox = Outbox(store, max_bytes=self._outbox_max_bytes)
            self._uploader = Uploader(self._outbox, client, on_change=self._bump)
            self._uploader.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop syncing and scheduled tasks; waits up to ``timeout_s`` for the background
        threads to end. Task calls in progress are cancelled; :meth:`predict` still works."""
        with self._lifecycle:
            # The uploader first: it reads the outbox, which must outlive it.
            if self._uploader is not None:
                self._uploader.stop(timeout_s)
                self._uploader = None
            with self._store_lock:  # queue() reads it under this lock
                if self._outbox is not None:
                    self._outbox.close()
                    self._outbox = None
            self._runtime.stop(timeout_s)
            if self._agent is not None:
                self._agent.stop(timeout_s)
            if self._client is not None:
                self._client.close()
                self._client = None
            with self._store_lock:
                if self._store is not None:
                    self._store.close()
                    self._store = None

    def __enter__(self) -> Device:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what the app asks ----------------------------------------------------------

    def status(self) -> DeviceStatus:
        """A snapshot of identity, connection, desired revision, active tasks, last error."""
        agent = self._agent
        with self._reading() as store:
            identity = store.identity()
            cached = store.cached_desired()
            installed = store.active_versions()
            unsent = store.count_pending_reports()
        if self._runtime.versions() != installed:
            self._refresh_tasks()  # the store is ahead of the runtime: catch up first
        return DeviceStatus(
            device_id=None if identity is None else identity.device_id,
            running=agent is not None and agent.running,
            stream_connected=agent is not None and agent.stream_connected,
            desired_rev=None if cached is None else cached.state.rev,
            installed=MappingProxyType(installed),
            unsent_reports=unsent,
            last_error=None if agent is None else agent.last_error,
            tasks=MappingProxyType(self._runtime.stats()),
        )

    def predict(
        self, task: str, inputs: Any, *, timeout_s: float | None = None, routing: str = "local"
    ) -> Any:
        """Run the active version of ``task`` on this device and return its result.

        A model task (no entry, one model) runs its model in this thread and returns its
        outputs, ``{output name: array}``; ``inputs`` maps input names to arrays of the
        model's dtypes. A task with an entry returns what its ``run(ctx, inputs)`` returns,
        run in a worker thread within ``timeout_s`` (default: the task's
        ``resources.timeout_ms``).

        Raises :class:`TaskNotInstalled` (naming the installed tasks),
        :class:`InvalidModelInput` (naming the input and what the model expects),
        :class:`TaskTimeout`, or :class:`TaskFailed` (the task's exception as its cause).

        ``routing="auto"`` lets the task's router (named by its bundle's ``routing.json``)
        choose: this device's model, or the cloud's model, whose outputs are returned;
        ``"cloud"`` always asks the cloud. See :class:`RoutingAgent` (``self.routing``).
        """
        if routing != "local":
            return self.routing.predict(
                task,
                self.task_path(task),
                inputs,
                routing=routing,
                run_local=lambda passed: self.predict(task, passed, timeout_s=timeout_s),
            )
        try:
            return self._runtime.predict(task, inputs, timeout_s=timeout_s)
        except TaskNotInstalled:
            # Installed since the runtime last looked (or the first call): look once more.
            if not self._refresh_tasks(any_time=True):
                raise
        return self._runtime.predict(task, inputs, timeout_s=timeout_s)

    @cached_property
    def routing(self) -> RoutingAgent:
        """Routing between this device and the cloud for ``predict(..., routing="auto")``:
        the last decision per task, and ``flush()`` to report decisions now."""
        return RoutingAgent(lambda: self._client)

    def queue(self, channel: str, payload: dict[str, Any] | bytes) -> str:
        """Queue ``payload`` (a JSON object) for upload on ``channel``. It is on disk when
        this returns and reaches the cloud exactly once, across crashes and retries; the
        return value is its idempotency key. Works while stopped: items go out after
        :meth:`start`."""
        with self._reading() as store:
            if self._outbox is not None:
                return self._outbox.put(channel, payload)
            outbox = Outbox(store, max_bytes=self._outbox_max_bytes)
            try:
                return outbox.put(channel, payload)
            finally:
                outbox.close()

    def track(self, type: str, /, **attrs: Any) -> Event:
        """Record an event of ``type`` with ``attrs`` on this device, then hand it to every
        :meth:`on_event` callback; returns the :class:`Event` (a fresh id, ``ts`` now).

        Attributes are str, int, finite float, bool, None, or lists of those. Raises
        :class:`InvalidEvent` (a ``ValueError``) for a bad type or attribute, and nothing
        else: a callback's exception is logged, and so is a store that cannot be written
        (the callbacks still get the event). Events stay on the device; to upload them,
        queue them yourself: ``device.queue("events", {"events": [e.to_json(), ...]})``.
        Works whether or not the device is started. Calls from several threads are taken
        one at a time, so the pipelines see events in the order of their ``ts``.
        """
        # Stamping, storing and handing on happen under one lock: two threads tracking at
        # once would otherwise hand the pipelines an older event after a newer one, and a
        # pipeline in event time drops what comes in behind its watermark.
        with self._tracking:
            try:
                with self._reading() as store:
                    event, new = EventLog(store, max_events=self._max_events).append(type, attrs)
            except (sqlite3.Error, OSError, LocalStoreError) as exc:
                log.error("event %r could not be stored: %r", type, exc)
                event, new = EventLog.make(type, attrs), True
            if new:  # a repeated id was handed on when it was first recorded
                for listener in self._event_listeners:
                    try:
                        listener(event)
                    except Exception:  # a listener's bug must not reach the app's thread
                        log.exception("on_event callback failed for an event of type %r", type)
        return event

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[Event], None]:
        """Call ``callback`` with each new event :meth:`track` recorded, in the tracking
        thread, after it is stored; returns ``callback``, so it can decorate."""
        with self._store_lock:
            self._event_listeners = (*self._event_listeners, callback)
        return callback

    @property
    def features(self) -> Mapping[str, Any]:
        """The live (unexpired) features of this device, read-only and read afresh on each
        access; tasks see the same mapping as ``ctx.features``."""
        return self._features

    def flush_uploads(self, timeout_s: float = 10.0) -> bool:
        """Block until the outbox is empty (True) or ``timeout_s`` passes (False)."""
        uploader = self._uploader
        return uploader.flush(timeout_s) if uploader is not None else False

    def on_output(self, callback: Callable[[TaskOutput], None]) -> Callable[[TaskOutput], None]:
        """Call ``callback`` with what each task call emitted (``ctx.emit``), from the
        worker thread once the call returned; returns ``callback``, so it can decorate."""
        self._runtime.on_output(callback)
        return callback

    def installed_tasks(self) -> list[InstalledTask]:
        """Every task version the device knows: active, kept for rollback, or failed."""
        with self._reading() as store:
            return store.versions()

    def task_path(self, name: str) -> Path | None:
        """The directory of the active version of task ``name``, or None if none is active."""
        with self._reading() as store:
            versions = store.versions(name)
        for version in versions:
            if version.state is VersionState.active and version.path is not None:
                return version.path if version.path.is_dir() else None
        return None

    def wait_for(
        self, condition: Callable[[DeviceStatus], bool], *, timeout_s: float
    ) -> DeviceStatus:
        """Block until ``condition(self.status())`` holds and return that status; raises
        ``TimeoutError`` after ``timeout_s``. Handy in tests and on an app's first start."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._changed:
                generation = self._generation
            status = self.status()
            if condition(status):
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"The device did not reach the awaited state within {timeout_s} s; "
                    f"last status: {status}."
                )
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(remaining)

    # --- plumbing -------------------------------------------------------------------

    def _identity(self, store: DeviceStore, client: CloudClient) -> Identity:
        identity = store.identity()
        if identity is not None:
            if identity.cloud_url != self.cloud_url:
                raise IdentityMismatch(
                    f"{self.data_dir} holds device {identity.device_id} of the cloud at "
                    f"{identity.cloud_url}, not {self.cloud_url}; pass that cloud_url, or "
                    "another data_dir for a device of this cloud."
                )
            return identity
        registered = client.register(
            RegisterDeviceRequest(enrollment_key=self._enrollment_key, attributes=self._attributes)
        )
        identity = Identity(
            device_id=registered.device_id,
            token=registered.token,
            platform_public_key=registered.platform_public_key,
            cloud_url=self.cloud_url,
            registered_at=datetime.now(UTC),
        )
        store.save_identity(identity)
        return identity

    @contextmanager
    def _feature_store(self) -> Iterator[FeatureStore]:
        with self._reading() as store:
            yield FeatureStore(store)

    def _open_store(self) -> DeviceStore:
        if self._store is None:
            self._store = DeviceStore(self.data_dir / "device.db")
        return self._store

    @contextmanager
    def _reading(self) -> Iterator[DeviceStore]:
        # A stopped device opens the store just for the read, so it holds no file open.
        with self._store_lock:
            if self._store is not None:
                yield self._store
                return
            store = DeviceStore(self.data_dir / "device.db")
            try:
                yield store
            finally:
                store.close()

    def _refresh_tasks(self, *, any_time: bool = False) -> bool:
        """Tell the runtime which version of each task is active, as the store says;
        returns whether that changed what runs. Unless ``any_time``, only while started."""
        with self._store_lock:
            if self._store is None and not any_time:
                return False
            with self._reading() as store:
                versions = store.versions()
        active = {
            v.task: v.path
            for v in versions
            if v.state is VersionState.active and v.path is not None
        }
        changed = self._runtime.update(active)
        if changed:
            self._pipelines.update()
        return changed

    def _notify(self) -> None:
        # Called from the sync threads after installs, rollbacks and connection changes.
        try:
            self._refresh_tasks()
        except Exception:  # the sync must go on; the next change retries
            log.exception("could not load the installed tasks")
        self._bump()

    def _bump(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
