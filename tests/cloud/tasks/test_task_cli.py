"""`tandem task pack` and `tandem task publish`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cloud.cli import app
from device_sdk import bundle
from tests.e2e.live_server import LiveServer, free_port
from tests.task_factories import make_task_dir

runner = CliRunner()
HELLO = Path(__file__).parents[3] / "examples" / "tasks" / "hello"
TOKEN = "task-cli-admin-token-0123456789abcdef"


def test_pack_writes_the_bundle_and_prints_path_and_digest(tmp_path: Path) -> None:
    """`task pack DIR --out FILE` writes the bundle and prints its path, size and sha256."""
    out = tmp_path / "hello.tar.gz"
    result = runner.invoke(app, ["task", "pack", str(HELLO), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert bundle.read(data).manifest.name == "hello"
    assert str(out) in result.output
    assert hashlib.sha256(data).hexdigest() in result.output
    assert f"{len(data)} bytes" in result.output


def test_pack_names_the_bundle_after_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --out the bundle is `<name>-<version>.tar.gz` in the current directory."""
    task = make_task_dir(tmp_path, name="rerank", version=7)
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["task", "pack", str(task)]).exit_code == 0
    assert (tmp_path / "rerank-7.tar.gz").is_file()


def test_pack_of_a_bad_directory_exits_1_with_the_reason(tmp_path: Path) -> None:
    """A task whose entry script is missing exits 1 and names the missing file."""
    task = make_task_dir(tmp_path, entry="run.py")
    result = runner.invoke(app, ["task", "pack", str(task)])
    assert result.exit_code == 1
    assert "run.py" in result.output


def test_pack_of_a_missing_directory_exits_1(tmp_path: Path) -> None:
    """A path that is not a directory exits 1 and says a task directory is needed."""
    result = runner.invoke(app, ["task", "pack", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "not a directory" in result.output


def test_publish_without_a_token_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publishing with neither --token nor TANDEM_TOKEN exits 2 and says which to set."""
    monkeypatch.delenv("TANDEM_TOKEN", raising=False)
    result = runner.invoke(app, ["task", "publish", str(HELLO)])
    assert result.exit_code == 2
    assert "TANDEM_TOKEN" in result.output


def test_publish_to_an_unreachable_cloud_exits_1() -> None:
    """A cloud that does not answer gives exit 1 and a message naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["task", "publish", str(HELLO), "--url", url, "--token", "t"])
    assert result.exit_code == 1
    assert f"cannot reach {url}/v1/tasks" in result.output


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("task-cli")
    with LiveServer(root / "data", env={"TANDEM_ADMIN_TOKEN": TOKEN}) as live:
        yield live


@pytest.mark.slow
def test_publish_a_directory_to_a_live_cloud(server: LiveServer) -> None:
    """`task publish DIR` packs, uploads and prints the published name, version and digest."""
    result = runner.invoke(
        app, ["task", "publish", str(HELLO), "--url", server.url, "--token", TOKEN]
    )
    assert result.exit_code == 0, result.output
    published = httpx.get(
        f"{server.url}/v1/tasks/hello/versions/1", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert "published task 'hello' version 1" in result.output
    assert published["bundle_sha256"] in result.output


@pytest.mark.slow
def test_publish_a_packed_bundle_reports_the_servers_error(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing a taken version from a .tar.gz exits 1 with the server's message."""
    data = bundle.pack(make_task_dir(tmp_path, name="taken", version=1))[1]
    path = tmp_path / "taken-1.tar.gz"
    path.write_bytes(data)
    monkeypatch.setenv("TANDEM_URL", server.url)
    monkeypatch.setenv("TANDEM_TOKEN", TOKEN)
    assert runner.invoke(app, ["task", "publish", str(path)]).exit_code == 0
    again = runner.invoke(app, ["task", "publish", str(path)])
    assert again.exit_code == 1
    assert "versions are immutable" in again.output
