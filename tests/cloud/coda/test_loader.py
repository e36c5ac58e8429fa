"""Filling a pool from MovieLens with samples embedded by the edge backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud.coda.loader import LoadError, load_movielens
from models.build import build_models
from tests.factories import ADMIN, ADMIN_TOKEN, device_headers, register_device
from tests.models.factories import require_movielens


@pytest.fixture(scope="module")
def edge_onnx(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("models")
    return build_models(require_movielens(), out, quick=True).files["edge"].read_bytes()


def test_load_movielens_fills_a_pool_that_answers_retrievals(
    client: TestClient, edge_onnx: bytes
) -> None:
    """300 anonymous samples land in the pool; retrieval returns edge-model features."""
    count = load_movielens(client, ADMIN_TOKEN, require_movielens(), edge_onnx, limit=300)
    assert count == 300
    pool = client.post("/v1/coda/pools/movielens/snapshot", headers=ADMIN).json()
    assert pool["samples"] == 300 and pool["dim"] == 32
    device = device_headers(register_device(client))
    query = [1.0 / 32**0.5] * 32
    body = client.post(
        "/v1/coda/retrieve", headers=device, json={"pool": "movielens", "queries": [query], "k": 5}
    ).json()
    sample = body["samples"][0]
    assert set(sample["features"]) == {"item", "history", "genres"}
    assert len(sample["features"]["history"]) == 20 and sample["label"] in (0.0, 1.0)


def test_load_movielens_reports_a_refused_pool(client: TestClient, edge_onnx: bytes) -> None:
    """A pool name the cloud refuses raises LoadError with the cloud's answer."""
    with pytest.raises(LoadError, match="422"):
        load_movielens(client, ADMIN_TOKEN, require_movielens(), edge_onnx, pool="Bad!", limit=5)


def test_load_command_needs_a_build(tmp_path: Path) -> None:
    """Without edge.onnx in --models the command exits 2 and says to build first."""
    from typer.testing import CliRunner

    from cloud.cli import app

    result = CliRunner().invoke(
        app,
        ["coda", "load-movielens", "--data", str(tmp_path), "--models", str(tmp_path)],
        env={"TANDEM_TOKEN": "x" * 30},
    )
    assert result.exit_code == 2 and "tandem models build" in result.output


def test_split_edge_command_writes_backbone_and_head(tmp_path: Path, edge_onnx: bytes) -> None:
    """`tandem coda split-edge` writes backbone.onnx and head.npz from a build directory."""
    from typer.testing import CliRunner

    from cloud.cli import app

    (tmp_path / "edge.onnx").write_bytes(edge_onnx)
    out = tmp_path / "task"
    result = CliRunner().invoke(
        app, ["coda", "split-edge", "--models", str(tmp_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "backbone.onnx").is_file() and (out / "head.npz").is_file()
