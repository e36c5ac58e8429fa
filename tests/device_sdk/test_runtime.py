"""The task runtime: entry tasks in the pool with limits, model tasks inline, reloads."""

from __future__ import annotations

import base64
import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_sdk import (
    DeviceStore,
    Installer,
    TaskFailed,
    TaskNotInstalled,
    TaskOutput,
    TaskRuntime,
    TaskStats,
    TaskTimeout,
    UnknownModel,
    VersionState,
)
from device_sdk import bundle as bundle_format
from device_sdk.wire import DesiredTask, FileDigest, TaskManifest
from examples.tiny_model import tiny_model
from tests.device_sdk.fake_cloud import public_key_b64

KEY = Ed25519PrivateKey.generate()
WAIT_S = 10.0
X = np.arange(4, dtype=np.float32).reshape(1, 4)


def linear(seed: int = 0) -> bytes:
    return tiny_model(4, 2, seed).SerializeToString()


def signed_task(
    name: str,
    files: dict[str, bytes],
    *,
    version: int = 1,
    key: Ed25519PrivateKey = KEY,
    models: dict[str, str] | None = None,
    **fields: Any,
) -> tuple[DesiredTask, bytes]:
    """A desired task signed by ``key`` and its bundle: ``files``, ``models`` as
    {name: file}, an entry if ``main.py`` is among the files, and manifest ``fields``."""
    manifest = TaskManifest.model_validate(
        {
            "name": name,
            "version": version,
            "entry": "main.py" if "main.py" in files else None,
            "models": [{"name": n, "file": f} for n, f in (models or {}).items()],
            "files": {
                n: FileDigest(sha256=hashlib.sha256(d).hexdigest(), size=len(d))
                for n, d in files.items()
            },
            **fields,
        }
    )
    data = bundle_format.build(manifest, files)
    task = DesiredTask(
        name=name,
        version=version,
        deployment_id=1,
        bundle_sha256=hashlib.sha256(data).hexdigest(),
        bundle_size=len(data),
        manifest=manifest,
        signature=base64.b64encode(key.sign(manifest.canonical_bytes())).decode(),
    )
    return task, data


class Tasks:
    """A device data directory whose tasks are installed by the SDK's installer."""

    def __init__(self, data_dir: Path) -> None:
        self.store = DeviceStore(data_dir / "device.db")
        self.installer = Installer(data_dir, self.store)

    def install(self, name: str, files: dict[str, bytes], **options: Any) -> Path:
        task, data = signed_task(name, files, **options)
        return self.installer.install(task, data, public_key=public_key_b64(KEY))

    def active(self) -> dict[str, Path]:
        return {
            v.task: v.path
            for v in self.store.versions()
            if v.state is VersionState.active and v.path is not None
        }


def entry(source: str) -> dict[str, Any]:
    """Install options for an entry task running ``source`` with model 'm' (linear)."""
    return {"files": {"main.py": source.encode(), "m.onnx": linear()}, "models": {"m": "m.onnx"}}


@pytest.fixture
def tasks(tmp_path: Path) -> Iterator[Tasks]:
    installed = Tasks(tmp_path / "device")
    yield installed
    installed.store.close()


@pytest.fixture
def features() -> dict[str, Any]:
    return {}


@pytest.fixture
def changed() -> threading.Event:
    """Set by the runtime whenever a call's outcome is recorded."""
    return threading.Event()


@pytest.fixture
def runtime(
    tasks: Tasks, features: dict[str, Any], changed: threading.Event
) -> Iterator[TaskRuntime]:
    made = TaskRuntime(tasks.installer.tasks_dir, features=features, on_change=changed.set)
    yield made
    made.stop()
    made.update({})  # unloads the tasks' modules


def load(runtime: TaskRuntime, tasks: Tasks) -> None:
    runtime.update(tasks.active())


