"""The README's curl quickstart, run as written against a live `tandem serve`."""

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


def quickstart_script() -> str:
    """Every README block marked `<!-- quickstart ... -->`, in order, as one script."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- quickstart.*?-->\s*```bash\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2, "README.md lost its quickstart blocks"
    return "\n".join(blocks)


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    """Every command in the README's quickstart succeeds against a fresh server."""
    data_dir = tmp_path / "data"
    script = (
        quickstart_script()
        .replace("API=http://127.0.0.1:8000", "API=$TANDEM_TEST_API")
        # /tmp first: the interpreter itself may live under /tmp (a fresh clone there).
        .replace("/tmp/", f"{tmp_path}/")
        .replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    )
    with LiveServer(data_dir) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
        env |= {"TANDEM_DATA_DIR": str(data_dir), "TANDEM_TEST_API": server.url}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        log = server.log()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log}"
    assert "downloaded model matches" in result.stdout
    assert '"platform":"android"' in result.stdout
    assert '"state":"rolled_back"' in result.stdout
