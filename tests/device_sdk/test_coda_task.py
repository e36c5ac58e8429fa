"""The example task `movielens-coda`, deployed through FakeCloud to a real Device."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from device_sdk import Backbone, CloudClient, CodaLearner, Device, register_learner
from device_sdk.testing import DEVICE_TOKEN, FakeCloud
from tests.device_sdk.coda_factories import inputs, labels, local_samples, split

TASK = Path(__file__).resolve().parents[2] / "examples" / "tasks" / "movielens_coda"


def test_deployed_task_runs_a_coda_round_for_the_app(tmp_path: Path) -> None:
    """The task, deployed with its backbone, trains through the app's learner and emits it."""
    parts = split()
    task_dir = tmp_path / "task"
    shutil.copytree(TASK, task_dir)
    (task_dir / "backbone.onnx").write_bytes(parts.backbone)
    fake = FakeCloud()
    backbone = Backbone(parts.backbone)
    arrays = inputs(200, seed=3)
    y = labels(backbone, arrays, parts.direction)
    embeddings = backbone.embeddings(arrays)
    for i in range(200):
        features = {name: arrays[name][i].tolist() for name in arrays}
        fake.coda.add("movielens", features, float(y[i]), embeddings[i])
    local = local_samples(backbone, parts.direction, n=80)
    client = CloudClient("http://cloud", token=DEVICE_TOKEN, transport=fake.transport)
    register_learner(
        "movielens-coda",
        CodaLearner(
            pool="movielens",
            head_path=tmp_path / "head.npz",
            initial_head=parts.head,
            local=lambda: local,
            retrieve=client.coda_retrieve,
        ),
    )
    version = fake.publish(task_dir)
    fake.deploy("movielens-coda", version)
    with Device(
        "http://cloud",
        enrollment_key=fake.enrollment_key,
        data_dir=tmp_path / "device",
        transport=fake.transport,
    ) as device:
        device.wait_for(lambda s: s.installed.get("movielens-coda") == version, timeout_s=10.0)
        summary = device.predict("movielens-coda", {})
    client.close()
    assert summary["trained"] is True and summary["retrieved"] > 0
    assert len(fake.coda.retrievals) == 1
    assert np.isfinite(summary["validation_loss_after"])
