"""The batch path: feed_many / process_many give exactly what feed / process give per event.

The streams are hostile on purpose: duplicates, late events, a far-future reading, a clock
set back, bad events, JSON events, keys past the key cap (eviction) and two latenesses,
so the inline fast path of ``feed_many`` and every fallback to ``feed`` are exercised.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipelines import Engine, Event, Limits, run_batch
from pipelines.codegen import compile_check
from pipelines.patterns import PatternSet
from pipelines.spec import Step
from tests.pipelines.factories import ev, spec, step, trigger

LIMITS = Limits(max_keys=4, max_seen_ids=50, max_clock_jump_s=500, clock_confirm=2)


def specs() -> list[dict[str, Any]]:
    keyed: list[dict[str, Any]] = [
        {"op": "filter", "type": ["a", "b"]},
        {"op": "key_by", "attr": "u"},
        {"op": "aggregate", "feature": "n", "fn": "count",
         "window": {"kind": "tumbling", "size": 20}},
        {"op": "aggregate", "feature": "mean_v", "fn": "mean", "attr": "v",
         "window": {"kind": "sliding", "size": 30, "slide": 10}},
        {"op": "aggregate", "feature": "top_g", "fn": "top_k", "attr": "g", "k": 2,
         "window": {"kind": "session", "gap": 15}},
        {"op": "aggregate", "feature": "last", "fn": "last_n", "attr": "v", "n": 3},
        trigger("ab", steps=[step("a"), step("b", v={"gte": 3})], within=20),
        trigger("aaa", repeat={"times": 3, "step": step("a")}, within=30),
        trigger("a_no_b", steps=[step("a", g={"contains": "x"})], within=10,
                **{"not": step("b")}),
    ]  # fmt: skip
    unkeyed = [
        {"op": "aggregate", "feature": "total", "fn": "sum", "attr": "v"},
        trigger("any_hi", steps=[step(None, v={"gt": 4}), step(None, v={"lt": 1})], within=40),
    ]
    return [spec(*keyed, lateness=5, name="keyed"), spec(*unkeyed, lateness=0, name="flat")]


def stream(seed: int) -> list[Any]:
    rng = random.Random(seed)  # noqa: S311  # reproducible test data
    ts = 100.0
    out: list[Any] = []
    for i in range(400):
        ts += rng.choice([0, 0.5, 1, 3])
        when = ts - rng.choice([0, 0, 0, 2, 9])
        roll = rng.random()
        if roll < 0.01:
            when = ts + 10_000  # a far-future reading (a clock decision)
        elif roll < 0.02:
            when = ts - 5_000  # a reading from before the clock was set back
        attrs = {"u": rng.randrange(7), "v": rng.randrange(6), "g": rng.sample("xyz", 2)}
        event = ev(rng.choice("abc"), when, **attrs)
        if rng.random() < 0.05 and out:
            event = rng.choice([e for e in out if isinstance(e, Event)] or [event])  # duplicate
        if rng.random() < 0.02:
            out.append({"id": f"j{i}", "type": "a", "ts": when, "attrs": attrs})  # JSON
        elif rng.random() < 0.01:
            out.append({"id": 3, "type": "a", "ts": when})  # not an event
        out.append(event)
    return out


# Both specs (two latenesses: the batch loop calls the walks), or one (its walk is one
# group behind filters: the batch loop inlines that group's feed).
CHOICES = {"both": (0, 2), "keyed": (0, 1), "flat": (1, 2)}


def one_by_one(
    events: list[Any], choice: str = "both"
) -> tuple[list[Any], dict[str, Any], dict[str, int]]:
    engine = Engine(specs()[slice(*CHOICES[choice])], limits=LIMITS)
    firings: list[Any] = []
    features: dict[str, Any] = {}
    for event in events:
        outputs = engine.process(event)
        firings += outputs.firings
        features.update((f.name, f) for f in outputs.features)
    return firings, features, engine.stats.as_dict()


@pytest.mark.parametrize("choice", sorted(CHOICES))
@pytest.mark.parametrize("seed", range(6))
def test_batches_of_any_size_give_the_outputs_of_one_by_one(seed: int, choice: str) -> None:
    """feed_many in batches of random sizes, drained after each, fires the same triggers in
    the same order, ends with the same feature values and counts the same stats as
    process() on each event (evicted and reset keys included)."""
    events = stream(seed)
    expected = one_by_one(events, choice)
    rng = random.Random(seed)  # noqa: S311  # reproducible test data
    engine = Engine(specs()[slice(*CHOICES[choice])], limits=LIMITS)
    firings: list[Any] = []
    features: dict[str, Any] = {}
    i = 0
    while i < len(events):
        size = rng.choice([1, 2, 7, 50, 200])
        outputs = engine.process_many(events[i : i + size])
        firings += outputs.firings
        features.update((f.name, f) for f in outputs.features)
        i += size
    assert (firings, features, engine.stats.as_dict()) == expected
    assert expected[0] and engine.stats.clock_resets
    assert engine.stats.evicted_keys or choice == "flat"  # the flat spec has no key


def test_run_batch_writes_what_the_device_wrote_last() -> None:
    """run_batch (one feed_many, one drain) ends with every feature's last value, even for
    keys evicted or reset along the way."""
    events = stream(11)
    firings, features, stats = one_by_one(events)
    result = run_batch(specs(), events, limits=LIMITS)
    assert (result.firings, result.features, result.stats.as_dict()) == (
        firings,
        features,
        stats,
    )


def test_a_full_plan_cache_changes_no_firing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for a single plan the cache is cleared on nearly every event: the
    firings are those of a cache that keeps every plan."""
    events = [e for e in stream(3) if isinstance(e, Event)]
    expected = one_by_one(events)[0]
    monkeypatch.setattr("pipelines.patterns.MAX_PLANS", 1)
    engine = Engine(specs(), limits=LIMITS)
    assert engine.feed_many(events) == expected
    sets = [g.patterns for g in engine._groups if isinstance(g.patterns, PatternSet)]
    assert sets and all(len(s.plans) <= 1 for s in sets)


