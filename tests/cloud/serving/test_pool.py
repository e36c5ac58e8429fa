"""The serving pool through the app: merging across HTTP requests, back-pressure, eviction,
new versions while serving."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.core.settings import Settings
from tests.cloud.serving import onnx_models
from tests.cloud.serving.helpers import error_code, infer_json, to_json, until_version
from tests.factories import changed, upload_model
from tests.services import require_redis


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**changes: Any) -> TestClient:
        client = TestClient(create_app(changed(settings, **changes)), raise_server_exceptions=False)
        clients.append(client.__enter__())
        upload_model(client, name="ranker", data=onnx_models.recommender())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def metric(client: TestClient, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_concurrent_http_requests_are_merged_and_each_gets_its_rows(make_client: Any) -> None:
    """Bursts of concurrent one-row requests are merged into shared runs (fewer runs than
    requests), and every caller still receives exactly its own row's score."""
    client = make_client(serving_max_batch=4, serving_max_delay_ms=200)
    inputs = [onnx_models.recommender_inputs(1, seed=i) for i in range(8)]
    alone = [infer_json(client, "ranker", to_json(x)).json()["outputs"] for x in inputs]
    count = 'tandem_serving_batch_requests_count{model="ranker"}'
    total = 'tandem_serving_batch_requests_sum{model="ranker"}'
    with ThreadPoolExecutor(8) as threads:
        for _ in range(5):
            runs, requests = metric(client, count), metric(client, total)
            answers = list(threads.map(lambda x: infer_json(client, "ranker", to_json(x)), inputs))
            assert [a.json()["outputs"] for a in answers] == alone
            if metric(client, count) - runs < metric(client, total) - requests:
                return
    raise AssertionError("five bursts of 8 concurrent requests were never merged")


def wait_for_metric(client: TestClient, name: str, value: float) -> None:
    for _ in range(2000):
        if metric(client, name) == value:
            return
        time.sleep(0.005)
    raise AssertionError(f"{name} never reached {value}")


def test_full_queue_answers_429_with_retry_after(make_client: Any) -> None:
    """With the model's run thread busy and two rows queued at a limit of two, the next
    request gets 429 with Retry-After; the queued ones are answered once it frees up."""
    # (runs in the worker thread, which the test can occupy; the queue is the same either way)
    client = make_client(serving_max_queue_rows=2, serving_run_async=False)
    body = to_json(onnx_models.recommender_inputs(1))
    served = client.portal.call(client.app.state.serving.get, "ranker", 1)
    gate = threading.Event()
    served.executor.submit(gate.wait)  # occupies the model's only run thread
    with ThreadPoolExecutor(3) as threads:
        try:  # the gate opens whatever happens, or the threads would never finish
            running = threads.submit(infer_json, client, "ranker", body)
            # Taken from the queue (its wait is recorded), now stuck behind the gate.
            wait_for_metric(client, 'tandem_serving_queue_seconds_count{model="ranker"}', 1)
            waiting = [threads.submit(infer_json, client, "ranker", body) for _ in range(2)]
            wait_for_metric(client, 'tandem_serving_queued_rows{model="ranker",version="1"}', 2)
            refused = infer_json(client, "ranker", body)
            gate.set()
            assert refused.status_code == 429 and error_code(refused) == "overloaded"
            assert int(refused.headers["retry-after"]) >= 1
            assert running.result(timeout=60).status_code == 200
            assert all(w.result(timeout=60).status_code == 200 for w in waiting)
        finally:
            gate.set()


def test_an_evicted_version_answers_what_was_queued_on_it(make_client: Any) -> None:
    """Evicting a version lets its queued requests finish on it: its run thread is kept
    until its queue is done (shutting it down at eviction failed them with 500s)."""
    client = make_client(serving_max_loaded=1, serving_run_async=False)
    upload_model(client, name="other", data=onnx_models.recommender(seed=4))
    body = to_json(onnx_models.recommender_inputs(1))
    pool = client.app.state.serving
    served = client.portal.call(pool.get, "ranker", 1)
    gate = threading.Event()
    served.executor.submit(gate.wait)  # occupies the version's only run thread
    with ThreadPoolExecutor(3) as threads:
        try:
            running = threads.submit(infer_json, client, "ranker", body)
            wait_for_metric(client, 'tandem_serving_queue_seconds_count{model="ranker"}', 1)
            waiting = [threads.submit(infer_json, client, "ranker", body) for _ in range(2)]
            wait_for_metric(client, 'tandem_serving_queued_rows{model="ranker",version="1"}', 2)
            assert infer_json(client, "other", body).status_code == 200  # evicts ranker
            assert metric(client, "tandem_serving_loaded_versions") == 1
            gate.set()
            assert running.result(timeout=60).status_code == 200
            assert [w.result(timeout=60).status_code for w in waiting] == [200, 200]
        finally:
            gate.set()
    # Once its queue is done, the evicted version is let go (its session can be freed).
    deadline = time.monotonic() + 10
    while served in pool._retiring and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served not in pool._retiring
    assert infer_json(client, "ranker", body).status_code == 200  # loaded again


