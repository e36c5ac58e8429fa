"""CoDA on the device: summarise, retrieve through the client, filter, train, keep or not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from device_sdk import (
    Backbone,
    CloudClient,
    CloudRejected,
    CloudUnavailable,
    CodaConfig,
    CodaLearner,
    LearningError,
    LocalSamples,
    PersonalFilter,
    RetrieveRequest,
    coda_round,
    learner_for,
    register_learner,
    summarize,
)
from device_sdk.testing import DEVICE_TOKEN, FakeCloud
from tests.device_sdk.coda_factories import Split, inputs, labels, local_samples, split


@pytest.fixture
def parts() -> Split:
    return split()


@pytest.fixture
def cloud(parts: Split) -> FakeCloud:
    """A fake cloud whose pool 'movies' holds 400 labelled samples over the whole catalogue."""
    fake = FakeCloud()
    backbone = Backbone(parts.backbone)
    arrays = inputs(400, seed=11)
    y = labels(backbone, arrays, parts.direction)
    embeddings = backbone.embeddings(arrays)
    for i in range(400):
        features = {
            "item": float(arrays["item"][i]),
            "history": [float(v) for v in arrays["history"][i]],
            "genres": [float(v) for v in arrays["genres"][i]],
        }
        fake.coda.add("movies", features, float(y[i]), embeddings[i])
    return fake


@pytest.fixture
def client(cloud: FakeCloud) -> Iterator[CloudClient]:
    with CloudClient("https://cloud.test", token=DEVICE_TOKEN, transport=cloud.transport) as c:
        yield c


def test_summarize_finds_the_clusters_as_unit_vectors() -> None:
    """Two tight clusters give two unit-length centroids, one near each cluster's direction."""
    rng = np.random.default_rng(0)
    a, b = np.eye(4)[0], np.eye(4)[1]
    x = np.vstack([a + 0.01 * rng.normal(size=(30, 4)), b + 0.01 * rng.normal(size=(30, 4))])
    centroids = summarize(x, 2)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert sorted(np.argmax(centroids, axis=1).tolist()) == [0, 1]


def test_summarize_refuses_all_zero_embeddings() -> None:
    """Nothing to summarise (only zero vectors) is a LearningError."""
    with pytest.raises(LearningError):
        summarize(np.zeros((5, 4)), 2)


def test_personal_filter_scores_local_like_samples_higher() -> None:
    """Samples near the local ones score above 0.5, samples near the pool's below."""
    rng = np.random.default_rng(1)
    local = np.eye(4)[0] + 0.1 * rng.normal(size=(40, 4))
    pool = np.eye(4)[2] + 0.1 * rng.normal(size=(80, 4))
    personal = PersonalFilter(local, pool)
    assert personal.score(np.eye(4)[[0]])[0] > 0.5 > personal.score(np.eye(4)[[2]])[0]


def test_round_sends_only_query_embeddings(
    parts: Split, cloud: FakeCloud, client: CloudClient
) -> None:
    """What leaves the device is the pool, a few query embeddings, k and random: no samples."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction)
    coda_round(backbone, parts.head, local, client.coda_retrieve, CodaConfig(pool="movies"))
    (sent,) = [r for r in cloud.requests if r.path == "/v1/coda/retrieve"]
    body = json.loads(sent.body)
    assert set(body) == {"pool", "queries", "k", "random"}
    assert len(body["queries"]) == 4 and len(body["queries"][0]) == 16


def test_round_keeps_filtered_candidates_and_trains(parts: Split, client: CloudClient) -> None:
    """The filter keeps some but not all candidates; the costs of the round are counted."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction)
    result = coda_round(
        backbone, parts.head, local, client.coda_retrieve, CodaConfig(pool="movies", k=60)
    )
    assert result.retrieved > 0 and 0 < result.kept <= result.retrieved
    assert result.bytes_down > 0 and result.bytes_up > 0 and result.snapshot_version == 1