def wait_for_stats(
    runtime: TaskRuntime, changed: threading.Event, task: str, condition: Any
) -> TaskStats:
    """Block (at most WAIT_S) until ``condition(stats of task)`` holds."""
    deadline = time.monotonic() + WAIT_S
    while True:
        changed.clear()
        stats = runtime.stats()[task]
        if condition(stats):
            return stats
        assert changed.wait(max(0.0, deadline - time.monotonic())), f"stats stayed {stats}"


class Outputs(list[TaskOutput]):
    """An on_output callback that keeps what arrives and sets ``arrived``."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()

    def __call__(self, output: TaskOutput) -> None:
        self.append(output)
        self.arrived.set()


ECHO = "def run(ctx, inputs):\n    return ctx.model('m').run(inputs)\n"
EMITS = (
    "def run(ctx, inputs):\n"
    "    y = ctx.model('m').run({'x': inputs['x']})['y']\n"
    "    ctx.emit('score', float(y.sum()))\n"
    "    ctx.emit('trigger', ctx.trigger)\n"
    "    return {'y': y}\n"
)
WAITS_FOR_CANCEL = (
    "import time\n"
    "def run(ctx, inputs):\n"
    "    deadline = time.monotonic() + 10\n"
    "    while not ctx.cancelled and time.monotonic() < deadline:\n"
    "        time.sleep(0.001)\n"
    "    try:\n"
    "        ctx.model('m').run({'x': inputs['x']})\n"
    "    except Exception as exc:\n"
    "        ctx.features['model_error'].append(str(exc))\n"
    "    ctx.features['ended'].set()\n"
)
RAISES = "def run(ctx, inputs):\n    raise ValueError('no ranking today')\n"
GATED = (
    "def run(ctx, inputs):\n"
    "    ctx.features['entered'].release()\n"
    "    ctx.features['gate'].wait(10)\n"
    "    return inputs\n"
)


def test_model_task_predict_returns_outputs(runtime: TaskRuntime, tasks: Tasks) -> None:
    """A task with one model and no entry returns the model's outputs from predict."""
    tasks.install("ranker", {"m.onnx": linear()}, models={"m": "m.onnx"})
    load(runtime, tasks)
    outputs = runtime.predict("ranker", {"x": X})
    assert list(outputs) == ["y"] and outputs["y"].shape == (1, 2)


def test_model_task_runs_in_the_callers_thread(runtime: TaskRuntime, tasks: Tasks) -> None:
    """A model task's predict starts no worker thread."""
    tasks.install("ranker", {"m.onnx": linear()}, models={"m": "m.onnx"})
    load(runtime, tasks)
    # Compared with before the call: other tests' pools may still be winding down.
    before = {t for t in threading.enumerate() if t.name.startswith("tandem-task")}
    runtime.predict("ranker", {"x": X})
    after = {t for t in threading.enumerate() if t.name.startswith("tandem-task")}
    assert after <= before


def test_entry_task_predict_returns_what_run_returns(runtime: TaskRuntime, tasks: Tasks) -> None:
    """An entry task's predict runs main.py's run(ctx, inputs), which uses ctx.model."""
    tasks.install("rerank", **entry(ECHO))
    load(runtime, tasks)
    direct = runtime.predict("rerank", {"x": X})
    tasks.install("plain", {"m.onnx": linear()}, models={"m": "m.onnx"})
    load(runtime, tasks)
    np.testing.assert_array_equal(direct["y"], runtime.predict("plain", {"x": X})["y"])


def test_emitted_outputs_reach_on_output(runtime: TaskRuntime, tasks: Tasks) -> None:
    """What a call emits arrives, in order, at on_output callbacks once it returned."""
    outputs: list[TaskOutput] = []
    runtime.on_output(outputs.append)
    tasks.install("rerank", **entry(EMITS))
    load(runtime, tasks)
    result = runtime.predict("rerank", {"x": X})
    (output,) = outputs
    assert (output.task, output.version, output.trigger) == ("rerank", 1, "predict")
    assert output.values == (("score", float(result["y"].sum())), ("trigger", "predict"))


