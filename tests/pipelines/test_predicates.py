"""Attribute predicates: JSON semantics, missing attributes, never an exception."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.codegen import compile_check
from pipelines.predicates import anchor, parse_where


def holds(where: dict[str, Any], attrs: dict[str, Any]) -> bool:
    problems: list[str] = []
    atoms = parse_where(where, "where", problems)
    assert not problems
    check = compile_check(atoms)
    return True if check is None else check(attrs)


@pytest.mark.parametrize(
    ("where", "attrs", "expected"),
    [
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": "x"}, {"a": "x"}, True),
        ({"a": None}, {}, True),
        ({"a": {"ne": 1}}, {}, True),
        ({"a": {"in": [1, "x"]}}, {"a": "x"}, True),
        ({"a": {"in": ["x", "y"]}}, {"a": ["x"]}, False),
        ({"a": {"not_in": [1, 2]}}, {"a": 3}, True),
        ({"a": {"gte": 2, "lt": 5}}, {"a": 4.5}, True),
        ({"a": {"gte": 2, "lt": 5}}, {"a": 5}, False),
        ({"a": {"gt": 1}}, {"a": "9"}, False),
        ({"a": {"gt": 0}}, {"a": True}, False),
        ({"a": {"lte": 1}}, {"a": float("nan")}, False),
        ({"a": {"contains": "b"}}, {"a": ["a", "b"]}, True),
        ({"a": {"contains": "b"}}, {"a": "b"}, True),
        ({"a": {"contains": 1}}, {"a": [True]}, False),
        ({"a": {"exists": True}}, {"a": 0}, True),
        ({"a": {"exists": False}}, {"a": None}, True),
        ({"a": 1, "b": {"gt": 2}}, {"a": 1, "b": 1}, False),
    ],
)
def test_operators_follow_json_semantics(
    where: dict[str, Any], attrs: dict[str, Any], expected: bool
) -> None:
    """Each operator holds exactly as documented, with no exception for odd values."""
    assert holds(where, attrs) is expected


def test_bad_conditions_are_reported_by_path() -> None:
    """Unknown operators and ill-typed operands are problems with their paths."""
    problems: list[str] = []
    parse_where({"a": {"gt": "x"}, "b": {"in": []}, "c": [1], "d": {"exists": 1}}, "w", problems)
    assert [p.split(":")[0] for p in problems] == ["w.a.gt", "w.b.in", "w.c", "w.d.exists"]


def test_anchors_come_from_equality_membership_and_contains() -> None:
    """eq, in and contains on strings or numbers anchor a step; ranges and booleans do not."""
    problems: list[str] = []
    found = anchor(parse_where({"x": {"gt": 1}, "g": {"contains": "A"}}, "w", problems))
    assert found is not None and (found.attr, found.op, found.value) == ("g", "contains", "A")
    found = anchor(parse_where({"x": {"in": [1, 2]}}, "w", problems))
    assert found is not None and found.value == (1, 2)
    assert anchor(parse_where({"x": {"gt": 1}, "b": True}, "w", problems)) is None
