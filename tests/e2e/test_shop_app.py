"""The README's shop app demo, run as written against a live `tandem serve`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.live_server import LiveServer
from tests.e2e.readme_blocks import readme_blocks, run_against

pytestmark = pytest.mark.slow


def demo_command() -> str:
    """The command in the README block marked `<!-- shop demo ... -->`."""
    blocks = readme_blocks("shop demo")
    assert len(blocks) == 1, "README.md lost its shop demo block"
    return blocks[0]


def test_readme_shop_demo_runs(tmp_path: Path) -> None:
    """On a fresh server, the demo publishes, deploys, installs the task and ranks with it."""
    data_dir = tmp_path / "data"
    with LiveServer(data_dir) as server:
        result = run_against(demo_command(), server, {"TANDEM_URL": server.url}, timeout_s=180)
        log = server.log()
    output = result.stdout
    assert result.returncode == 0, f"{output}\n{result.stderr}\n{log}"
    assert "published task shop-rerank version 1" in output
    assert "task shop-rerank version 1 installed" in output
    ranking = re.findall(r"^\s+\d\. (.+?)\s+-?\d+\.\d+$", output, re.M)
    # The viewed items rank first, then the best rated for their price.
    assert ranking == ["water bottle", "head torch", "wool socks", "rain jacket", "trail shoes"]
    assert "events uploaded" in output
    assert output.rstrip().endswith("shop app: done")
