"""The engine: idempotent by id, event time and lateness, clock skew, bad events, many specs."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import Engine, Limits, SpecError, run_batch
from tests.pipelines.factories import ev, spec, step, trigger

COUNT = {"op": "aggregate", "feature": "n", "fn": "count"}


def count_after(engine: Engine, events: list[Any]) -> Any:
    value = None
    for event in events:
        for feature in engine.process(event).features:
            value = feature.value
    return value


def test_a_repeated_id_is_processed_once() -> None:
    """An event id seen before is dropped and counted as a duplicate."""
    engine = Engine(spec(COUNT))
    first = ev("x", 1)
    assert count_after(engine, [first, first, ev("x", 2)]) == 2
    assert engine.stats.duplicates == 1 and engine.stats.events == 2


def test_seen_ids_are_capped_oldest_first() -> None:
    """Past max_seen_ids the oldest id is forgotten: it counts again."""
    engine = Engine(spec(COUNT, lateness=100), limits=Limits(max_seen_ids=2))
    old = ev("x", 1)
    assert count_after(engine, [old, ev("x", 2), ev("x", 3), old]) == 4


def test_events_later_than_the_lateness_are_dropped_and_counted() -> None:
    """An event older than the latest time minus lateness is late: dropped, counted."""
    engine = Engine(spec(COUNT, lateness="10s"))
    assert count_after(engine, [ev("x", 100), ev("x", 95), ev("x", 80)]) == 2
    assert engine.stats.late == 1


def test_one_far_future_event_does_not_make_the_rest_late() -> None:
    """A single event a year ahead is processed but does not move event time."""
    engine = Engine(spec(COUNT, lateness="10s"))
    assert count_after(engine, [ev("x", 100), ev("x", 100 + 365 * 86400), ev("x", 101)]) == 3
    assert (engine.stats.skewed, engine.stats.late) == (1, 0)


def test_a_confirmed_clock_jump_moves_event_time() -> None:
    """clock_confirm events in a row far ahead mean the clock really moved."""
    engine = Engine(spec(COUNT), limits=Limits(clock_confirm=2))
    jump = 10 * 86400
    count_after(engine, [ev("x", 100), ev("x", jump), ev("x", jump + 1), ev("x", 150)])
    assert engine.stats.clock_resets == 1 and engine.stats.late == 1


def test_a_clock_set_back_restarts_event_time() -> None:
    """clock_confirm late events in a row restart event time (state from the future goes)."""
    engine = Engine(spec(COUNT), limits=Limits(clock_confirm=3))
    assert (
        count_after(engine, [ev("x", 1000), ev("x", 10), ev("x", 11), ev("x", 12), ev("x", 13)])
        == 2
    )
    assert engine.stats.clock_resets == 1 and engine.stats.late == 2


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "text",
        {"id": 1, "type": "x", "ts": 1, "attrs": {}},
        {"id": "a", "type": "", "ts": 1, "attrs": {}},
        {"id": "a", "type": "x", "ts": float("nan"), "attrs": {}},
        {"id": "a", "type": "x", "ts": True, "attrs": {}},
        {"id": "a", "type": "x", "ts": 1, "attrs": []},
        {"id": "a", "type": "x", "ts": 1, "attrs": {1: 2}},
    ],
)
def test_a_bad_event_is_counted_never_raised(bad: Any) -> None:
    """Anything that is not an event yields nothing and counts as invalid."""
    engine = Engine(spec(COUNT))
    outputs = engine.process(bad)
    assert (outputs.features, outputs.firings) == ([], [])
    assert engine.stats.invalid == 1


def test_hostile_attribute_values_do_not_break_matching() -> None:
    """Nested or unhashable attribute values simply match nothing."""
    stages = [
        trigger("t", steps=[step("a", g={"contains": "x"}), step("a", k={"in": ["y"]})], within=9)
    ]
    engine = Engine(spec(*stages))
    engine.process(
        {"id": "1", "type": "a", "ts": 1, "attrs": {"g": [{"x": 1}, ["x"]], "k": {"y": 1}}}
    )
    assert engine.stats.events == 1


def test_filters_and_maps_shape_what_later_stages_see() -> None:
    """filter drops events; map projects, renames and sets attributes for later stages."""
    stages: list[dict[str, Any]] = [
        {"op": "filter", "type": "view", "where": {"price": {"gt": 0}}},
        {
            "op": "map",
            "project": ["price", "sku"],
            "rename": {"sku": "item"},
            "set": {"src": "app"},
        },
        {"op": "aggregate", "feature": "items", "fn": "last_n", "attr": "item", "n": 5},
        {"op": "aggregate", "feature": "srcs", "fn": "distinct", "attr": "src"},
    ]
    engine = Engine(spec(*stages))
    for event in [
        ev("view", 1, sku="a", price=1),
        ev("buy", 2, sku="b", price=1),
        ev("view", 3, sku="c", price=0),
    ]:
        engine.process(event)
    engine.process(ev("view", 4, sku="d", price=2, secret="x"))
    assert engine.drain() == []
    result = run_batch(
        spec(*stages), [ev("view", 1, sku="a", price=1), ev("view", 4, sku="d", price=2)]
    )
    assert {n: f.value for n, f in result.features.items()} == {"items": ["a", "d"], "srcs": 1}


def test_specs_run_together_and_share_their_common_stages() -> None:
    """Two specs with the same filter each get their own outputs from one pass."""
    one = spec(
        {"op": "filter", "type": "a"},
        {"op": "aggregate", "feature": "n1", "fn": "count"},
        name="one",
    )
    two = spec(
        {"op": "filter", "type": "a"},
        trigger("t2", steps=[step("a"), step("a")], within=9),
        name="two",
    )
    result = run_batch([one, two], [ev("a", 1), ev("b", 2), ev("a", 3)])
    assert result.features["n1"].value == 2
    assert [f.trigger for f in result.firings] == ["t2"]


def test_specs_that_define_one_name_twice_are_refused_together() -> None:
    """A feature or trigger two specs define is refused, naming both pipelines."""
    one = spec(COUNT, name="one")
    two = spec(COUNT, name="two")
    with pytest.raises(SpecError) as caught:
        Engine([one, two])
    assert caught.value.problems == [
        "specs[1]: the feature 'n' of pipeline 'two' is also defined by pipeline 'one'; "
        "rename one of them"
    ]


def test_invalid_specs_are_named_by_their_index() -> None:
    """Problems of several specs carry the spec's index in their path."""
    with pytest.raises(SpecError) as caught:
        Engine([spec(COUNT), {"version": 1, "name": "x", "stages": [{"op": "?"}]}])
    assert caught.value.problems[0].startswith("specs[1].stages[0].op:")


def test_a_batch_gives_the_outputs_of_the_stream() -> None:
    """run_batch over events equals process() called on each, last value per feature."""
    stages: list[dict[str, Any]] = [
        {"op": "key_by", "attr": "u"},
        {
            "op": "aggregate",
            "feature": "n",
            "fn": "count",
            "window": {"kind": "tumbling", "size": 5},
        },
        trigger("ab", steps=[step("a"), step("b")], within=3),
    ]
    events = [ev(t, i, u=i % 3) for i, t in enumerate("abababbbaab")]
    engine = Engine(spec(*stages))
    features: dict[str, Any] = {}
    firings = []
    for event in events:
        out = engine.process(event)
        features.update((f.name, f) for f in out.features)
        firings += out.firings
    result = run_batch(spec(*stages), events)
    assert result.features == features and result.firings == firings
    assert result.to_json()["firings"][0]["events"][0]["type"] == "a"