def test_unknown_model_name_fails_the_call(runtime: TaskRuntime, tasks: Tasks) -> None:
    """ctx.model with a name the manifest lacks fails with the names it has."""
    tasks.install("rerank", **entry("def run(ctx, inputs):\n    return ctx.model('nope')\n"))
    load(runtime, tasks)
    with pytest.raises(TaskFailed) as raised:
        runtime.predict("rerank", {})
    assert isinstance(raised.value.__cause__, UnknownModel)
    assert "has no model 'nope'; its manifest lists 'm'" in str(raised.value)


def test_time_out_is_raised_to_the_caller_and_recorded(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any]
) -> None:
    """A call past its limit raises TaskTimeout at the limit; the task sees ctx.cancelled,
    its model runs are refused, and the time-out is counted."""
    features.update(ended=threading.Event(), model_error=[])
    tasks.install("slow", **entry(WAITS_FOR_CANCEL), resources={"timeout_ms": 100})
    load(runtime, tasks)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match=r"'slow' version 1 did not finish within 0\.1 s"):
        runtime.predict("slow", {"x": X})
    assert time.monotonic() - started < 5
    assert features["ended"].wait(WAIT_S)
    assert "terminate" in features["model_error"][0]
    stats = runtime.stats()["slow"]
    assert (stats.timeouts, stats.failures, stats.runs) == (1, 0, 0)
    assert isinstance(stats.last_error, TaskTimeout)


def test_predict_timeout_s_overrides_the_manifest(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any]
) -> None:
    """timeout_s given to predict replaces the task's resources.timeout_ms."""
    features.update(ended=threading.Event(), model_error=[])
    tasks.install("slow", **entry(WAITS_FOR_CANCEL), resources={"timeout_ms": 60_000})
    load(runtime, tasks)
    with pytest.raises(TaskTimeout, match=r"within 0\.05 s"):
        runtime.predict("slow", {"x": X}, timeout_s=0.05)
    assert features["ended"].wait(WAIT_S)


def test_exception_in_one_task_leaves_others_running(runtime: TaskRuntime, tasks: Tasks) -> None:
    """A task that raises fails its own call with TaskFailed; another task still runs."""
    tasks.install("broken", **entry(RAISES))
    tasks.install("rerank", **entry(ECHO))
    load(runtime, tasks)
    with pytest.raises(
        TaskFailed, match="'broken' version 1 raised ValueError: no ranking"
    ) as raised:
        runtime.predict("broken", {})
    assert isinstance(raised.value.__cause__, ValueError)
    assert runtime.predict("rerank", {"x": X})["y"].shape == (1, 2)
    stats = runtime.stats()
    assert (stats["broken"].failures, stats["rerank"].failures, stats["rerank"].runs) == (1, 0, 1)


def test_scheduled_task_runs_on_its_schedule(runtime: TaskRuntime, tasks: Tasks) -> None:
    """A schedule task runs by itself every every_s seconds once the runtime started."""
    outputs = Outputs()
    runtime.on_output(outputs)
    source = "def run(ctx, inputs):\n    ctx.emit('inputs', inputs)\n"
    tasks.install("tick", **entry(source), trigger={"kind": "schedule", "every_s": 1})
    load(runtime, tasks)
    runtime.start()
    assert outputs.arrived.wait(WAIT_S)
    assert (outputs[0].trigger, outputs[0].values) == ("schedule", (("inputs", None),))


def test_scheduled_failure_is_recorded_not_raised(
    runtime: TaskRuntime, tasks: Tasks, changed: threading.Event
) -> None:
    """A scheduled run that raises is counted with its error; nothing reaches the app."""
    tasks.install("tick", **entry(RAISES), trigger={"kind": "schedule", "every_s": 1})
    load(runtime, tasks)
    runtime.start()
    stats = wait_for_stats(runtime, changed, "tick", lambda s: s.failures >= 1)
    assert isinstance(stats.last_error, ValueError) and stats.last_error_at is not None


