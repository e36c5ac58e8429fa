"""CoDA on the device: retrieve samples like the user's from a cloud pool, keep those a
personalized filter finds local-like, and train the head on local + kept samples.

One round (:func:`coda_round`):

1. **Summarise** the local samples as a few query embeddings: k-means centroids of their
   backbone embeddings. Only these leave the device, never the samples themselves.
2. **Retrieve** the nearest pool samples per query (coarse matching) and some random ones.
3. **Filter** (fine matching): a logistic regression on embeddings learns local samples
   against the random pool samples; a candidate is kept when it scores local-like at or
   above ``threshold``, with a training weight growing with that score.
4. **Train** the head on local + kept samples, the backbone frozen and its activations
   cached (PAC), and keep the new head only if it beats the old one on the newest local
   samples (a validation split the training never sees).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from device_sdk._learning import (
    ActivationCache,
    Backbone,
    Head,
    HeadTraining,
    LearningError,
    cached_source,
    log_loss,
    train_head,
)
from device_sdk.coda_wire import PoolSample, RetrieveRequest, RetrieveResponse

if TYPE_CHECKING:  # numpy loads on first use: `import device_sdk` stays light
    import numpy as np
    from numpy.typing import NDArray

    from device_sdk._learning import Arrays

Retrieve = Callable[[RetrieveRequest], RetrieveResponse]


@dataclass(frozen=True)
class LocalSamples:
    """The device's own labelled samples, oldest first: backbone inputs, labels, and a
    stable key per sample (the activation cache's key)."""

    inputs: Arrays
    labels: NDArray[np.float32]
    keys: Sequence[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, rows: NDArray[Any]) -> LocalSamples:
        return LocalSamples(
            {k: v[rows] for k, v in self.inputs.items()},
            self.labels[rows],
            [self.keys[i] for i in rows],
        )


@dataclass(frozen=True)
class CodaConfig:
    """A round's knobs; the defaults are what ``bench/coda_eval.py`` measures."""

    pool: str
    queries: int = 4
    k: int = 100
    random: int = 200
    threshold: float = 0.5
    use_filter: bool = True
    use_pool: bool = True
    pool_weight: float = 0.5
    validation_share: float = 0.25
    accept_on: str = "auc"  # "auc" (ranking; the loss when one class only) or "logloss"
    min_local: int = 8
    training: HeadTraining = field(default_factory=HeadTraining)
    filter_l2: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class CodaResult:
    """What a round did: the head to use from now on, and what it cost."""

    head: Head
    accepted: bool
    old_validation_loss: float
    new_validation_loss: float
    retrieved: int
    kept: int
    bytes_down: int
    bytes_up: int
    train_seconds: float
    snapshot_version: int | None


def summarize(
    embeddings: NDArray[Any], n: int, seed: int = 0, rounds: int = 20
) -> NDArray[np.float32]:
    """``n`` unit-length k-means centroids (k-means++ start) of ``embeddings``."""
    import numpy as np

    x = np.asarray(embeddings, np.float64)
    x = x[np.linalg.norm(x, axis=1) > 1e-9]
    if len(x) == 0:
        raise LearningError("No local sample has a non-zero embedding to summarise.")
    n = min(n, len(x))
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, n):
        distance = np.min([((x - c) ** 2).sum(axis=1) for c in centers], axis=0)
        total = distance.sum()
        choice = rng.choice(len(x), p=distance / total) if total > 0 else rng.integers(len(x))
        centers.append(x[choice])
    c = np.asarray(centers)
    for _ in range(rounds):
        assign = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(axis=2), axis=1)
        for j in range(n):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(axis=0)
    norms = np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)
    centroids: NDArray[np.float32] = (c / norms).astype(np.float32)
    return centroids


