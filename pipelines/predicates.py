"""Attribute predicates: the ``where`` of filters and trigger steps, parsed and compiled.

A ``where`` is a JSON object from attribute names to conditions::

    {"rating": {"gte": 4}, "genres": {"contains": "Comedy"}, "source": "search"}

A bare value means ``eq``; an object holds one or more operators, all of which must hold
(and so must every attribute's conditions). A missing attribute reads as ``null``.

=========== ====================================================================
``eq``      equal (JSON equality: ``true`` is not ``1``; ``1`` is ``1.0``)
``ne``      not equal
``in``      equal to one of a list of 1 to 1000 scalars
``not_in``  equal to none of them
``lt`` ``lte`` ``gt`` ``gte``   a number compared with a number (anything else: false)
``contains``  a list attribute holding the scalar (a scalar attribute: equal to it)
``exists``  ``true``: the attribute is present and not null; ``false``: the opposite
=========== ====================================================================

Predicates are compiled to Python expressions (:mod:`pipelines.codegen`) that take the
attrs dict and never raise: a comparison between a number and a string is simply false.
``eq``, ``in`` and ``contains`` can also *anchor* a trigger step in the pattern index
(:mod:`pipelines.patterns`), so the matcher looks steps up by the event's attribute value
instead of testing them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_IN_VALUES = 1000
MAX_ATTR_CHARS = 64
_NUMERIC_OPS = ("lt", "lte", "gt", "gte")
OPS = ("eq", "ne", "in", "not_in", *_NUMERIC_OPS, "contains", "exists")
_NUMBER = (int, float)


@dataclass(frozen=True, slots=True)
class Atom:
    """One condition on one attribute; ``value`` is a tuple for ``in`` / ``not_in``."""

    attr: str
    op: str
    value: Any

    def canonical(self) -> list[Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return [self.attr, self.op, value]


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float)


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def parse_where(value: object, path: str, problems: list[str]) -> tuple[Atom, ...]:
    """The atoms of a ``where`` object, sorted; each problem is appended as ``path: what``."""
    if not isinstance(value, dict):
        problems.append(f"{path}: must be an object of attribute -> condition")
        return ()
    atoms: list[Atom] = []
    for attr, condition in value.items():
        where = f"{path}.{attr}"
        if not isinstance(attr, str) or not 1 <= len(attr) <= MAX_ATTR_CHARS:
            problems.append(f"{where}: attribute names have 1 to {MAX_ATTR_CHARS} characters")
            continue
        if not isinstance(condition, dict):
            if isinstance(condition, list) or not _scalar(condition):
                problems.append(f"{where}: must be a scalar (equality) or an object of operators")
            else:
                atoms.append(Atom(attr, "eq", condition))
            continue
        if not condition:
            problems.append(f"{where}: needs at least one operator of {', '.join(OPS)}")
        for op, operand in condition.items():
            atom = _atom(attr, op, operand, f"{where}.{op}", problems)
            if atom is not None:
                atoms.append(atom)
    return tuple(sorted(atoms, key=lambda a: (a.attr, OPS.index(a.op), repr(a.value))))


def _atom(attr: str, op: object, operand: object, path: str, problems: list[str]) -> Atom | None:
    if op not in OPS:
        problems.append(f"{path}: unknown operator; use one of {', '.join(OPS)}")
        return None
    assert isinstance(op, str)
    if op in _NUMERIC_OPS:
        if not _is_number(operand):
            problems.append(f"{path}: must be a number")
            return None
        return Atom(attr, op, operand)
    if op == "exists":
        if not isinstance(operand, bool):
            problems.append(f"{path}: must be true or false")
            return None
        return Atom(attr, op, operand)
    if op in ("in", "not_in"):
        if (
            not isinstance(operand, list)
            or not 1 <= len(operand) <= MAX_IN_VALUES
            or not all(_scalar(v) for v in operand)
        ):
            problems.append(f"{path}: must be a list of 1 to {MAX_IN_VALUES} scalars")
            return None
        return Atom(attr, op, tuple(operand))
    if not _scalar(operand):
        problems.append(f"{path}: must be a scalar (string, number, boolean or null)")
        return None
    return Atom(attr, op, operand)


def _key(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def anchor(atoms: tuple[Atom, ...]) -> Atom | None:
    """The atom that can index a step: an ``eq`` or ``contains`` of a string or number, or
    an ``in`` of strings and numbers (an event must carry one of its values), or None."""
    for atom in atoms:
        if atom.op in ("eq", "contains") and _key(atom.value):
            return atom
        if atom.op == "in" and all(_key(v) for v in atom.value):
            return atom
    return None