def test_request_larger_than_the_queue_is_422(make_client: Any) -> None:
    """A request with more rows than the queue can ever hold is refused as invalid, not
    told to retry."""
    client = make_client(serving_max_queue_rows=2)
    response = infer_json(client, "ranker", to_json(onnx_models.recommender_inputs(3)))
    assert response.status_code == 422 and error_code(response) == "invalid_model_input"


def test_least_recently_used_version_is_evicted(make_client: Any) -> None:
    """With room for one loaded version, serving a second evicts the first, which reloads."""
    client = make_client(serving_max_loaded=1)
    upload_model(client, name="other", data=onnx_models.recommender(seed=4))
    body = to_json(onnx_models.recommender_inputs(1))
    first = infer_json(client, "ranker", body).json()
    assert infer_json(client, "other", body).status_code == 200
    assert metric(client, "tandem_serving_loaded_versions") == 1
    again = infer_json(client, "ranker", body).json()
    assert again == first


def test_requests_keep_succeeding_while_a_version_is_registered(make_client: Any) -> None:
    """During a new registration every unpinned request succeeds, from v1 and then v2."""
    client = make_client()
    body = to_json(onnx_models.recommender_inputs(2))
    assert infer_json(client, "ranker", body).json()["version"] == 1
    with ThreadPoolExecutor(1) as threads:
        upload = threads.submit(
            upload_model, client, name="ranker", data=onnx_models.recommender(seed=9)
        )
        for _ in range(20):
            assert infer_json(client, "ranker", body).status_code == 200
        assert upload.result().status_code == 201
    answer = until_version(client, "ranker", body, 2)
    assert np.asarray(answer["outputs"]["score"]).shape == (2, 1)


def test_pinned_and_unpinned_requests_share_one_loaded_version(make_client: Any) -> None:
    """Version 1 asked for by number and as the latest is loaded once, not twice."""
    client = make_client()
    body = to_json(onnx_models.recommender_inputs(1))
    assert infer_json(client, "ranker", body, version=1).status_code == 200
    assert infer_json(client, "ranker", body).status_code == 200
    assert metric(client, "tandem_serving_loaded_versions") == 1
    assert metric(client, "tandem_serving_load_seconds_count") == 1


def test_a_version_registered_on_one_replica_is_served_by_another(settings: Settings) -> None:
    """Two replicas share the database, blob store and Redis: after an upload to one, the
    other serves the new version (told by the broker), and both keep answering meanwhile."""
    # A TTL of an hour: only the broker's event can make the second replica look again.
    shared = changed(settings, redis_url=require_redis(), serving_latest_ttl_s=3600)
    with (
        TestClient(create_app(shared), raise_server_exceptions=False) as first,
        TestClient(create_app(shared), raise_server_exceptions=False) as second,
    ):
        upload_model(first, name="ranker", data=onnx_models.recommender())
        body = to_json(onnx_models.recommender_inputs(1))
        assert infer_json(second, "ranker", body).json()["version"] == 1
        upload_model(first, name="ranker", data=onnx_models.recommender(seed=5))
        assert until_version(second, "ranker", body, 2)["version"] == 2


def test_runs_start_on_onnxruntimes_thread_only_where_each_gets_one(make_client: Any) -> None:
    """run_async runs on the intra-op pool: with several runs in flight a version, or a
    pool onnxruntime sizes itself, runs go to the worker threads instead."""
    assert make_client().app.state.serving.options.run_async
    assert not make_client(serving_concurrent_runs=2).app.state.serving.options.run_async
    assert not make_client(serving_intra_op_threads=0).app.state.serving.options.run_async
    assert not make_client(serving_run_async=False).app.state.serving.options.run_async
