"""The README's shop app demo, run as written against a live `tandem serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.live_server import LiveServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def demo_command() -> str:
    """The command in the README block marked `<!-- shop demo ... -->`."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- shop demo.*?-->\s*```bash\n(.*?)```", readme, re.S)
    assert len(blocks) == 1, "README.md lost its shop demo block"
    return blocks[0]


def test_readme_shop_demo_runs(tmp_path: Path) -> None:
    """On a fresh server, the demo publishes, deploys, installs the task and ranks with it."""
    data_dir = tmp_path / "data"
    script = demo_command().replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    with LiveServer(data_dir) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        env |= {"TANDEM_DATA_DIR": str(data_dir), "TANDEM_URL": server.url}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
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
