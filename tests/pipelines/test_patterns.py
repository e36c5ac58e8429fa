"""Triggers on event sequences: sequences, repetition, negation; shared = naive."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipelines import Engine, Event
from tests.pipelines.factories import ev, spec, step, trigger


def fired(
    stages: list[dict[str, Any]], events: list[Event], **options: Any
) -> list[tuple[str, Any, list[float]]]:
    """(trigger, key, matched event times) of every firing over ``events``."""
    engine = Engine(spec(*stages, lateness=options.pop("lateness", 0)), **options)
    out = []
    for event in events:
        for firing in engine.process(event).firings:
            out.append((firing.trigger, firing.key, [e.ts for e in firing.events]))
    return out


def test_a_followed_by_b_within_t_fires_with_both_events() -> None:
    """A then B within T fires on B; events in between that match nothing are skipped."""
    stages = [trigger("ab", steps=[step("a"), step("b")], within="10s")]
    events = [ev("a", 1), ev("x", 2), ev("b", 5)]
    assert fired(stages, events) == [("ab", None, [1.0, 5.0])]


def test_a_match_slower_than_t_does_not_fire() -> None:
    """A then B more than T apart does not fire; a later A restarts the match."""
    stages = [trigger("ab", steps=[step("a"), step("b")], within="10s")]
    assert fired(stages, [ev("a", 1), ev("b", 12)]) == []
    assert fired(stages, [ev("a", 1), ev("a", 8), ev("b", 12)]) == [("ab", None, [8.0, 12.0])]


def test_step_predicates_must_hold() -> None:
    """Each step's where must hold for its event."""
    stages = [
        trigger(
            "big", steps=[step("buy", price={"gte": 10}), step("buy", price={"gte": 10})], within=60
        )
    ]
    events = [ev("buy", 1, price=20), ev("buy", 2, price=5), ev("buy", 3, price=15)]
    assert fired(stages, events) == [("big", None, [1.0, 3.0])]


def test_an_event_takes_part_in_one_firing_of_a_pattern() -> None:
    """A, B, B fires once: the second B has no A of its own."""
    stages = [trigger("ab", steps=[step("a"), step("b")], within=60)]
    assert fired(stages, [ev("a", 1), ev("b", 2), ev("b", 3)]) == [("ab", None, [1.0, 2.0])]


def test_repetition_fires_on_every_n_events_within_t() -> None:
    """3 x A within T fires on the third A of a run, then counts afresh."""
    stages = [trigger("three", repeat={"times": 3, "step": step("a")}, within="10s")]
    events = [ev("a", t) for t in (0, 1, 20, 21, 22, 23, 24, 25)]
    assert fired(stages, events) == [
        ("three", None, [20.0, 21.0, 22.0]),
        ("three", None, [23.0, 24.0, 25.0]),
    ]


def test_negation_fires_when_t_passes_without_b() -> None:
    """A not followed by B within T fires once event time passes A + T."""
    stages = [trigger("quiet", steps=[step("a")], **{"not": step("b")}, within="10s")]
    assert fired(stages, [ev("a", 0), ev("x", 5), ev("x", 11)]) == [("quiet", None, [0.0])]
    assert fired(stages, [ev("a", 0), ev("b", 5), ev("x", 30)]) == []


def test_negation_waits_for_the_lateness_before_firing() -> None:
    """The watermark (latest time minus lateness) must pass the deadline."""
    stages = [trigger("quiet", steps=[step("a")], **{"not": step("b")}, within="10s")]
    events = [ev("a", 0), ev("x", 12), ev("b", 9), ev("x", 16)]
    assert fired(stages, events, lateness="5s") == []  # the late B, admitted, cancelled it
    assert fired(stages, [ev("a", 0), ev("x", 12), ev("x", 16)], lateness="5s") == [
        ("quiet", None, [0.0])
    ]


def test_a_new_a_restarts_the_wait() -> None:
    """Another A before the deadline restarts it; the latest A is reported."""
    stages = [trigger("quiet", steps=[step("a")], **{"not": step("b")}, within="10s")]
    events = [ev("a", 0), ev("a", 8), ev("x", 11), ev("x", 19)]
    assert fired(stages, events) == [("quiet", None, [8.0])]


def test_keyed_patterns_match_per_key() -> None:
    """With key_by, one key's A does not pair with another key's B."""
    stages = [{"op": "key_by", "attr": "u"}, trigger("ab", steps=[step("a"), step("b")], within=60)]
    events = [ev("a", 1, u="x"), ev("b", 2, u="y"), ev("b", 3, u="x"), ev("b", 4)]
    assert fired(stages, events) == [("ab", "x", [1.0, 3.0])]


def test_events_out_of_time_order_do_not_extend_a_match() -> None:
    """A late B (within lateness) whose time is before A's does not follow A."""
    stages = [trigger("ab", steps=[step("a"), step("b")], within=60)]
    assert fired(stages, [ev("a", 10), ev("b", 5)], lateness=60) == []


