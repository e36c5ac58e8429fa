"""`tandem models build` and `tandem models push`, and registering a build in the registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.cli import app
from cloud.models_cli import PushError, push_models, registry_name
from tests.e2e.live_server import LiveServer, free_port
from tests.factories import ADMIN, ADMIN_TOKEN, onnx_linear, upload_model
from tests.models.factories import require_movielens

runner = CliRunner()
CONTRACT = {
    "edge.onnx",
    "edge_int8.onnx",
    "cloud.onnx",
    "cards.json",
    "vocab.json",
    "edge.sample.npz",
    "cloud.sample.npz",
}
LIVE_TOKEN = "models-cli-admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The output of one `tandem models build --quick`, and the directory it wrote."""
    out = tmp_path_factory.mktemp("models") / "out"
    data = require_movielens()
    result = runner.invoke(
        app, ["models", "build", "--data", str(data), "--out", str(out), "--quick"]
    )
    assert result.exit_code == 0, result.output
    return result.output, out


def _fake_build(directory: Path) -> Path:
    """A build directory with tiny stand-in models: enough for pushing, fast to make."""
    directory.mkdir(parents=True, exist_ok=True)
    cards = {}
    for seed, (name, target) in enumerate(
        [("edge", "device"), ("edge_int8", "device"), ("cloud", "cloud")]
    ):
        (directory / f"{name}.onnx").write_bytes(onnx_linear(seed=seed))
        cards[name] = {
            "name": name,
            "file": f"{name}.onnx",
            "target": target,
            "description": f"stand-in {name}",
            "metrics": {"auc": 0.6 + seed / 10},
            "size_bytes": 100 + seed,
        }
    (directory / "cards.json").write_text(json.dumps(cards))
    return directory


def test_build_writes_the_contract_files_and_prints_each_auc(built: tuple[str, Path]) -> None:
    """`models build --quick` writes every contract file and prints each model's AUC."""
    output, out = built
    assert {p.name for p in out.iterdir()} == CONTRACT
    cards = json.loads((out / "cards.json").read_text())
    for name, entry in cards.items():
        assert f"{entry['metrics']['auc']:.4f}" in output, name
        assert str(entry["size_bytes"]) in output


