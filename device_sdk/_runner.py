"""Running ONNX models on the device: one onnxruntime session per model file digest.

A session is created the first time a model is used, from the bytes of an installed
bundle's model file after they are checked against the digest in its signed manifest,
then warmed up with one run on zeros and cached under that digest: two tasks (or two
versions of one task) that ship the same model file share one session.

Inputs are checked against the model's signature before every run. The check is plain
comparisons against a tuple computed once per session, so it costs well under a
microsecond per input; onnxruntime's own errors for the same mistakes are slower to reach
and harder to read.

numpy and onnxruntime are imported on first use, so ``import device_sdk`` stays light for
an app that only syncs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_sdk._errors import InvalidBundle, InvalidModelInput

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("device_sdk.runtime")

# onnxruntime's tensor element types and the numpy dtypes it takes for them.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}

# One checked input: name, numpy dtype, rank, and (axis, size) of each fixed dimension.
_Check = tuple[str, "np.dtype[Any]", int, tuple[tuple[int, int], ...]]


def _shape_text(shape: Sequence[object] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class LoadedModel:
    """A model ready to run: a cached onnxruntime session and its checked signature.

    ``run(inputs)`` (or calling the object) takes a mapping of input name to array and
    returns a dict of output name to value. numpy arrays must have the model's dtype;
    other values (lists, scalars) are converted to it. Raises :class:`InvalidModelInput`
    naming the input and what the model expects when names, dtypes, ranks or fixed
    dimensions do not match; a symbolic dimension (e.g. ``batch``) takes any size.
    """

    __slots__ = (
        "_checks",
        "_described",
        "_n_inputs",
        "_ndarray",
        "_output_names",
        "_run_options",
        "_session",
        "path",
        "sha256",
    )

    def __init__(self, session: Any, *, sha256: str, path: Path) -> None:
        import numpy as np

        self.sha256 = sha256
        self.path = path
        self._session = session
        self._run_options: Any = None
        self._ndarray = np.ndarray
        self._output_names = [o.name for o in session.get_outputs()]
        inputs = session.get_inputs()
        self._n_inputs = len(inputs)
        checks: list[_Check] = []
        described: dict[str, str] = {}
        for spec in inputs:
            dtype_name = _DTYPES.get(spec.type)
            shape = spec.shape
            described[spec.name] = f"{dtype_name or spec.type} with shape {_shape_text(shape)}"
            if dtype_name is None or shape is None:
                continue  # a sequence, map or exotic tensor: onnxruntime checks it
            fixed = tuple((axis, d) for axis, d in enumerate(shape) if isinstance(d, int))
            checks.append((spec.name, np.dtype(dtype_name), len(shape), fixed))
        self._checks = tuple(checks)
        self._described = described

    @property
    def input_names(self) -> list[str]:
        """The model's input names, in signature order."""
        return list(self._described)

    @property
    def output_names(self) -> list[str]:
        """The model's output names, in the order onnxruntime returns them."""
        return list(self._output_names)

    def describe(self, name: str) -> str:
        """What the model expects for input ``name``, e.g. ``float32 with shape [batch, 4]``."""
        return self._described[name]

    def with_run_options(self, run_options: Any) -> LoadedModel:
        """The same model and session, running with onnxruntime ``RunOptions`` (a task
        call's, so that a time-out can terminate its runs)."""
        bound = object.__new__(LoadedModel)
        for slot in LoadedModel.__slots__:
            setattr(bound, slot, getattr(self, slot))
        bound._run_options = run_options
        return bound

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``inputs`` against the signature, run the model, return its outputs."""
        feed = inputs if inputs.__class__ is dict else self._as_dict(inputs)
        if len(feed) != self._n_inputs:
            raise self._name_error(feed)
        ndarray = self._ndarray
        for name, dtype, rank, fixed in self._checks:
            try:
                value = feed[name]
            except KeyError:
                raise self._name_error(feed) from None
            if value.__class__ is not ndarray:
                return self.run(self._converted(feed))
            if value.ndim != rank or (value.dtype is not dtype and value.dtype != dtype):
                raise self._mismatch(name, value)
            if fixed:
                shape = value.shape
                for axis, size in fixed:
                    if shape[axis] != size:
                        raise self._mismatch(name, value, axis)
        outputs = self._session.run(self._output_names, feed, self._run_options)
        return dict(zip(self._output_names, outputs, strict=True))

    __call__ = run

    # --- the slow paths: conversions and error messages -----------------------------

    def _as_dict(self, inputs: object) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        raise InvalidModelInput(
            f"Model inputs must be a mapping of input name to array, not "
            f"{type(inputs).__name__}; the model expects {self._expected()}."
        )

    def _converted(self, feed: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        converted = dict(feed)
        for name, dtype, _, _ in self._checks:
            value = converted[name]
            if value.__class__ is np.ndarray:
                continue
            if isinstance(value, np.ndarray):
                value = np.asarray(value)  # a subclass: keep its dtype, checked as usual
            else:
                try:
                    value = np.asarray(value, dtype=dtype)
                except (TypeError, ValueError) as exc:
                    raise InvalidModelInput(
                        f"input {name!r} cannot be converted to {dtype} ({exc}); the model "
                        f"expects {self._described[name]}."
                    ) from exc
            converted[name] = value
        return converted

    def _expected(self) -> str:
        return ", ".join(f"{name!r} ({text})" for name, text in self._described.items())

    def _name_error(self, feed: Mapping[str, Any]) -> InvalidModelInput:
        missing = [n for n in self._described if n not in feed]
        unknown = [n for n in feed if n not in self._described]
        parts = [f"input {n!r} is missing" for n in missing]
        parts += [f"input {n!r} is not an input of the model" for n in unknown]
        return InvalidModelInput(f"{'; '.join(parts)}; the model expects {self._expected()}.")

    def _mismatch(self, name: str, value: Any, axis: int | None = None) -> InvalidModelInput:
        check = next(c for c in self._checks if c[0] == name)
        expected = self._described[name]
        if value.dtype != check[1]:
            return InvalidModelInput(
                f"input {name!r} has dtype {value.dtype}; the model expects {expected}. "
                f"Convert it with .astype(numpy.{check[1]})."
            )
        message = f"input {name!r} has shape {tuple(value.shape)}; the model expects {expected}"
        if axis is not None:
            message += f" (dimension {axis} must be {dict(check[3])[axis]})"
        elif value.ndim == check[2] - 1:
            message += "; for a single example, add the batch dimension (x[None])"
        return InvalidModelInput(message + ".")


class ModelRunner:
    """Creates, warms up and caches one onnxruntime session per model file digest.

    Sessions run on the CPU with ``intra_op_num_threads`` threads for one operator (1 by
    default: tasks run side by side in worker threads, and onnxruntime releases the GIL,
    so one thread per run uses the cores best), one thread across operators, sequential
    execution and every graph optimisation. Safe to share between threads: concurrent
    first uses of one model create one session.
    """

    def __init__(
        self,
        *,
        intra_op_num_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        warm_up: bool = True,
    ) -> None:
        if intra_op_num_threads < 1:
            raise ValueError(
                f"intra_op_num_threads must be at least 1, got {intra_op_num_threads}."
            )
        self.intra_op_num_threads = intra_op_num_threads
        self.providers = list(providers)
        self.warm_up = warm_up
        self._models: dict[str, LoadedModel] = {}
        self._creating: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._options: Any = None

    @property
    def cached(self) -> frozenset[str]:
        """Digests of the model files that have a session now."""
        return frozenset(self._models)

    def load(self, path: Path, sha256: str) -> LoadedModel:
        """The model of file ``path``, whose bytes must have digest ``sha256`` (as the
        installed, signed manifest lists it): from the cache, or loaded and warmed up.

        Raises :class:`InvalidBundle` if the file changed since it was verified, or if
        onnxruntime cannot load it.
        """
        model = self._models.get(sha256)
        if model is not None:
            return model
        with self._lock:
            creating = self._creating.setdefault(sha256, threading.Lock())
        with creating:
            model = self._models.get(sha256)
            if model is None:
                model = self._create(path, sha256)
                with self._lock:
                    self._models[sha256] = model
            with self._lock:
                self._creating.pop(sha256, None)
            return model

    def forget(self, keep: Collection[str]) -> None:
        """Drop the sessions of every digest not in ``keep`` (runs in progress finish)."""
        with self._lock:
            for digest in [d for d in self._models if d not in keep]:
                del self._models[digest]

    def run_options(self) -> Any:
        """A fresh ``onnxruntime.RunOptions``; setting its ``terminate`` stops runs using it."""
        import onnxruntime

        return onnxruntime.RunOptions()

    def _session_options(self) -> Any:
        import onnxruntime

        if self._options is None:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.intra_op_num_threads
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._options = options
        return self._options

    def _create(self, path: Path, sha256: str) -> LoadedModel:
        import onnxruntime

        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise InvalidBundle(
                f"Model file {path} no longer matches its digest {sha256[:12]}... in the signed "
                "manifest; it changed after it was installed. Reinstall the task."
            )
        try:
            session = onnxruntime.InferenceSession(
                data, sess_options=self._session_options(), providers=self.providers
            )
        except Exception as exc:  # onnxruntime raises its own classes for a bad model
            raise InvalidBundle(f"onnxruntime cannot load model file {path}: {exc}") from exc
        model = LoadedModel(session, sha256=sha256, path=path)
        if self.warm_up:
            self._warm(model, session)
        return model

    @staticmethod
    def _warm(model: LoadedModel, session: Any) -> None:
        # The first run allocates buffers and picks kernels; pay for it here, not in the
        # app's first call. Symbolic dimensions get size 1.
        import numpy as np

        feed: dict[str, Any] = {}
        for spec in session.get_inputs():
            dtype_name = _DTYPES.get(spec.type)
            if dtype_name is None or spec.shape is None:
                return  # cannot make a zero of a sequence or map: skip the warm-up
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            feed[spec.name] = (
                np.full(shape, "", dtype=object)
                if dtype_name == "object"
                else np.zeros(shape, dtype=dtype_name)
            )
        try:
            session.run(model.output_names, feed)
        except Exception as exc:  # a model may refuse zeros; it can still serve real inputs
            log.warning("warm-up of model %s failed (%s); it loads anyway", model.path, exc)
