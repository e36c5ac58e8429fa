"""Loading one installed task version: its manifest, its models, and its verified entry code.

Trust: code and models are loaded only from task version directories under ``tasks_dir``,
which the installer writes after the bundle's signature, digest and files verified.
Loading checks each file once more against the digest in the installed manifest and runs
the bytes it checked (no bytecode cache is read or written), so a file changed on disk
after install is refused rather than run. The installed manifest itself is not re-verified
against its signature at load time: someone able to rewrite both it and a file in the
data directory is not stopped here (the signature is checked once, at install).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_sdk._errors import InvalidBundle, TaskFailed, UnknownModel
from device_sdk._runner import LoadedModel, ModelRunner
from device_sdk._task_context import TaskContext
from device_sdk.wire import MANIFEST_NAME, TaskManifest, TriggerKind

_module_ids = itertools.count(1)


class _Version:
    """One installed task version as the runtime holds it: manifest, models, entry."""

    def __init__(
        self, name: str, path: Path, manifest: TaskManifest | None, runner: ModelRunner
    ) -> None:
        self.name = name
        self.path = path
        self.manifest = manifest
        self.error: Exception | None = None
        self.version = manifest.version if manifest is not None else None
        resources = manifest.resources if manifest is not None else None
        self.timeout_s = resources.timeout_ms / 1000 if resources is not None else 1.0
        self.slots = threading.BoundedSemaphore(resources.max_concurrency if resources else 1)
        self.direct: LoadedModel | None = None  # set after a model task's first call
        self._runner = runner
        self._models: dict[str, LoadedModel] = {}
        self._entry: Callable[[TaskContext, Any], Any] | None = None
        self._entry_error: BaseException | None = None
        self._module: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, name: str, path: Path, tasks_dir: Path, runner: ModelRunner) -> _Version:
        """Read the installed manifest of ``path``; a version that cannot be used carries
        the reason in ``error`` (and fails each call with it)."""
        try:
            if not path.resolve().is_relative_to(tasks_dir.resolve()):
                raise InvalidBundle(
                    f"{path} is not under the device's task directory {tasks_dir}; "
                    "only installed, verified bundles run."
                )
            manifest = TaskManifest.model_validate_json((path / MANIFEST_NAME).read_bytes())
            if manifest.name != name:
                raise InvalidBundle(f"{path} holds task {manifest.name!r}, not {name!r}.")
        except Exception as exc:  # a broken install must not stop the other tasks
            broken = cls(name, path, None, runner)
            broken.error = exc
            return broken
        return cls(name, path, manifest, runner)

    @property
    def is_model_task(self) -> bool:
        return self.manifest is not None and self.manifest.entry is None

    @property
    def every_s(self) -> int | None:
        if self.manifest is None or self.manifest.entry is None:
            return None
        trigger = self.manifest.trigger
        return trigger.every_s if trigger.kind is TriggerKind.schedule else None

    def digests(self) -> set[str]:
        if self.manifest is None:
            return set()
        files = self.manifest.files
        return {files[m.file].sha256 for m in self.manifest.models if m.file in files}

    def label(self) -> str:
        return f"Task {self.name!r} version {self.version}"

    def check_usable(self) -> None:
        if self.error is not None:
            raise TaskFailed(
                f"Task {self.name!r} at {self.path} cannot run: {self.error}",
                task=self.name,
                version=self.version,
            ) from self.error

    def model(self, name: str) -> LoadedModel:
        model = self._models.get(name)
        if model is not None:
            return model
        assert self.manifest is not None
        refs = {m.name: m.file for m in self.manifest.models}
        if name not in refs:
            known = ", ".join(repr(n) for n in refs) or "none"
            raise UnknownModel(f"{self.label()} has no model {name!r}; its manifest lists {known}.")
        file = refs[name]
        model = self._runner.load(self._file(file), self.manifest.files[file].sha256)
        self._models[name] = model
        return model

    def entry(self) -> Callable[[TaskContext, Any], Any]:
        entry = self._entry
        if entry is not None:
            return entry
        with self._lock:
            if self._entry is None:
                if self._entry_error is not None:
                    raise self._entry_error
                try:
                    self._entry = self._import_entry()
                except BaseException as exc:
                    self._entry_error = exc  # the same verified bytes would fail again
                    raise
            return self._entry

    def unload(self) -> None:
        """Forget the entry module; calls in progress keep what they hold."""
        if self._module is not None:
            sys.modules.pop(self._module, None)

    def _file(self, relative: str) -> Path:
        path = self.path / relative
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise InvalidBundle(f"{self.label()}: {relative} resolves outside {self.path}.")
        return path

    def _import_entry(self) -> Callable[[TaskContext, Any], Any]:
        assert self.manifest is not None and self.manifest.entry is not None
        relative = self.manifest.entry
        path = self._file(relative)
        source = path.read_bytes()
        digest = self.manifest.files.get(relative)
        if digest is None or hashlib.sha256(source).hexdigest() != digest.sha256:
            raise InvalidBundle(
                f"{self.label()}: {path} no longer matches its digest in the signed manifest; "
                "it changed after it was installed. Reinstall the task."
            )
        # A unique name per loaded version: two versions never share module state.
        name = f"tandem_task_{re.sub(r'[^0-9A-Za-z_]', '_', self.name)}_v{self.version}"
        name = f"{name}_{next(_module_ids)}"
        spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__file__ = str(path)
        code = compile(source, str(path), "exec", dont_inherit=True)
        sys.modules[name] = module  # dataclasses, pickle and typing look modules up here
        try:
            # Running a verified task's code is what a task runtime is for.
            exec(code, module.__dict__)  # noqa: S102
        except BaseException:
            sys.modules.pop(name, None)
            raise
        self._module = name
        run = getattr(module, "run", None)
        if not callable(run):
            raise InvalidBundle(f"{self.label()}: {relative} defines no run(ctx, inputs).")
        entry: Callable[[TaskContext, Any], Any] = run
        return entry
