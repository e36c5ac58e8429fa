"""Pipeline specs: validated whole, every problem named by its path, versioned."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipelines import SpecError, parse_duration, problems_of, validate
from pipelines.spec import AggregateStage, FilterStage, TriggerStage

EXAMPLE: dict[str, Any] = {
    "version": 1,
    "name": "movie-signals",
    "lateness": "30s",
    "stages": [
        {"op": "filter", "type": "rating", "where": {"rating": {"gte": 0.5}}},
        {"op": "map", "project": ["user", "item", "rating", "genres"], "set": {"src": "app"}},
        {"op": "key_by", "attr": "user"},
        {
            "op": "aggregate",
            "feature": "ratings_1h",
            "fn": "count",
            "window": {"kind": "tumbling", "size": "1h"},
            "ttl": "2h",
        },
        {
            "op": "aggregate",
            "feature": "mean_1d",
            "fn": "mean",
            "attr": "rating",
            "window": {"kind": "sliding", "size": "1d", "slide": "1h"},
        },
        {"op": "aggregate", "feature": "last_items", "fn": "last_n", "attr": "item", "n": 20},
        {
            "op": "trigger",
            "name": "binge",
            "pattern": {"repeat": {"times": 3, "step": {"type": "rating"}}, "within": "10m"},
        },
        {
            "op": "trigger",
            "name": "quiet",
            "key_by": None,
            "pattern": {"steps": [{"type": "rating"}], "not": {"type": "rating"}, "within": 60},
        },
    ],
}


def test_a_valid_spec_compiles_with_key_by_resolved() -> None:
    """Sinks carry the key of the last key_by before them, or their own override."""
    spec = validate(EXAMPLE)
    assert spec.name == "movie-signals" and spec.lateness == 30.0
    assert isinstance(spec.stages[0], FilterStage)
    aggregate = spec.stages[2]
    assert isinstance(aggregate, AggregateStage) and aggregate.key_by == "user"
    assert aggregate.window is not None and aggregate.window.size == 3600 and aggregate.ttl == 7200
    binge, quiet = spec.stages[-2:]
    assert isinstance(binge, TriggerStage) and len(binge.steps) == 3 and binge.key_by == "user"
    assert isinstance(quiet, TriggerStage) and quiet.key_by is None and quiet.negated is not None
    assert spec.features == ["ratings_1h", "mean_1d", "last_items"]
    assert spec.triggers == ["binge", "quiet"]


def test_every_problem_is_named_by_its_path() -> None:
    """One SpecError lists all problems at once, each as `path: what`."""
    bad = copy.deepcopy(EXAMPLE)
    bad["lateness"] = "soon"
    bad["stages"][0]["where"]["rating"] = {"bigger": 1}
    bad["stages"][3]["window"]["size"] = "0s"
    bad["stages"][4]["window"]["slide"] = "7m"
    bad["stages"][5]["n"] = 0
    bad["stages"][6]["pattern"]["repeat"]["times"] = 1
    bad["stages"][7]["pattern"]["within"] = -5
    with pytest.raises(SpecError) as caught:
        validate(bad)
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "lateness",
        "stages[0].where.rating.bigger",
        "stages[3].window.size",
        "stages[4].window.slide",
        "stages[5].n",
        "stages[6].pattern.repeat.times",
        "stages[7].pattern.within",
    ]
    assert "stages[3].window.size: must be a positive duration" in problems[2]
    assert "7 problems" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": 2}, "version: 2 is not a spec version this library reads; supported: 1"),
        ({"version": True}, "version: True is not a spec version"),
        ({"name": "has space"}, "name: must be 1 to 64 letters"),
        ({"stages": []}, "stages: must be a list of 1 to 512 stages"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"stages": [{"op": "filter", "type": "x"}]}, "stages: has no aggregate or trigger stage"),
        ({"stages": [{"op": "explode"}]}, "stages[0].op: must be one of"),
        (
            {"stages": [{"op": "aggregate", "feature": "f", "fn": "median"}]},
            "stages[0].fn: must be one of",
        ),
        (
            {"stages": [{"op": "aggregate", "feature": "f", "fn": "sum"}]},
            "stages[0].attr: is required for sum",
        ),
        (
            {"stages": [{"op": "aggregate", "feature": "f", "fn": "count", "k": 3}]},
            "stages[0].k: only applies to top_k",
        ),
        (
            {"stages": [{"op": "trigger", "name": "t", "pattern": {"within": "1m"}}]},
            "stages[0].pattern: needs exactly one of steps",
        ),
        (
            {"stages": [{"op": "map"}, {"op": "aggregate", "feature": "f", "fn": "count"}]},
            "stages[0]: a map needs project, rename or set",
        ),
        (
            {
                "stages": [
                    {
                        "op": "aggregate",
                        "feature": "f",
                        "fn": "count",
                        "window": {"kind": "hopping"},
                    }
                ]
            },
            "stages[0].window.kind: must be one of tumbling, sliding, session",
        ),
    ],
)
def test_specific_problems_are_explained(change: dict[str, Any], problem: str) -> None:
    """Each kind of mistake is reported with its path and what to do."""
    spec = {**copy.deepcopy(EXAMPLE), **change}
    assert any(p.startswith(problem) for p in problems_of(spec)), problems_of(spec)


def test_names_must_be_unique_within_a_spec() -> None:
    """A feature or trigger defined twice names the stage that defined it first."""
    spec = copy.deepcopy(EXAMPLE)
    spec["stages"].append(copy.deepcopy(spec["stages"][3]))
    spec["stages"].append(copy.deepcopy(spec["stages"][6]))
    assert problems_of(spec) == [
        "stages[8].feature: the feature 'ratings_1h' is already defined by stages[3]",
        "stages[9].name: the trigger 'binge' is already defined by stages[6]",
    ]


@pytest.mark.parametrize("value", [None, [], "x", 3, float("nan")])
def test_a_spec_that_is_not_a_json_object_is_refused(value: Any) -> None:
    """Anything but a JSON object (or one holding NaN) is refused, not crashed on."""
    spec = value if not isinstance(value, float) else {**EXAMPLE, "lateness": value}
    with pytest.raises(SpecError):
        validate(spec)


def test_an_oversized_spec_is_refused() -> None:
    """A spec over 256 KiB as JSON is refused before it is looked at."""
    spec = {**EXAMPLE, "description": "x" * 300_000}
    assert problems_of(spec)[0].startswith("spec: is ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10),
        ("5m", 300),
        ("1.5h", 5400),
        ("7d", 604800),
        (90, 90),
        (0.5, 0.5),
    ],
)
def test_durations_read_units_and_numbers(text: object, seconds: float) -> None:
    """Durations are a number and a unit, or a number of seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "-1s", "1w", True, None, "400d", float("inf")])
def test_bad_durations_are_none(text: object) -> None:
    """Units other than ms/s/m/h/d, negatives, booleans and over 366 days are not durations."""
    assert parse_duration(text) is None