def test_several_firings_of_one_event_come_in_pattern_order() -> None:
    """Patterns completed by one event fire in the order the spec lists them."""
    stages = [
        trigger("second", steps=[step("a"), step("b")], within=60),
        trigger("first", steps=[step("b")], within=60),
    ]
    assert [f[0] for f in fired(stages, [ev("a", 1), ev("b", 2)])] == ["second", "first"]


def test_key_state_is_capped() -> None:
    """Past max_keys, a key seen long ago loses its partial match (and it is counted)."""
    from pipelines import Limits

    stages = [{"op": "key_by", "attr": "u"}, trigger("ab", steps=[step("a"), step("b")], within=60)]
    events = [ev("a", 1, u=0)] + [ev("a", 2, u=k) for k in range(1, 5)] + [ev("b", 3, u=0)]
    engine = Engine(spec(*stages), limits=Limits(max_keys=2))
    assert [f for e in events for f in engine.process(e).firings] == []
    assert engine.stats.evicted_keys >= 3


GENRES = ["g1", "g2", "g3", "g4"]


def random_pattern(rng: random.Random, i: int) -> dict[str, Any]:
    def one() -> dict[str, Any]:
        choice = rng.randrange(6)
        if choice == 4:  # anchored, with more atoms on one other attribute
            return step("a", g={"contains": rng.choice(GENRES)}, v={"gte": rng.randint(1, 5)})
        if choice == 5:  # anchored, with atoms on two other attributes
            return step(
                None,
                g={"contains": rng.choice(GENRES)},
                v={"lte": rng.randint(1, 5)},
                item={"in": rng.sample(range(6), 3)},
            )
        if choice == 0:
            return step(rng.choice(["a", "b"]))
        if choice == 1:
            return step(rng.choice(["a", "b", None]), g={"contains": rng.choice(GENRES)})
        if choice == 2:
            return step("a", v={"gte": rng.randint(1, 5)})
        return step(None, item={"in": rng.sample(range(6), 2)})

    within = rng.choice([3, 10, 30])
    kind = rng.randrange(3)
    if kind == 0:
        return trigger(f"p{i}", steps=[one() for _ in range(rng.randint(1, 3))], within=within)
    if kind == 1:
        return trigger(f"p{i}", repeat={"times": rng.randint(2, 3), "step": one()}, within=within)
    return trigger(f"p{i}", steps=[one()], **{"not": one()}, within=within)


@pytest.mark.parametrize("seed", range(12))
def test_the_shared_matcher_fires_exactly_as_the_naive_one(seed: int) -> None:
    """On random patterns (shared prefixes, repeats, negations) and random streams (with
    late and out-of-order events), sharing changes no firing and no order."""
    rng = random.Random(seed)  # noqa: S311  # reproducible test data
    patterns = [random_pattern(rng, i) for i in range(rng.randint(5, 30))]
    if seed % 2:
        patterns = patterns + [dict(p, name=f"{p['name']}_copy") for p in patterns[:5]]
    stages = [{"op": "key_by", "attr": "u"}, *patterns]
    ts = 0.0
    events = []
    for _ in range(600):
        ts += rng.choice([0, 0.5, 1, 2, 7])
        jitter = -rng.choice([0, 0, 0, 1, 4])
        events.append(
            ev(
                rng.choice(["a", "b", "c"]),
                ts + jitter,
                u=rng.choice([1, 2, "x"]),
                g=rng.sample(GENRES, rng.randint(0, 2)),
                v=rng.randint(0, 6),
                item=rng.randrange(6),
            )
        )
    shared = fired(stages, events, lateness=2)
    naive = fired(stages, events, lateness=2, shared=False)
    assert shared == naive
    assert shared, "the random stream should fire something"


@pytest.mark.parametrize("types", [["a", "b"], ["a", "b", "c", "d", "e"]])
def test_inline_and_called_probes_fire_as_the_naive_matcher(types: list[str]) -> None:
    """A feed inlines the probes of a few event types and calls them for more: either
    way, steps typed, untyped, anchored with more atoms, on events of types no step
    names, fire exactly as the naive matcher."""
    rng = random.Random(len(types))  # noqa: S311  # reproducible test data
    kinds = [*types, None]
    patterns = []
    for i in range(20):
        first = step(rng.choice(kinds), g={"contains": rng.choice(GENRES)}, v={"gte": 2})
        second = step(rng.choice(kinds), v={"lte": rng.randint(1, 5)})
        patterns.append(trigger(f"p{i}", steps=[first, second], within=rng.choice([5, 20])))
    events = [
        ev(rng.choice([*types, "zz"]), t, u=rng.randrange(3), v=rng.randint(0, 6),
           g=rng.sample(GENRES, 2))
        for t in range(500)
    ]  # fmt: skip
    stages = [{"op": "key_by", "attr": "u"}, *patterns]
    shared = fired(stages, events)
    assert shared == fired(stages, events, shared=False)
    assert shared, "the stream should fire something"
