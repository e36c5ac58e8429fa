"""Pipeline specs: JSON data, validated whole, versioned.

A spec is a JSON object; :func:`validate` turns it into a :class:`PipelineSpec` or raises
one :class:`~pipelines.errors.SpecError` listing *every* problem with its path
(``stages[2].window.size: must be a positive duration``). The format (version 1)::

    {"version": 1, "name": "movie-signals", "lateness": "30s", "stages": [
        {"op": "filter", "type": "rating", "where": {"rating": {"gte": 0.5}}},
        {"op": "map", "project": ["item", "rating", "genres", "user"]},
        {"op": "key_by", "attr": "user"},
        {"op": "aggregate", "feature": "ratings_1h", "fn": "count",
         "window": {"kind": "tumbling", "size": "1h"}, "ttl": "2h"},
        {"op": "trigger", "name": "binge",
         "pattern": {"repeat": {"times": 3, "step": {"type": "rating"}}, "within": "10m"}}]}

Stages run in order over each event. ``filter`` and ``map`` change the stream the later
stages see; ``key_by`` sets the key of the later sinks (``null``: no key); ``aggregate``
and ``trigger`` are sinks: they read the stream and pass it on unchanged. Either sink may
name its own ``key_by``, overriding the stream's key. The README's "Pipelines" section
documents each field; :mod:`pipelines.predicates` the ``where`` operators and
:mod:`pipelines.durations` the durations.

Unknown fields are refused (a typo is an error, not a silent no-op). An unknown
``version`` is refused with the versions this library reads, so a newer spec shipped to
an older device fails loudly at validation, never half-applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.durations import MAX_DURATION_S, parse_duration
from pipelines.errors import SpecError
from pipelines.predicates import MAX_ATTR_CHARS, Atom, parse_where

SUPPORTED_VERSIONS = (1,)
MAX_SPEC_BYTES = 256 * 1024
MAX_STAGES = 512
MAX_STEPS = 16
MAX_REPEAT = 64
MAX_LAST_N = 1000
MAX_TOP_K = 100
MAX_PANES = 1000
"""A sliding window holds at most this many panes (``size / slide``)."""
MAX_TYPES = 64
FUNCTIONS = ("count", "sum", "mean", "min", "max", "distinct", "last_n", "top_k")
WINDOW_KINDS = ("tumbling", "sliding", "session")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_NAME_RULE = (
    "must be 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a pattern: an event of one of ``types`` (None: any) whose attrs hold
    every atom of ``where``."""

    types: tuple[str, ...] | None
    where: tuple[Atom, ...]

    def canonical(self) -> str:
        return json.dumps([self.types, [a.canonical() for a in self.where]], sort_keys=True)


@dataclass(frozen=True, slots=True)
class Window:
    """``tumbling`` (``size``), ``sliding`` (``size`` in panes of ``slide``) or
    ``session`` (closed after ``gap`` without events), all in seconds of event time."""

    kind: str
    size: float = 0.0
    slide: float = 0.0
    gap: float = 0.0


@dataclass(frozen=True, slots=True)
class FilterStage:
    types: tuple[str, ...] | None
    where: tuple[Atom, ...]


@dataclass(frozen=True, slots=True)
class MapStage:
    project: tuple[str, ...] | None
    rename: tuple[tuple[str, str], ...]
    set: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class AggregateStage:
    feature: str
    fn: str
    attr: str | None
    key_by: str | None
    window: Window | None
    ttl: float | None
    n: int = 20
    k: int = 5


@dataclass(frozen=True, slots=True)
class TriggerStage:
    name: str
    steps: tuple[Step, ...]
    negated: Step | None
    within: float
    key_by: str | None


Transform = FilterStage | MapStage
Sink = AggregateStage | TriggerStage
Stage = Transform | Sink


@dataclass(frozen=True)
class PipelineSpec:
    """A validated spec: ``stages`` with ``key_by`` already resolved into each sink."""

    version: int
    name: str
    lateness: float
    stages: tuple[Stage, ...]
    source: dict[str, Any] = field(repr=False, compare=False)

    @property
    def triggers(self) -> list[str]:
        return [s.name for s in self.stages if isinstance(s, TriggerStage)]

    @property
    def features(self) -> list[str]:
        return [s.feature for s in self.stages if isinstance(s, AggregateStage)]


