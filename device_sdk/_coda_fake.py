"""The fake cloud's CoDA pools: exact nearest-neighbour retrieval in numpy, with the
cloud's answer shape (top-k per query, de-duplicated, best first, capped; random samples).
:class:`device_sdk.testing.FakeCloud` serves it at ``POST /v1/coda/retrieve``."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from pydantic import ValidationError

from device_sdk.coda_wire import PoolSample, RetrieveRequest, RetrieveResponse


class FakePools:
    """Pools held in memory: ``add(pool, features, label, embedding)`` then retrieve."""

    def __init__(self, *, max_results: int = 1000, seed: int = 0) -> None:
        self.max_results = max_results
        self.retrievals: list[RetrieveRequest] = []
        """Every retrieval request received, oldest first (what left the device)."""
        self._pools: dict[str, list[PoolSample]] = {}
        self._seed = seed
        self._draws = 0
        self._lock = threading.Lock()

    def add(self, pool: str, features: dict[str, Any], label: float, embedding: Any) -> int:
        """Add one sample to ``pool`` (created on first use); returns its id."""
        import numpy as np

        with self._lock:
            samples = self._pools.setdefault(pool, [])
            sample_id = len(samples) + 1
            samples.append(
                PoolSample(
                    id=sample_id,
                    features=features,
                    label=float(label),
                    embedding=[float(v) for v in np.asarray(embedding).ravel()],
                )
            )
        return sample_id

    def handle(self, body: bytes) -> httpx.Response:
        """Answer one ``POST /v1/coda/retrieve`` body."""
        import numpy as np

        try:
            request = RetrieveRequest.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, "invalid_input", str(exc))
        with self._lock:
            self.retrievals.append(request)
            samples = list(self._pools.get(request.pool, []))
        if not samples:
            return _error(409, "pool_not_ready", f"Pool {request.pool!r} is empty.")
        matrix = np.asarray([s.embedding for s in samples], np.float32)
        queries = np.asarray(request.queries, np.float32)
        if queries.shape[1] != matrix.shape[1]:
            return _error(422, "embedding_dim_mismatch", "Query length differs from the pool's.")
        scores = queries @ matrix.T
        best: dict[int, float] = {}
        for row in scores:
            for index in np.argsort(-row, kind="stable")[: request.k]:
                best[int(index)] = max(best.get(int(index), -np.inf), float(row[index]))
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        nearest = [samples[i].model_copy(update={"score": s}) for i, s in ranked]
        with self._lock:
            self._draws += 1
            rng = np.random.default_rng([self._seed, self._draws])
        picks = rng.choice(len(samples), min(request.random, len(samples)), replace=False)
        response = RetrieveResponse(
            pool=request.pool,
            snapshot_version=1,
            pool_size=len(samples),
            samples=nearest[: self.max_results],
            random_samples=[samples[int(i)] for i in np.sort(picks)],
            capped=len(nearest) > self.max_results,
        )
        return httpx.Response(
            200,
            content=response.model_dump_json().encode(),
            headers={"Content-Type": "application/json"},
        )


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})