def test_build_of_a_directory_without_movielens_exits_1(tmp_path: Path) -> None:
    """A --data directory with no ratings.csv exits 1 and names the missing file."""
    result = runner.invoke(
        app, ["models", "build", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "ratings.csv does not exist" in result.output
    assert not (tmp_path / "out").exists()


def test_build_into_a_file_exits_1_naming_it(tmp_path: Path) -> None:
    """An --out that is an existing file is refused with a message naming it."""
    out = tmp_path / "taken"
    out.write_text("not a directory")
    data = require_movielens()
    result = runner.invoke(app, ["models", "build", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 1
    assert f"{out} exists and is not a directory" in result.output


def test_a_negative_seed_exits_2(tmp_path: Path) -> None:
    """--seed -1 is refused before anything is read."""
    result = runner.invoke(
        app, ["models", "build", "--data", str(tmp_path), "--out", str(tmp_path), "--seed", "-1"]
    )
    assert result.exit_code == 2
    assert "--seed" in result.output


def test_build_with_push_but_no_token_exits_2_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--push without --token or TANDEM_TOKEN exits 2 at once, having built nothing."""
    monkeypatch.delenv("TANDEM_TOKEN", raising=False)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["models", "build", "--data", str(tmp_path), "--out", str(out), "--push"]
    )
    assert result.exit_code == 2
    assert "TANDEM_TOKEN" in result.output
    assert not out.exists()


def test_a_prefix_the_registry_would_refuse_exits_2(tmp_path: Path) -> None:
    """A --prefix that makes an invalid model name exits 2 and shows the name."""
    result = runner.invoke(
        app, ["models", "push", str(tmp_path), "--token", "t", "--prefix", "Bad Prefix/"]
    )
    assert result.exit_code == 2
    assert "'Bad Prefix/edge-int8'" in result.output


def test_push_of_a_directory_without_a_build_says_to_build_first(tmp_path: Path) -> None:
    """Pushing a directory with no cards.json exits 1 and names the build command."""
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["models", "push", str(tmp_path), "--url", url, "--token", "t"])
    assert result.exit_code == 1
    assert "tandem models build" in result.output


def test_push_of_a_corrupt_cards_file_says_to_rebuild(tmp_path: Path) -> None:
    """A cards.json that is not JSON exits 1, naming the file and the build command."""
    build = _fake_build(tmp_path / "build")
    (build / "cards.json").write_text("{not json")
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["models", "push", str(build), "--url", url, "--token", "t"])
    assert result.exit_code == 1
    assert "cards.json" in result.output and "tandem models build" in result.output


def test_push_to_an_unreachable_cloud_exits_1(tmp_path: Path) -> None:
    """A cloud that does not answer gives exit 1 and a message naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    build = _fake_build(tmp_path / "build")
    result = runner.invoke(app, ["models", "push", str(build), "--url", url, "--token", "t"])
    assert result.exit_code == 1
    assert f"cannot reach {url}/v1/models" in result.output


def test_push_registers_a_real_build_with_targets_metrics_and_signatures(
    client: TestClient, built: tuple[str, Path]
) -> None:
    """Each model becomes version 1 of its name, with its target, AUC and ONNX inputs."""
    _, out = built
    cards = json.loads((out / "cards.json").read_text())
    pushed = push_models(out, client, ADMIN_TOKEN)
    assert [(p.name, p.version) for p in pushed] == [
        ("movielens-edge", 1),
        ("movielens-edge-int8", 1),
        ("movielens-cloud", 1),
    ]
    for model in ("edge", "edge_int8", "cloud"):
        version = client.get(
            f"/v1/models/{registry_name('movielens-', model)}/versions/1", headers=ADMIN
        ).json()
        assert version["target"] == cards[model]["target"]
        assert version["metrics"]["auc"] == pytest.approx(cards[model]["metrics"]["auc"])
        assert version["size"] == cards[model]["size_bytes"]
        assert [i["name"] for i in version["inputs"]] == [i["name"] for i in cards[model]["inputs"]]


def test_pushing_the_same_build_twice_registers_nothing_new(
    client: TestClient, tmp_path: Path
) -> None:
    """A second push of identical files reports each model unchanged and adds no version."""
    build = _fake_build(tmp_path / "build")
    push_models(build, client, ADMIN_TOKEN, prefix="again-")
    second = push_models(build, client, ADMIN_TOKEN, prefix="again-")
    assert [p.version for p in second] == [None, None, None]
    assert all("unchanged" in p.message for p in second)
    assert (
        client.get("/v1/models/again-cloud", headers=ADMIN).json()["versions"][-1]["version"] == 1
    )


def test_a_new_build_becomes_the_next_version(client: TestClient, tmp_path: Path) -> None:
    """Pushing a build whose cloud model changed registers version 2 of that model."""
    build = _fake_build(tmp_path / "build")
    push_models(build, client, ADMIN_TOKEN)
    (build / "cloud.onnx").write_bytes(onnx_linear(seed=99))
    pushed = push_models(build, client, ADMIN_TOKEN)
    assert [p.version for p in pushed] == [None, None, 2]


def test_a_refused_registration_reports_the_servers_message(
    client: TestClient, tmp_path: Path
) -> None:
    """A name already held by a model of the other target fails with the registry's reason."""
    assert upload_model(client, name="movielens-cloud", target="device").status_code == 201
    build = _fake_build(tmp_path / "build")
    with pytest.raises(PushError, match=r"'movielens-cloud' failed: .*a name keeps one target"):
        push_models(build, client, ADMIN_TOKEN)


def test_a_wrong_admin_key_is_reported(client: TestClient, tmp_path: Path) -> None:
    """A key the cloud does not know fails on the first model, with the server's message."""
    build = _fake_build(tmp_path / "build")
    with pytest.raises(PushError, match="'movielens-edge' failed"):
        push_models(build, client, "not-a-key")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("models-cli")
    with LiveServer(root / "data", env={"TANDEM_ADMIN_TOKEN": LIVE_TOKEN}) as live:
        yield live


@pytest.mark.slow
def test_build_and_push_to_a_live_cloud(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`models build --quick --push` trains, writes, and registers all three models."""
    monkeypatch.setenv("TANDEM_TOKEN", LIVE_TOKEN)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "models",
            "build",
            "--data",
            str(require_movielens()),
            "--out",
            str(out),
            "--quick",
            "--push",
            "--url",
            server.url,
            "--prefix",
            "live-",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "registered 'live-cloud' version 1" in result.output
    listed = httpx.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {LIVE_TOKEN}"}
    ).json()
    assert {m["name"] for m in listed["items"]} >= {"live-edge", "live-edge-int8", "live-cloud"}