def test_round_without_filter_keeps_every_candidate(parts: Split, client: CloudClient) -> None:
    """With the filter off every retrieved sample is trained on, and no random ones are asked."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction)
    config = CodaConfig(pool="movies", k=30, use_filter=False)
    result = coda_round(backbone, parts.head, local, client.coda_retrieve, config)
    assert result.kept == result.retrieved > 0


def test_round_accepts_a_head_that_beats_the_old_one(parts: Split) -> None:
    """Labels the activations determine: the new head wins on validation and is kept."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction, n=120)
    result = coda_round(backbone, parts.head, local, None, CodaConfig(pool="movies"))
    assert result.accepted and result.head is not parts.head
    assert result.new_validation_loss < result.old_validation_loss


def test_round_keeps_the_old_head_when_the_new_one_is_worse(parts: Split) -> None:
    """Validation labels opposite to training labels: the trained head loses and is dropped."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction, n=120)
    flipped = local.labels.copy()
    flipped[-30:] = 1.0 - flipped[-30:]  # the validation split is the newest quarter
    result = coda_round(
        backbone,
        parts.head,
        LocalSamples(local.inputs, flipped, local.keys),
        None,
        CodaConfig(pool="movies"),
    )
    assert not result.accepted and result.head is parts.head


def test_round_needs_enough_local_samples(parts: Split) -> None:
    """Fewer local samples than min_local is refused with a LearningError saying to wait."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction, n=5)
    with pytest.raises(LearningError, match="Wait for more"):
        coda_round(backbone, parts.head, local, None, CodaConfig(pool="movies"))


def test_client_maps_pool_errors(client: CloudClient) -> None:
    """An empty pool is a CloudRejected (409); a rate limit is a CloudUnavailable (429)."""
    request = RetrieveRequest(pool="empty", queries=[[1.0] * 16])
    with pytest.raises(CloudRejected) as refused:
        client.coda_retrieve(request)
    assert refused.value.code == "pool_not_ready"

    def limited(_: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "rate_limited", "message": "slow down"}}
        return httpx.Response(429, json=body, headers={"Retry-After": "3"})

    transport = httpx.MockTransport(limited)
    with (
        CloudClient("https://c", token="t", transport=transport) as other,
        pytest.raises(CloudUnavailable),
    ):
        other.coda_retrieve(request)


def test_learner_trains_on_schedule_or_enough_new_data(
    parts: Split, client: CloudClient, tmp_path: Path
) -> None:
    """An event trigger trains only after min_new_samples new samples; a schedule always."""
    backbone = Backbone(parts.backbone)
    everything = local_samples(backbone, parts.direction, n=100)
    available = [40]
    learner = CodaLearner(
        pool="movies",
        head_path=tmp_path / "head.npz",
        initial_head=parts.head,
        local=lambda: everything.take(np.arange(available[0])),
        retrieve=client.coda_retrieve,
        min_new_samples=30,
    )
    assert learner.step(backbone, "event")["trained"] is True
    available[0] = 60
    assert learner.step(backbone, "event")["trained"] is False
    assert learner.step(backbone, "schedule")["trained"] is True
    available[0] = 100
    summary = learner.step(backbone, "event")
    assert summary["trained"] is True and summary["retrieved"] > 0


def test_learner_saves_an_accepted_head(parts: Split, tmp_path: Path) -> None:
    """An accepted head is written to head_path and becomes the learner's head."""
    backbone = Backbone(parts.backbone)
    local = local_samples(backbone, parts.direction, n=120)
    learner = CodaLearner(
        pool="movies",
        head_path=tmp_path / "head.npz",
        initial_head=parts.head,
        local=lambda: local,
        retrieve=None,
        config=replace(CodaConfig(pool="x"), use_pool=False),
    )
    assert learner.step(backbone, "schedule")["accepted"] is True
    assert (tmp_path / "head.npz").exists()
    assert not np.allclose(learner.head.w, parts.head.w)


def test_learner_registry_names_the_missing_learner(tmp_path: Path, parts: Split) -> None:
    """learner_for finds a registered learner and explains how to register a missing one."""
    learner = CodaLearner(
        pool="movies",
        head_path=tmp_path / "h.npz",
        initial_head=parts.head,
        local=lambda: local_samples(Backbone(parts.backbone), parts.direction),
        retrieve=None,
    )
    register_learner("coda-test-task", learner)
    assert learner_for("coda-test-task") is learner
    with pytest.raises(LearningError, match="register_learner"):
        learner_for("never-registered")