def test_a_mask_names_exactly_the_steps_an_event_matches() -> None:
    """The step mask of an event has the bits of the steps that hold for it: typed and
    untyped steps, anchored (eq, in, contains) and range-only ones, a value listed twice,
    values a memo already holds and look-alikes of them (2.0, True, "2", [2], NaN)."""
    stages = [
        trigger("t1", steps=[step("a", g={"contains": "x"}, v={"gte": 2})], within=9),
        trigger("t2", steps=[step(None, v={"in": [1, 2]})], within=9),
        trigger("t3", steps=[step("b", v={"lt": 3})], within=9),
        trigger("t4", steps=[step(None, k="s")], within=9),
    ]
    patterns = Engine(spec(*stages))._groups[0].patterns
    assert isinstance(patterns, PatternSet)

    def matched(event: Event) -> set[int]:
        return {sid for sid, s in enumerate(patterns.steps) if _holds(s, event)}

    for event in [
        ev("a", 1, g=["x", "x"], v=2, k="s"),
        ev("a", 1, g="x", v=1.0),
        ev("b", 1, v=2),
        ev("c", 1, v=True, k="s"),
        ev("a", 1, g=["y"], v=5),
        # The same values again, and their look-alikes, now that the memos hold them.
        ev("b", 1, v=2),
        ev("b", 1, v=2.0),
        ev("b", 1, v=True),
        ev("b", 1, v="2"),
        ev("b", 1, v=[2]),
        ev("b", 1, v=float("nan")),
        ev("b", 1, v=float("nan")),
        ev("b", 1),
    ]:
        mask = patterns.mask(event)
        assert {sid for sid in range(mask.bit_length()) if mask >> sid & 1} == matched(event)


def _holds(s: Step, event: Event) -> bool:
    check = compile_check(s.where)
    return (s.types is None or event.type in s.types) and (check is None or check(event.attrs))


def test_filters_in_front_of_one_group_still_filter() -> None:
    """A walk that is only filters (type and where) before one group lets through only
    the events that pass every filter."""
    stages: list[dict[str, Any]] = [
        {"op": "filter", "type": ["a", "b"]},
        {"op": "filter", "where": {"v": {"gte": 2}, "g": {"contains": "x"}}},
        {"op": "key_by", "attr": "u"},
        {"op": "aggregate", "feature": "n", "fn": "count"},
        trigger("two", repeat={"times": 2, "step": step("a")}, within=9),
    ]
    events = [
        ev("a", 1, u=1, v=2, g=["x"]),
        ev("c", 2, u=1, v=2, g=["x"]),  # type filtered out
        ev("a", 3, u=1, v=1, g=["x"]),  # where filtered out
        ev("b", 4, u=1, v=5, g="x"),
        ev("a", 5, u=1, v=3, g=["y", "x"]),
    ]
    result = run_batch(spec(*stages), events)
    assert result.features["n:1"].value == 3
    assert [[e.id for e in f.events] for f in result.firings] == [[events[0].id, events[4].id]]
