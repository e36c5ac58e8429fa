"""The README's curl quickstart, run as written against a live `tandem serve`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.live_server import LiveServer
from tests.e2e.readme_blocks import readme_blocks, run_against

pytestmark = pytest.mark.slow


def quickstart_script() -> str:
    """Every README block marked `<!-- quickstart ... -->`, in order, as one script."""
    blocks = readme_blocks("quickstart")
    assert len(blocks) >= 2, "README.md lost its quickstart blocks"
    return "\n".join(blocks)


def test_readme_quickstart_runs(tmp_path: Path) -> None:
    """Every command in the README's quickstart succeeds against a fresh server."""
    data_dir = tmp_path / "data"
    script = (
        quickstart_script()
        .replace("API=http://127.0.0.1:8000", "API=$TANDEM_TEST_API")
        # Before run_against swaps in the interpreter's path, which may itself be in /tmp.
        .replace("/tmp/", f"{tmp_path}/")
    )
    with LiveServer(data_dir) as server:
        result = run_against(script, server, {"TANDEM_TEST_API": server.url}, timeout_s=120)
        log = server.log()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log}"
    assert "downloaded model matches" in result.stdout
    assert '"platform":"android"' in result.stdout
    assert '"state":"rolled_back"' in result.stdout