def validate(spec: object) -> PipelineSpec:
    """The :class:`PipelineSpec` of ``spec`` (a JSON object), or :class:`SpecError` naming
    every problem by its path."""
    problems: list[str] = []
    result = _Validator(problems).spec(spec)
    if problems or result is None:
        raise SpecError(problems or ["spec: is not a pipeline spec"])
    return result


def problems_of(spec: object) -> list[str]:
    """Every problem of ``spec`` as ``path: what`` (empty when it is valid)."""
    try:
        validate(spec)
    except SpecError as exc:
        return exc.problems
    return []


class _Validator:
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def bad(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def fields(
        self, value: dict[str, Any], path: str, allowed: tuple[str, ...], required: tuple[str, ...]
    ) -> None:
        for key in value:
            if key not in allowed:
                self.bad(
                    f"{path}.{key}" if path else key,
                    f"unknown field; allowed: {', '.join(allowed)}",
                )
        for key in required:
            if key not in value:
                self.bad(f"{path}.{key}" if path else key, "is required")

    def duration(self, value: object, path: str, *, positive: bool = True) -> float:
        seconds = parse_duration(value)
        if seconds is None or (positive and seconds <= 0):
            rule = "positive" if positive else "non-negative"
            self.bad(
                path,
                f'must be a {rule} duration like "500ms", "10s", "5m", "1h", "1d" '
                f"or a number of seconds, at most {MAX_DURATION_S / 86400:g}d",
            )
            return 0.0
        return seconds

    def name(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            self.bad(path, _NAME_RULE)
            return ""
        return value

    def attr(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_ATTR_CHARS:
            self.bad(path, f"must be an attribute name of 1 to {MAX_ATTR_CHARS} characters")
            return ""
        return value

    def key(self, value: object, path: str) -> str | None:
        return None if value is None else self.attr(value, path)

    def types(self, value: object, path: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = [value] if isinstance(value, str) else value
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= MAX_TYPES
            or not all(isinstance(t, str) and 1 <= len(t) <= 128 for t in names)
        ):
            self.bad(path, f"must be an event type or a list of 1 to {MAX_TYPES} event types")
            return None
        return tuple(sorted(set(names)))

    def spec(self, spec: object) -> PipelineSpec | None:
        if not isinstance(spec, dict):
            self.bad("spec", "must be a JSON object with version, name and stages")
            return None
        try:
            size = len(json.dumps(spec, allow_nan=False).encode())
        except (TypeError, ValueError, RecursionError):
            self.bad("spec", "must be plain JSON (no NaN, Infinity or non-JSON values)")
            return None
        if size > MAX_SPEC_BYTES:
            self.bad("spec", f"is {size} bytes as JSON; at most {MAX_SPEC_BYTES} are accepted")
            return None
        self.fields(
            spec,
            "",
            ("version", "name", "lateness", "stages", "description"),
            ("version", "name", "stages"),
        )
        version = spec.get("version")
        if "version" in spec and (isinstance(version, bool) or version not in SUPPORTED_VERSIONS):
            self.bad(
                "version",
                f"{version!r:.40} is not a spec version this library reads; supported: "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}",
            )
        name = self.name(spec.get("name"), "name") if "name" in spec else ""
        description = spec.get("description", "")
        if not isinstance(description, str) or len(description) > 500:
            self.bad("description", "must be a string of at most 500 characters")
        lateness = self.duration(spec.get("lateness", 0), "lateness", positive=False)
        raw_stages = spec.get("stages")
        stages: list[Stage] = []
        if "stages" in spec:
            if not isinstance(raw_stages, list) or not 1 <= len(raw_stages) <= MAX_STAGES:
                self.bad("stages", f"must be a list of 1 to {MAX_STAGES} stages")
            else:
                stages = self.stages(raw_stages)
                if not any(isinstance(s, AggregateStage | TriggerStage) for s in stages):
                    self.bad("stages", "has no aggregate or trigger stage, so it outputs nothing")
        return PipelineSpec(1, name, lateness, tuple(stages), spec)

    def stages(self, raw: list[Any]) -> list[Stage]:
        stages: list[Stage] = []
        key: str | None = None
        seen_features: dict[str, int] = {}
        seen_triggers: dict[str, int] = {}
        for i, stage in enumerate(raw):
            path = f"stages[{i}]"
            if not isinstance(stage, dict):
                self.bad(path, "must be an object with an op")
                continue
            op = stage.get("op")
            if op == "key_by":
                self.fields(stage, path, ("op", "attr"), ("attr",))
                key = self.key(stage.get("attr"), f"{path}.attr")
                continue
            parsed: Stage | None
            if op == "filter":
                parsed = self.filter(stage, path)
            elif op == "map":
                parsed = self.map(stage, path)
            elif op == "aggregate":
                parsed = self.aggregate(stage, path, key)
                if parsed is not None:
                    self.unique(parsed.feature, seen_features, f"{path}.feature", i, "feature")
            elif op == "trigger":
                parsed = self.trigger(stage, path, key)
                if parsed is not None:
                    self.unique(parsed.name, seen_triggers, f"{path}.name", i, "trigger")
            else:
                self.bad(f"{path}.op", "must be one of filter, map, key_by, aggregate, trigger")
                continue
            if parsed is not None:
                stages.append(parsed)
        return stages

    def unique(self, name: str, seen: dict[str, int], path: str, index: int, what: str) -> None:
        if name and name in seen:
            self.bad(path, f"the {what} {name!r} is already defined by stages[{seen[name]}]")
        seen.setdefault(name, index)

    def filter(self, stage: dict[str, Any], path: str) -> FilterStage:
        self.fields(stage, path, ("op", "type", "where"), ())
        if "type" not in stage and "where" not in stage:
            self.bad(path, "a filter needs a type, a where, or both")
        types = self.types(stage.get("type"), f"{path}.type")
        where = (
            parse_where(stage["where"], f"{path}.where", self.problems) if "where" in stage else ()
        )
        return FilterStage(types, where)

    def map(self, stage: dict[str, Any], path: str) -> MapStage:
        self.fields(stage, path, ("op", "project", "rename", "set"), ())
        project: tuple[str, ...] | None = None
        if "project" in stage:
            raw = stage["project"]
            if not isinstance(raw, list) or not 1 <= len(raw) <= 256:
                self.bad(f"{path}.project", "must be a list of 1 to 256 attribute names")
            else:
                project = tuple(self.attr(a, f"{path}.project[{j}]") for j, a in enumerate(raw))
        rename: list[tuple[str, str]] = []
        if "rename" in stage:
            raw = stage["rename"]
            if not isinstance(raw, dict):
                self.bad(f"{path}.rename", "must be an object of old name -> new name")
            else:
                for old, new in raw.items():
                    rename.append(
                        (self.attr(old, f"{path}.rename"), self.attr(new, f"{path}.rename.{old}"))
                    )
        sets: list[tuple[str, Any]] = []
        if "set" in stage:
            raw = stage["set"]
            if not isinstance(raw, dict):
                self.bad(f"{path}.set", "must be an object of attribute -> constant")
            else:
                for attr, value in raw.items():
                    if value is not None and not isinstance(value, str | int | float):
                        self.bad(f"{path}.set.{attr}", "must be a scalar")
                    sets.append((self.attr(attr, f"{path}.set"), value))
        if project is None and not rename and not sets:
            self.bad(path, "a map needs project, rename or set")
        return MapStage(project, tuple(rename), tuple(sets))

    def window(self, raw: object, path: str) -> Window | None:
        if not isinstance(raw, dict):
            self.bad(path, "must be an object with a kind")
            return None
        kind = raw.get("kind")
        if kind == "tumbling":
            self.fields(raw, path, ("kind", "size"), ("size",))
            return Window("tumbling", size=self.duration(raw.get("size"), f"{path}.size"))
        if kind == "sliding":
            self.fields(raw, path, ("kind", "size", "slide"), ("size", "slide"))
            size = self.duration(raw.get("size"), f"{path}.size")
            slide = self.duration(raw.get("slide"), f"{path}.slide")
            if size and slide:
                panes = size / slide
                if panes != int(panes) or not 1 <= panes <= MAX_PANES:
                    self.bad(
                        f"{path}.slide",
                        f"must divide size into 1 to {MAX_PANES} equal panes "
                        f"(size / slide is {panes:g})",
                    )
            return Window("sliding", size=size, slide=slide)
        if kind == "session":
            self.fields(raw, path, ("kind", "gap"), ("gap",))
            return Window("session", gap=self.duration(raw.get("gap"), f"{path}.gap"))
        self.bad(f"{path}.kind", f"must be one of {', '.join(WINDOW_KINDS)}")
        return None

    def aggregate(self, stage: dict[str, Any], path: str, key: str | None) -> AggregateStage | None:
        allowed = ("op", "feature", "fn", "attr", "key_by", "window", "ttl", "n", "k")
        self.fields(stage, path, allowed, ("feature", "fn"))
        feature = self.name(stage.get("feature"), f"{path}.feature")
        fn = stage.get("fn")
        if "fn" in stage and fn not in FUNCTIONS:
            self.bad(f"{path}.fn", f"must be one of {', '.join(FUNCTIONS)}")
        attr: str | None = None
        if fn == "count":
            if "attr" in stage:
                attr = self.attr(stage["attr"], f"{path}.attr")
        elif fn in FUNCTIONS:
            if "attr" not in stage:
                self.bad(f"{path}.attr", f"is required for {fn}")
            else:
                attr = self.attr(stage["attr"], f"{path}.attr")
        n = self.bounded(stage, "n", path, 20, MAX_LAST_N, fn == "last_n")
        k = self.bounded(stage, "k", path, 5, MAX_TOP_K, fn == "top_k")
        window = self.window(stage["window"], f"{path}.window") if "window" in stage else None
        ttl = self.duration(stage["ttl"], f"{path}.ttl") if "ttl" in stage else None
        key_by = self.key(stage["key_by"], f"{path}.key_by") if "key_by" in stage else key
        if not isinstance(fn, str) or fn not in FUNCTIONS:
            return None
        return AggregateStage(feature, fn, attr, key_by, window, ttl, n, k)

    def bounded(
        self, stage: dict[str, Any], name: str, path: str, default: int, top: int, applies: bool
    ) -> int:
        if name not in stage:
            return default
        value = stage[name]
        if not applies:
            self.bad(f"{path}.{name}", "only applies to " + ("last_n" if name == "n" else "top_k"))
        elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            self.bad(f"{path}.{name}", f"must be an integer from 1 to {top}")
        else:
            return value
        return default

    def step(self, raw: object, path: str) -> Step:
        if not isinstance(raw, dict):
            self.bad(path, "must be an object with a type and/or a where")
            return Step(None, ())
        self.fields(raw, path, ("type", "where"), ())
        types = self.types(raw.get("type"), f"{path}.type")
        where = parse_where(raw["where"], f"{path}.where", self.problems) if "where" in raw else ()
        return Step(types, where)

    def trigger(self, stage: dict[str, Any], path: str, key: str | None) -> TriggerStage | None:
        self.fields(stage, path, ("op", "name", "pattern", "key_by"), ("name", "pattern"))
        name = self.name(stage.get("name"), f"{path}.name")
        key_by = self.key(stage["key_by"], f"{path}.key_by") if "key_by" in stage else key
        raw = stage.get("pattern")
        where = f"{path}.pattern"
        if not isinstance(raw, dict):
            if "pattern" in stage:
                self.bad(where, "must be an object with steps or repeat, and within")
            return None
        self.fields(raw, where, ("steps", "repeat", "not", "within"), ("within",))
        within = self.duration(raw.get("within"), f"{where}.within")
        steps: list[Step] = []
        if ("steps" in raw) == ("repeat" in raw):
            self.bad(where, "needs exactly one of steps (a sequence) or repeat")
        elif "steps" in raw:
            raw_steps = raw["steps"]
            if not isinstance(raw_steps, list) or not 1 <= len(raw_steps) <= MAX_STEPS:
                self.bad(f"{where}.steps", f"must be a list of 1 to {MAX_STEPS} steps")
            else:
                steps = [self.step(s, f"{where}.steps[{j}]") for j, s in enumerate(raw_steps)]
        else:
            rep = raw["repeat"]
            if not isinstance(rep, dict):
                self.bad(f"{where}.repeat", "must be an object with times and step")
            else:
                self.fields(rep, f"{where}.repeat", ("times", "step"), ("times", "step"))
                times = rep.get("times")
                if (
                    isinstance(times, bool)
                    or not isinstance(times, int)
                    or not 2 <= times <= MAX_REPEAT
                ):
                    self.bad(f"{where}.repeat.times", f"must be an integer from 2 to {MAX_REPEAT}")
                    times = 0
                step = self.step(rep.get("step"), f"{where}.repeat.step")
                steps = [step] * times
        negated = self.step(raw["not"], f"{where}.not") if "not" in raw else None
        if not steps:
            return None
        return TriggerStage(name, tuple(steps), negated, within, key_by)