class PersonalFilter:
    """Logistic regression on embeddings: local samples (1) against pool samples (0),
    the two classes weighted equally, L2-regularised; trained by Newton steps."""

    def __init__(self, local: NDArray[Any], pool: NDArray[Any], l2: float = 1.0) -> None:
        import numpy as np

        x = np.vstack([local, pool]).astype(np.float64)
        x = np.hstack([x, np.ones((len(x), 1))])
        y = np.r_[np.ones(len(local)), np.zeros(len(pool))]
        sw = np.r_[np.full(len(local), 0.5 / len(local)), np.full(len(pool), 0.5 / len(pool))]
        theta = np.zeros(x.shape[1])
        penalty = np.full(x.shape[1], l2 / len(x))
        penalty[-1] = 0.0
        for _ in range(25):
            p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -30, 30)))
            grad = x.T @ (sw * (p - y)) + penalty * theta
            hessian = (x * (sw * p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, grad)
            theta -= step
            if np.abs(step).max() < 1e-6:
                break
        self.theta = theta

    def score(self, embeddings: NDArray[Any]) -> NDArray[np.float32]:
        """P(local-like) for each embedding."""
        import numpy as np

        x = np.asarray(embeddings, np.float64)
        z = x @ self.theta[:-1] + self.theta[-1]
        out: NDArray[np.float32] = (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)
        return out


def _pool_arrays(samples: Sequence[PoolSample], input_types: Mapping[str, np.dtype[Any]]) -> Arrays:
    """Stack pool samples' features into backbone inputs."""
    import numpy as np

    out: dict[str, NDArray[Any]] = {}
    for name, dtype in input_types.items():
        try:
            out[name] = np.asarray([s.features[name] for s in samples], dtype)
        except (KeyError, ValueError) as exc:
            raise LearningError(
                f"Pool samples do not carry the backbone's input {name!r} in a usable shape; "
                "is this the pool for this model?"
            ) from exc
    return out


def coda_round(
    backbone: Backbone,
    head: Head,
    local: LocalSamples,
    retrieve: Retrieve | None,
    config: CodaConfig,
    cache: ActivationCache | None = None,
) -> CodaResult:
    """One CoDA round (see the module docstring). ``retrieve`` sends a request to the
    cloud (``CloudClient.coda_retrieve``); None, or ``config.use_pool`` False, trains on
    the local samples alone."""
    if len(local) < config.min_local:
        raise LearningError(
            f"{len(local)} local samples; a round needs at least {config.min_local}. "
            "Wait for more local data."
        )
    import numpy as np

    started = time.perf_counter()
    cache = cache if cache is not None else ActivationCache(backbone)
    n_val = max(2, round(len(local) * config.validation_share))
    train, val = (
        local.take(np.arange(len(local) - n_val)),
        local.take(np.arange(len(local) - n_val, len(local))),
    )
    keys: list[str] = list(train.keys)
    inputs = {k: v for k, v in train.inputs.items()}
    labels = train.labels.astype(np.float32)
    weights = np.ones(len(train), np.float32)
    retrieved = kept = bytes_down = bytes_up = 0
    version: int | None = None
    if config.use_pool and retrieve is not None:
        embeddings = backbone.embeddings(train.inputs)
        request = RetrieveRequest(
            pool=config.pool,
            queries=summarize(embeddings, config.queries, config.seed).tolist(),
            k=config.k,
            random=config.random if config.use_filter else 0,
        )
        bytes_up = len(request.model_dump_json())
        response = retrieve(request)
        bytes_down = len(response.model_dump_json())
        version = response.snapshot_version
        candidates = response.samples
        retrieved = len(candidates)
        if candidates:
            chosen, pool_weights = _choose(embeddings, response, config)
            kept = len(chosen)
            if kept:
                picked = [candidates[i] for i in chosen]
                extra = _pool_arrays(picked, backbone.input_types)
                inputs = {k: np.concatenate([inputs[k], extra[k]]) for k in inputs}
                keys += [f"pool:{config.pool}:{s.id}" for s in picked]
                labels = np.r_[labels, np.asarray([s.label for s in picked], np.float32)]
                weights = np.r_[weights, pool_weights]
    source = cached_source(cache, keys, inputs)
    new_head = train_head(head, source, labels, weights, config.training)
    val_act = cache.activations(list(val.keys), val.inputs)
    old_scores, new_scores = head.predict(val_act), new_head.predict(val_act)
    old_loss = log_loss(val.labels, old_scores)
    new_loss = log_loss(val.labels, new_scores)
    old_auc, new_auc = _auc(val.labels, old_scores), _auc(val.labels, new_scores)
    if config.accept_on == "auc" and old_auc is not None and new_auc is not None:
        # Ranking is what the head is for; the loss breaks a tie.
        accepted = new_auc > old_auc or (new_auc == old_auc and new_loss < old_loss)
    else:
        accepted = new_loss < old_loss
    return CodaResult(
        head=new_head if accepted else head,
        accepted=accepted,
        old_validation_loss=old_loss,
        new_validation_loss=new_loss,
        retrieved=retrieved,
        kept=kept,
        bytes_down=bytes_down,
        bytes_up=bytes_up,
        train_seconds=time.perf_counter() - started,
        snapshot_version=version,
    )


def _auc(labels: NDArray[Any], scores: NDArray[Any]) -> float | None:
    """Area under the ROC curve, ties counted half; None without both classes."""
    import numpy as np

    y = np.asarray(labels) > 0.5
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    s = np.asarray(scores, np.float64)
    greater = (s[y][:, None] > s[~y][None, :]).sum()
    ties = (s[y][:, None] == s[~y][None, :]).sum()
    return float((greater + 0.5 * ties) / (pos * neg))


def _choose(
    local_embeddings: NDArray[Any], response: RetrieveResponse, config: CodaConfig
) -> tuple[list[int], NDArray[np.float32]]:
    """Which candidates to train on, and their weights."""
    import numpy as np

    n = len(response.samples)
    if not config.use_filter or not response.random_samples:
        return list(range(n)), np.full(n, config.pool_weight, np.float32)
    pool = np.asarray([s.embedding for s in response.random_samples], np.float32)
    personal = PersonalFilter(local_embeddings, pool, config.filter_l2)
    scores = personal.score(np.asarray([s.embedding for s in response.samples], np.float32))
    chosen = [i for i in range(n) if scores[i] >= config.threshold]
    return chosen, (config.pool_weight * scores[chosen]).astype(np.float32)
