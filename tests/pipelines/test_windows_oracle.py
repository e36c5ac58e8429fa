"""The compiled aggregates against a plain model of the same windows.

The engine compiles every aggregate into its group's ``feed`` (:mod:`pipelines.codegen`).
The model here keeps each key's windows as :mod:`pipelines.windows` describes them and
takes each event with the interpreted operations of :mod:`pipelines.aggregates` (``add``,
``merge``, ``result``), so a random stream (out of order, mixed value types, several
keys) must give the same feature values either way, whenever they are written.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipelines import Engine, Limits
from pipelines.aggregates import Function, function
from tests.pipelines.factories import ev, spec

WINDOWS: list[dict[str, Any] | None] = [
    None,
    {"kind": "tumbling", "size": 10},
    {"kind": "sliding", "size": 30, "slide": 10},
    {"kind": "session", "gap": 4},
]
FUNCTIONS: list[dict[str, Any]] = [
    {"fn": "count"},
    {"fn": "count", "attr": "v"},
    {"fn": "sum", "attr": "v"},
    {"fn": "mean", "attr": "v"},
    {"fn": "min", "attr": "v"},
    {"fn": "max", "attr": "v"},
    {"fn": "distinct", "attr": "tags"},
    {"fn": "last_n", "attr": "v", "n": 3},
    {"fn": "top_k", "attr": "tags", "k": 2},
]


class Model:
    """One aggregate stage's windows per key, updated step by step."""

    def __init__(self, stage: dict[str, Any]) -> None:
        self.window = stage.get("window")
        self.attr = stage.get("attr")
        self.fn: Function = function(
            stage["fn"], attr=self.attr, n=stage.get("n", 0), k=stage.get("k", 0),
            max_distinct=Limits().max_distinct,
        )  # fmt: skip
        self.keys: dict[Any, list[Any]] = {}

    def take(self, key: Any, ts: float, attrs: dict[str, Any]) -> None:
        fn, w = self.fn, self.window or {}
        value = attrs.get(self.attr) if self.attr is not None else None
        kind = w.get("kind", "none")
        slot = self.keys.get(key)
        if kind == "none":
            slot = self.keys.setdefault(key, [fn.new()])
            fn.add(slot[0], value)
        elif kind == "tumbling":
            start = ts - ts % w["size"]
            slot = self.keys.setdefault(key, [start, fn.new()])
            if start > slot[0]:
                slot[:] = [start, fn.new()]
            if start == slot[0]:
                fn.add(slot[1], value)
        elif kind == "sliding":
            size, slide = w["size"], w["slide"]
            pane = ts - ts % slide
            slot = self.keys.setdefault(key, [pane, {}, fn.new()])
            if pane > slot[0]:
                slot[0] = pane
                kept = {p: s for p, s in slot[1].items() if p >= pane - size + slide}
                if len(kept) < len(slot[1]):
                    slot[1] = kept
                    slot[2] = fn.new()
                    for p in sorted(kept):
                        fn.merge(slot[2], kept[p])
            if pane > slot[0] - size:
                fn.add(slot[1].setdefault(pane, fn.new()), value)
                fn.add(slot[2], value)
        else:
            gap = w["gap"]
            slot = self.keys.setdefault(key, [ts, ts, fn.new()])
            if ts > slot[1] + gap:
                slot[:] = [ts, ts, fn.new()]
            if ts >= slot[0] - gap:
                slot[0], slot[1] = min(slot[0], ts), max(slot[1], ts)
                fn.add(slot[2], value)

    def values(self) -> dict[str, Any]:
        part = {None: 0, "tumbling": 1}.get(self.window and self.window["kind"], 2)
        return {f"f:{key}": self.fn.result(slot[part]) for key, slot in self.keys.items()}


def stream(rng: random.Random) -> list[Any]:
    ts, out = 0.0, []
    for _ in range(300):
        ts += rng.choice([0, 0.5, 1, 3, 9])
        value = rng.choice([0, 1, 2.5, 4, 7, None, "x", True, float("nan")])
        tags = rng.choice([["a", "b"], ["b"], ["c", "a", "a"], [], "a", 3, None, [1, "b"]])
        out.append(ev("x", ts - rng.choice([0, 0, 2, 7]), u=rng.randrange(4), v=value, tags=tags))
    return out


def same(a: Any, b: Any) -> bool:
    return bool(a == b or (a != a and b != b))  # NaN means NaN


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "none" if w is None else w["kind"])
@pytest.mark.parametrize("seed", range(4))
def test_compiled_aggregates_end_as_the_model(window: dict[str, Any] | None, seed: int) -> None:
    """Every function in every window kind, fed one by one and in batches, writes the
    feature values of the model at that point, key by key."""
    rng = random.Random(seed)  # noqa: S311  # reproducible test data
    events = stream(rng)
    for i, fn in enumerate(FUNCTIONS):
        stage = {**fn, **({"window": window} if window else {})}
        sink = {"op": "aggregate", "feature": "f", "key_by": "u", **stage}
        for batch in (1, 16):
            model = Model(stage)
            engine = Engine(spec(sink, lateness=10_000, name=f"t{i}"))
            written: set[str] = set()
            for start in range(0, len(events), batch):
                chunk = events[start : start + batch]
                for event in chunk:
                    model.take(event.attrs["u"], event.ts, event.attrs)
                expected = model.values()
                for feature in engine.process_many(chunk).features:
                    written.add(feature.name)
                    value = expected[feature.name]
                    assert same(feature.value, value), (stage, batch, feature, value)
            assert written == set(model.values()), stage
