"""The README's shell blocks, found by their marker and run against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def readme_blocks(marker: str) -> list[str]:
    """The bash blocks that follow each `<!-- {marker} ... -->` comment, in order."""
    readme = (ROOT / "README.md").read_text()
    return re.findall(rf"<!-- {re.escape(marker)}.*?-->\s*```bash\n(.*?)```", readme, re.S)


def run_against(
    script: str, server: LiveServer, env: dict[str, str], *, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash (-euo pipefail) from the repository root, with this
    interpreter's bin directory standing in for `.venv/bin/` and ``env`` on top of a
    TANDEM_-free environment that points at ``server``'s data directory."""
    script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    environment |= {"TANDEM_DATA_DIR": str(server.data_dir), **env}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
