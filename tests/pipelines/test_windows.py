"""Aggregates and windows: each function, each window kind, per key, in event time."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import Engine, Limits
from tests.pipelines.factories import ev, spec


def features(stage: dict[str, Any], events: list[Any], **limits: Any) -> dict[str, Any]:
    """The last value of each feature ``stage`` writes over ``events``."""
    stages = {"op": "aggregate", "feature": "f", **stage}
    engine = Engine(spec(stages, lateness="1m"), limits=Limits(**limits))
    out: dict[str, Any] = {}
    for event in events:
        for feature in engine.process(event).features:
            out[feature.name] = feature.value
    return out


@pytest.mark.parametrize(
    ("stage", "value"),
    [
        ({"fn": "count"}, 4),
        ({"fn": "count", "attr": "v"}, 3),
        ({"fn": "sum", "attr": "v"}, 7.5),
        ({"fn": "mean", "attr": "v"}, 3.75),
        ({"fn": "min", "attr": "v"}, 2.0),
        ({"fn": "max", "attr": "v"}, 5.5),
        ({"fn": "distinct", "attr": "tags"}, 3),
        ({"fn": "last_n", "attr": "tags", "n": 2}, [["b"], ["c", "a"]]),
        ({"fn": "top_k", "attr": "tags", "k": 2}, [["a", 2], ["b", 2]]),
    ],
)
def test_each_function_aggregates_as_documented(stage: dict[str, Any], value: Any) -> None:
    """count/sum/mean/min/max skip what they cannot read; lists count per element."""
    events = [
        ev("x", 1, v=2, tags=["a", "b"]),
        ev("x", 2, v="n/a", tags=["b"]),
        ev("x", 3, v=5.5, tags=["c", "a"]),
        ev("x", 4, tags=None),
    ]
    assert features(stage, events) == {"f": value}


def test_mean_of_nothing_is_null() -> None:
    """A mean (or min, max) over no number is null, not an error."""
    assert features({"fn": "mean", "attr": "v"}, [ev("x", 1)]) == {"f": None}


def test_a_tumbling_window_restarts_at_its_boundary() -> None:
    """The feature is the count of the window holding the key's latest event."""
    window = {"kind": "tumbling", "size": "10s"}
    events = [ev("x", 1), ev("x", 9), ev("x", 10), ev("x", 3)]
    # The last event is in an older window: it changes nothing.
    assert features({"fn": "count", "window": window}, events) == {"f": 1}


def test_a_sliding_window_merges_its_panes() -> None:
    """A 30s window sliding by 10s counts the last three panes of the key."""
    window = {"kind": "sliding", "size": "30s", "slide": "10s"}
    events = [ev("x", t) for t in (0, 5, 12, 25, 31, 44)]
    assert features({"fn": "count", "window": window}, events) == {"f": 3}  # 25, 31, 44


def test_a_session_closes_after_its_gap_and_grows_backwards() -> None:
    """Events closer than the gap join the session, also before its start."""
    window = {"kind": "session", "gap": "5s"}
    assert features(
        {"fn": "count", "window": window}, [ev("x", t) for t in (10, 13, 9, 30, 33)]
    ) == {"f": 2}
    assert features({"fn": "count", "window": window}, [ev("x", t) for t in (10, 13, 9, 6)]) == {
        "f": 4
    }


def test_keyed_aggregates_write_one_feature_per_key() -> None:
    """A keyed sink names its features <feature>:<key>; events without the key skip it."""
    stage = {"fn": "count", "key_by": "user"}
    events = [ev("x", 1, user="a"), ev("x", 2, user=7.0), ev("x", 3, user="a"), ev("x", 4)]
    assert features(stage, events) == {"f:a": 2, "f:7": 1}


def test_distinct_and_top_k_are_capped() -> None:
    """Past max_distinct, distinct stops growing and top_k keeps the most frequent."""
    events = [ev("x", i, v=7 if i % 2 else 1000 + i) for i in range(200)]
    assert features({"fn": "distinct", "attr": "v"}, events, max_distinct=10) == {"f": 10}
    top = features({"fn": "top_k", "attr": "v", "k": 1}, events, max_distinct=10)
    assert top == {"f": [[7, 100]]}


def test_top_k_orders_ties_by_first_seen() -> None:
    """Equal counts keep the order their values were first counted, the same everywhere."""
    events = [ev("x", 1, v="b"), ev("x", 2, v=3), ev("x", 3, v="a"), ev("x", 4, v="a")]
    assert features({"fn": "top_k", "attr": "v", "k": 3}, events) == {
        "f": [["a", 2], ["b", 1], [3, 1]]
    }


def test_features_carry_type_and_ttl() -> None:
    """Each feature written says its type tag and the stage's TTL in seconds."""
    engine = Engine(
        spec({"op": "aggregate", "feature": "f", "fn": "mean", "attr": "v", "ttl": "2m"})
    )
    (feature,) = engine.process(ev("x", 1, v=1)).features
    assert (feature.type, feature.ttl_s) == ("float", 120.0)
