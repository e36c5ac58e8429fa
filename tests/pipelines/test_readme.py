"""The README's Pipelines section: its example spec is valid and its Python runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipelines import Engine, validate

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Pipelines\n(.*?)^## ", text, re.S | re.M)
    assert match, "README.md lost its Pipelines section"
    return match.group(1)


def test_the_example_spec_is_valid_and_runs() -> None:
    """The complete example validates and processes an event of its own kind."""
    (block,) = re.findall(r"```json\n(.*?)```", section(), re.S)
    spec = validate(json.loads(block))
    assert spec.triggers == ["five_star_streak", "comedy_then_horror", "disappointed"]
    event = {
        "id": "r1",
        "type": "rating",
        "ts": 1.7e9,
        "attrs": {"user": 1, "rating": 5, "item": 9},
    }
    names = {f.name for f in Engine([spec]).process(event).features}
    assert names == {"ratings_1h:1", "mean_rating_1d:1", "session_genres:1", "last_items:1"}


def test_the_python_example_runs() -> None:
    """The Python block runs as written."""
    (block,) = re.findall(r"```python\n(.*?)```", section(), re.S)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102  # our own documentation