def test_fired_task_gets_the_matched_events(runtime: TaskRuntime, tasks: Tasks) -> None:
    """fire(task, events) runs the entry with the events as inputs and trigger 'event'."""
    outputs = Outputs()
    runtime.on_output(outputs)
    source = "def run(ctx, inputs):\n    ctx.emit(ctx.trigger, inputs)\n"
    tasks.install("on-click", **entry(source), trigger={"kind": "event", "pattern": "click"})
    load(runtime, tasks)
    assert runtime.fire("on-click", iter([{"item": "42"}]))
    assert outputs.arrived.wait(WAIT_S)
    assert outputs[0].values == (("event", [{"item": "42"}]),)


def test_fired_time_out_is_recorded_not_raised(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any], changed: threading.Event
) -> None:
    """A triggered call past its limit is cancelled and counted by the runtime's timer."""
    features.update(ended=threading.Event(), model_error=[])
    tasks.install("slow", **entry(WAITS_FOR_CANCEL), resources={"timeout_ms": 50})
    load(runtime, tasks)
    assert runtime.fire("slow", [{"x": X}]) is True
    stats = wait_for_stats(runtime, changed, "slow", lambda s: s.timeouts == 1)
    assert isinstance(stats.last_error, TaskTimeout)
    assert features["ended"].wait(WAIT_S)


def test_max_concurrency_is_honoured(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any], changed: threading.Event
) -> None:
    """With max_concurrency 2, a third triggered call while two run is skipped and counted."""
    features.update(entered=threading.Semaphore(0), gate=threading.Event())
    tasks.install("gated", **entry(GATED), resources={"max_concurrency": 2})
    load(runtime, tasks)
    try:
        assert [runtime.fire("gated", []) for _ in range(3)] == [True, True, False]
        assert features["entered"].acquire(timeout=WAIT_S)
        assert features["entered"].acquire(timeout=WAIT_S)
        assert runtime.stats()["gated"].skipped == 1
    finally:
        features["gate"].set()
    wait_for_stats(runtime, changed, "gated", lambda s: s.runs == 2)
    assert runtime.fire("gated", [])


def test_predict_waits_for_a_free_slot_within_its_limit(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any]
) -> None:
    """A predict on a task at max_concurrency times out if no slot frees within its limit."""
    features.update(entered=threading.Semaphore(0), gate=threading.Event())
    tasks.install("gated", **entry(GATED), resources={"max_concurrency": 1})
    load(runtime, tasks)
    try:
        assert runtime.fire("gated", [])
        assert features["entered"].acquire(timeout=WAIT_S)
        with pytest.raises(TaskTimeout, match="at its max_concurrency \\(1\\)"):
            runtime.predict("gated", [], timeout_s=0.05)
    finally:
        features["gate"].set()


def test_version_change_reloads_and_forgets_old_sessions(
    runtime: TaskRuntime, tasks: Tasks
) -> None:
    """A new active version runs its own code and model; the old one's session and module go."""
    source = "def run(ctx, inputs):\n    return (VERSION, ctx.model('m').run(inputs)['y'])\n"
    first = {"main.py": f"VERSION = 1\n{source}".encode(), "m.onnx": linear(seed=1)}
    tasks.install("rerank", first, models={"m": "m.onnx"})
    load(runtime, tasks)
    before = set(sys.modules)
    assert runtime.predict("rerank", {"x": X})[0] == 1
    old_digest = hashlib.sha256(linear(seed=1)).hexdigest()
    assert old_digest in runtime.runner.cached
    modules = set(sys.modules) - before
    second = {"main.py": f"VERSION = 2\n{source}".encode(), "m.onnx": linear(seed=2)}
    tasks.install("rerank", second, version=2, models={"m": "m.onnx"})
    assert runtime.update(tasks.active()) is True
    version, _ = runtime.predict("rerank", {"x": X})
    assert version == 2
    assert runtime.runner.cached == {hashlib.sha256(linear(seed=2)).hexdigest()}
    assert len(modules) == 1 and not modules & set(sys.modules)
    assert runtime.versions() == {"rerank": 2}


