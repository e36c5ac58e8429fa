"""The README's routing block (observe, train, route, watch with curl), run as written
against a live `tandem serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live_server import LiveServer
from tests.e2e.readme_blocks import readme_blocks, run_against

pytestmark = pytest.mark.slow


def json_values(text: str) -> list[Any]:
    """Every JSON value in ``text``: curl prints its answers back to back."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (start := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, start)
        values.append(value)
    return values


def test_readme_routing_block_runs(tmp_path: Path) -> None:
    """Every command succeeds; the hard request goes to the cloud, explained by its words."""
    blocks = readme_blocks("routing")
    assert len(blocks) == 1, "README.md lost its routing block"
    script = (
        blocks[0]
        .replace("API=http://127.0.0.1:8000", "API=$TANDEM_TEST_API")
        .replace("/tmp/", f"{tmp_path}/")
    )
    with LiveServer(tmp_path / "data") as server:
        result = run_against(script, server, {"TANDEM_TEST_API": server.url}, timeout_s=120)
        log = server.log()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log}"
    answers = json_values(result.stdout)
    single = next(a for a in answers if a.get("decision"))
    assert single["decision"]["target"] == "cloud"
    pushes = single["decision"]["key_tokens"]["correct"]
    assert any("integral" in t["token"] and t["push"] < 0 for t in pushes)
    batch = next(a for a in answers if a.get("items") and "router" in a)
    assert [d["target"] for d in batch["items"]] == ["edge", "cloud"]
    stats = answers[-1]["stats"]
    assert stats["requests"] == 3 and stats["budget"] == 0.3
