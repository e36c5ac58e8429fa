"""On-device learning: a frozen backbone, an activation cache, and a trainable head.

The backbone (an ONNX file with an ``activation`` and an ``embedding`` output) never
changes on the device; only the head, a logistic layer over the activations, is trained.
Since the backbone is frozen, a sample's activations never change either: the
**activation cache** (PAC) keeps them by sample key, so every epoch after the first reads
the cache instead of running the backbone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_sdk._errors import DeviceSDKError
from device_sdk._runner import LoadedModel

if TYPE_CHECKING:  # numpy and onnxruntime load on first use: `import device_sdk` stays light
    import numpy as np
    from numpy.typing import NDArray

    Arrays = Mapping[str, NDArray[Any]]
    # The activations of the samples at ``rows`` (a slice of the training set).
    ActivationSource = Callable[[slice], NDArray[np.float32]]

ACTIVATION = "activation"
EMBEDDING = "embedding"
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class LearningError(DeviceSDKError):
    """On-device learning cannot run as asked; the message says what is missing."""


class Backbone:
    """The frozen part of a model: inputs -> (``activation``, ``embedding``).

    ``model`` is the ONNX file (bytes or a path), or a task's loaded model
    (``ctx.model("backbone")``), whose session is then shared with the task runtime."""

    def __init__(self, model: bytes | Path | LoadedModel, *, threads: int = 1) -> None:
        import numpy as np

        if isinstance(model, LoadedModel):
            outputs = set(model.output_names)
            self.input_types: dict[str, np.dtype[Any]] = {
                name: np.dtype(model.describe(name).split(" ", 1)[0]) for name in model.input_names
            }
            self._loaded: LoadedModel | None = model
            self._session: Any = None
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            source = str(model) if isinstance(model, Path) else model
            self._session = ort.InferenceSession(
                source, options, providers=["CPUExecutionProvider"]
            )
            self._loaded = None
            outputs = {o.name for o in self._session.get_outputs()}
            self.input_types = {
                i.name: np.dtype(_ORT_DTYPES.get(i.type, "float32"))
                for i in self._session.get_inputs()
            }
        if not {ACTIVATION, EMBEDDING} <= outputs:
            raise LearningError(
                f"A backbone must have outputs {ACTIVATION!r} and {EMBEDDING!r}; this one has "
                f"{sorted(outputs)}. Export it with models.coda_split.split_edge."
            )
        self.runs = 0  # rows the backbone has computed, for cost accounting

    def run(self, inputs: Arrays, outputs: Sequence[str] = (ACTIVATION,)) -> list[NDArray[Any]]:
        """The named outputs for ``inputs`` (cast to the backbone's input types)."""
        import numpy as np

        feed = {name: np.asarray(inputs[name], dtype) for name, dtype in self.input_types.items()}
        self.runs += len(next(iter(feed.values())))
        if self._loaded is not None:
            result = self._loaded.run(feed)
            return [np.asarray(result[name], np.float32) for name in outputs]
        return [np.asarray(o, np.float32) for o in self._session.run(list(outputs), feed)]

    def activations(self, inputs: Arrays) -> NDArray[np.float32]:
        return self.run(inputs, (ACTIVATION,))[0]

    def embeddings(self, inputs: Arrays) -> NDArray[np.float32]:
        return self.run(inputs, (EMBEDDING,))[0]


class ActivationCache:
    """Activations by sample key, in one contiguous matrix, filled on first use.

    At most ``max_rows`` rows are kept; beyond that, new samples' activations are computed
    each time and not kept (the samples already cached stay fast). Thread-safe."""

    def __init__(self, backbone: Backbone, *, max_rows: int = 200_000) -> None:
        self.backbone = backbone
        self.max_rows = max_rows
        self._index: dict[str, int] = {}
        self._matrix: NDArray[np.float32] | None = None
        # Rows of the matrix in use: a key cached by two threads at once may take two rows,
        # so this can exceed len(self._index); new rows always go after these.
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """Bytes the cached activations take."""
        with self._lock:
            if self._matrix is None:
                return 0
            return int(self._used * self._matrix.shape[1] * self._matrix.itemsize)

    def slots(self, keys: Sequence[str], inputs: Arrays) -> NDArray[np.int64]:
        """The cache row of each key (-1: not cacheable), running the backbone on the rows
        of ``inputs`` whose key is not cached yet."""
        import numpy as np

        with self._lock:
            if self._index:
                found = np.fromiter(map(self._index.get, keys, repeat(-1)), np.int64, len(keys))
            else:  # an empty cache, as on a round's first batch: no key to look up
                found = np.full(len(keys), -1, np.int64)
        missing = np.flatnonzero(found < 0)
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if len(missing) == 0:
            return found
        if len(missing) == len(keys):
            computed = self.backbone.activations(inputs)
        else:
            computed = self.backbone.activations({k: v[missing] for k, v in inputs.items()})
        with self._lock:
            index = self._index
            new_keys = keys if len(missing) == len(keys) else [keys[p] for p in missing.tolist()]
            count, start = len(new_keys), self._used
            placed = dict(zip(new_keys, range(start, start + count), strict=True))
            if len(placed) == count and start + count <= self.max_rows:
                # The usual case, distinct new keys with room for all: one block copy.
                self._take(count, computed.shape[1])
                assert self._matrix is not None
                self._matrix[start : start + count] = computed
                if index:
                    index.update(placed)
                else:
                    self._index = placed
                found[missing] = np.arange(start, start + count)
                return found
            fresh: dict[str, int] = {}  # new key -> its row in ``computed``
            for row, position in enumerate(missing.tolist()):
                key = keys[position]
                if key not in index and key not in fresh:
                    fresh[key] = row
            room = max(0, min(len(fresh), self.max_rows - self._used))
            if room:
                stored = list(fresh.items())[:room]
                start = self._take(room, computed.shape[1])
                assert self._matrix is not None
                self._matrix[start : start + room] = computed[[row for _, row in stored]]
                index.update((key, start + i) for i, (key, _) in enumerate(stored))
            found[missing] = [index.get(keys[p], -1) for p in missing.tolist()]
        return found

    def _take(self, count: int, width: int) -> int:
        """Take ``count`` more rows of the matrix (grown when full); returns the first."""
        import numpy as np

        size = self._used
        if self._matrix is None or size + count > self._matrix.shape[0]:
            capacity = min(max(2 * (size + count), 64), self.max_rows)
            grown = np.empty((capacity, width), np.float32)
            if self._matrix is not None:
                grown[:size] = self._matrix[:size]
            self._matrix = grown
        self._used = size + count
        return size

    def rows(self, slots: NDArray[np.int64]) -> NDArray[np.float32]:
        """The cached activations at ``slots`` (all >= 0). When the slots are one run of
        consecutive rows (samples first cached together, in order), a read-only view of
        the cache rather than a copy: a cached row never changes, nor moves out of a view
        (growing the cache copies it to a new matrix and leaves the old one to its views)."""
        import numpy as np

        assert self._matrix is not None
        count = len(slots)
        if count and slots[-1] - slots[0] == count - 1 and (np.diff(slots) == 1).all():
            first = int(slots[0])
            view = self._matrix[first : first + count]
            view.flags.writeable = False
            return view
        return self._matrix[slots]

    def activations(self, keys: Sequence[str], inputs: Arrays) -> NDArray[np.float32]:
        """The activations of the rows of ``inputs`` named ``keys``; the backbone runs only
        on rows not cached yet (and on rows beyond ``max_rows``)."""
        slots = self.slots(keys, inputs)
        if (slots < 0).any():
            return self.backbone.activations(inputs)
        return self.rows(slots)


@dataclass(frozen=True)
class Head:
    """A logistic layer: P(label = 1) = sigmoid(activation @ w + b)."""

    w: NDArray[np.float32]
    b: float

    @classmethod
    def load(cls, path: Path) -> Head:
        import numpy as np

        with np.load(path) as data:
            return cls(np.asarray(data["w"], np.float32).reshape(-1), float(data["b"]))

    def save(self, path: Path) -> None:
        import numpy as np

        scratch = path.with_name(path.name + ".partial.npz")
        np.savez(scratch, w=self.w, b=np.float32(self.b))
        scratch.replace(path)

    def predict(self, activations: NDArray[Any]) -> NDArray[np.float32]:
        return _sigmoid(activations @ self.w + self.b)


@dataclass(frozen=True)
class HeadTraining:
    """How the head trains: one bound-Hessian (Newton-like) step per epoch on the weighted
    log-loss plus an L2 pull of strength ``l2_to_start`` toward the starting head. An
    epoch reads every sample's activations once, ``batch_size`` rows at a time."""

    epochs: int = 5
    batch_size: int = 4096
    l2_to_start: float = 0.05


def backbone_source(backbone: Backbone, inputs: Arrays) -> ActivationSource:
    """Activations computed by the backbone on every call (no cache)."""
    return lambda rows: backbone.activations({k: v[rows] for k, v in inputs.items()})


def cached_source(cache: ActivationCache, keys: Sequence[str], inputs: Arrays) -> ActivationSource:
    """Activations through the cache: the backbone runs once per sample key.

    A batch's activations, once read from the cache, are kept for the epochs after: a view
    of the cache when the batch's samples were cached together (the usual case: a round's
    new samples go into the cache in its first epoch), else one gathered copy of the
    batch's rows. A later epoch's batch is then a lookup, not a gather."""
    blocks: dict[tuple[int, int, int], NDArray[np.float32]] = {}

    def source(rows: slice) -> NDArray[np.float32]:
        span = rows.indices(len(keys))
        block = blocks.get(span)
        if block is not None:
            cache.hits += len(block)
            return block
        part = {k: v[rows] for k, v in inputs.items()}
        slots = cache.slots(keys[rows], part)
        if (slots < 0).any():  # beyond the cache's size: computed each time, not kept
            return cache.backbone.activations(part)
        block = blocks[span] = cache.rows(slots)
        return block

    return source


def train_head(
    start: Head,
    source: ActivationSource,
    labels: NDArray[Any],
    weights: NDArray[Any],
    config: HeadTraining = HeadTraining(),
) -> Head:
    """Fit the head on weighted samples, starting from (and pulled toward) ``start``.

    The objective, convex in the head's weights, is the weighted mean log-loss plus
    ``l2_to_start / 2 * |(w, b) - (w0, b0)|^2``; each epoch accumulates the gradient over
    all samples and takes one step scaled by a fixed bound on the Hessian (a head has few
    weights, so the bound is a small matrix, and a handful of epochs converges)."""
    import numpy as np

    n = int(labels.shape[0])
    total = float(np.sum(weights))
    if n == 0 or total <= 0:
        return start
    theta0 = np.append(start.w.astype(np.float64), start.b)
    theta = theta0.copy()
    d = theta.shape[0]
    # float32 for the passes over samples (activations are float32; BLAS is fastest on
    # them), float64 for the small solve.
    sw = (np.asarray(weights, np.float64) / total).astype(np.float32)
    # With p = sigmoid(z) = (1 + tanh(z / 2)) / 2 (which never overflows), a sample's
    # gradient weight (p - y) sw is (tanh(z / 2) - (2 y - 1)) sw / 2: one tanh, in place.
    target = 2 * np.asarray(labels, np.float32) - 1
    half_sw, quarter_sw = 0.5 * sw, 0.25 * sw
    batches = [slice(i, min(i + config.batch_size, n)) for i in range(0, n, config.batch_size)]
    # The curvature of the log-loss is p (1 - p) <= 1/4 whatever the weights, so
    # B = X^T diag(sw) X / 4 + l2 I bounds the Hessian: steps theta -= B^-1 grad never
    # increase the objective (Bohning's bound), and B, fixed, is built in the first epoch's
    # pass and inverted once. Later epochs are then a gradient pass and a small product.
    bound: NDArray[Any] | None = None
    for _ in range(config.epochs):
        half = (0.5 * theta).astype(np.float32)
        half_w, half_b = half[:-1], half[-1]
        grad = config.l2_to_start * (theta - theta0)
        curvature = np.zeros((d, d)) if bound is None else None
        for rows in batches:
            x = source(rows)
            error = x @ half_w
            error += half_b
            np.tanh(error, out=error)
            error -= target[rows]
            error *= half_sw[rows]
            grad[:-1] += error @ x
            grad[-1] += error.sum()
            if curvature is not None:
                quarter = quarter_sw[rows]
                curvature[:-1, :-1] += (x * quarter[:, None]).T @ x
                column = quarter @ x  # a product, many times faster than a column sum
                curvature[:-1, -1] += column
                curvature[-1, :-1] += column
                curvature[-1, -1] += quarter.sum()
        if curvature is not None:
            curvature.flat[:: d + 1] += config.l2_to_start  # + l2 I
            bound = np.linalg.inv(curvature)
        assert bound is not None
        theta -= bound @ grad
    return Head(theta[:-1].astype(np.float32), float(theta[-1]))


def log_loss(labels: NDArray[Any], scores: NDArray[Any]) -> float:
    """Mean binary cross-entropy of ``scores`` (probabilities) against ``labels``."""
    import numpy as np

    p = np.clip(np.asarray(scores, np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _sigmoid(x: NDArray[Any]) -> NDArray[np.float32]:
    import numpy as np

    out: NDArray[np.float32] = (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)
    return out