def test_update_with_nothing_new_changes_nothing(runtime: TaskRuntime, tasks: Tasks) -> None:
    """Telling the runtime the same active versions again keeps its loaded sessions."""
    tasks.install("ranker", {"m.onnx": linear()}, models={"m": "m.onnx"})
    load(runtime, tasks)
    runtime.predict("ranker", {"x": X})
    assert runtime.update(tasks.active()) is False
    assert len(runtime.runner.cached) == 1


def test_removed_task_is_not_installed(runtime: TaskRuntime, tasks: Tasks) -> None:
    """A task no longer active raises TaskNotInstalled, naming what is installed."""
    tasks.install("ranker", {"m.onnx": linear()}, models={"m": "m.onnx"})
    tasks.install("rerank", **entry(ECHO))
    load(runtime, tasks)
    runtime.update({"rerank": tasks.active()["rerank"]})
    with pytest.raises(TaskNotInstalled, match="installed tasks: 'rerank'"):
        runtime.predict("ranker", {"x": X})


def test_unknown_task_names_installed_tasks(runtime: TaskRuntime, tasks: Tasks) -> None:
    """predict on a task that is not installed says which tasks are."""
    tasks.install("ranker", {"m.onnx": linear()}, models={"m": "m.onnx"})
    tasks.install("rerank", **entry(ECHO))
    load(runtime, tasks)
    with pytest.raises(TaskNotInstalled) as raised:
        runtime.predict("rank", {"x": X})
    assert str(raised.value).startswith(
        "Task 'rank' is not installed on this device; installed tasks: 'ranker', 'rerank'."
    )


def test_entry_changed_on_disk_after_install_is_refused(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any]
) -> None:
    """An entry file altered after install fails to load, and its code does not run."""
    features["ran"] = []
    path = tasks.install("rerank", **entry(ECHO))
    (path / "main.py").write_text(
        "def run(ctx, inputs):\n    ctx.features['ran'].append(1)\n", encoding="utf-8"
    )
    load(runtime, tasks)
    with pytest.raises(TaskFailed, match="no longer matches its digest"):
        runtime.predict("rerank", {"x": X})
    assert features["ran"] == []


def test_entry_loads_only_from_the_task_directory(
    runtime: TaskRuntime, tasks: Tasks, tmp_path: Path, features: dict[str, Any]
) -> None:
    """A task directory outside the device's tasks directory is never loaded."""
    features["ran"] = []
    installed = tasks.install("rerank", **entry(ECHO))
    elsewhere = tmp_path / "elsewhere" / "rerank" / "1"
    elsewhere.mkdir(parents=True)
    for file in installed.iterdir():
        (elsewhere / file.name).write_bytes(file.read_bytes())
    runtime.update({"rerank": elsewhere})
    with pytest.raises(TaskFailed, match="is not under the device's task directory"):
        runtime.predict("rerank", {"x": X})
    assert runtime.stats()["rerank"].last_error is not None


def test_loading_writes_nothing_into_the_bundle(runtime: TaskRuntime, tasks: Tasks) -> None:
    """Running a task leaves its installed directory as installed (no bytecode cache)."""
    path = tasks.install("rerank", **entry(ECHO))
    before = sorted(p.name for p in path.rglob("*"))
    load(runtime, tasks)
    runtime.predict("rerank", {"x": X})
    assert sorted(p.name for p in path.rglob("*")) == before


def test_stop_cancels_calls_in_progress(
    runtime: TaskRuntime, tasks: Tasks, features: dict[str, Any]
) -> None:
    """stop() cancels running calls, whose tasks see ctx.cancelled and end."""
    features.update(ended=threading.Event(), model_error=[])
    tasks.install("slow", **entry(WAITS_FOR_CANCEL), resources={"timeout_ms": 60_000})
    load(runtime, tasks)
    assert runtime.fire("slow", [{"x": X}])
    runtime.stop()
    assert features["ended"].wait(WAIT_S)
