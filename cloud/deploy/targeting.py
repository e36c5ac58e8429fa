"""The targeting language: which devices a deployment is for, as JSON.

A target is a JSON object whose key says what kind of test it is:

=====================  ===============================================================
kind                   example
=====================  ===============================================================
attribute equals       ``{"attr": "platform", "eq": "android"}``
attribute in a set     ``{"attr": "region", "in": ["eu", "us"]}``
version in a range     ``{"attr": "app_version", "semver": ">=5.2.0 <6"}``
device has a tag       ``{"tag": "beta"}``
listed devices         ``{"device_ids": ["0b6f1c9e-5a3d-4c1e-9f7a-2d8e4b6a1c3f"]}``
all of (AND)           ``{"all": [{"attr": "platform", "eq": "ios"}, {"tag": "beta"}]}``
any of (OR)            ``{"any": [{"attr": "region", "eq": "eu"}, {"tag": "staff"}]}``
not                    ``{"not": {"attr": "model", "eq": "Pixel 8"}}``
every device           ``{"everyone": true}``
=====================  ===============================================================

``attr`` is one of ``platform``, ``os_version``, ``app_version``, ``model``, ``region``;
``semver`` applies to ``app_version`` and ``os_version`` only, and takes the ranges of
:mod:`cloud.deploy.semver`. Values compare exactly (case matters). A device whose attribute
is unset never matches ``eq``, ``in`` or ``semver`` on it (but does match their ``not``).
Device ids are compared in canonical UUID form (lowercase, hyphenated).

Limits against hostile input: at most 8 levels of nesting and 1,000 target objects in all,
1,000 values in an ``in`` list and 10,000 device ids. A target that breaks a rule is a
validation error (a 422) whose location or message names the offending path.

Evaluation is compiled: :func:`compile_target` turns a target into a plain function with
ranges pre-parsed and sets pre-built, to run against every device of a fleet.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, assert_never

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    field_validator,
)
from pydantic_core import PydanticCustomError

from cloud.deploy.semver import InvalidVersionRange, Range
from device_sdk.wire import DeviceAttributes
from device_sdk.wire import Tag as DeviceTag

__all__ = [
    "MAX_DEPTH",
    "MAX_DEVICE_IDS",
    "MAX_NODES",
    "MAX_VALUES",
    "AllOf",
    "AnyOf",
    "AttrEquals",
    "AttrIn",
    "AttrSemver",
    "Attribute",
    "DeviceIds",
    "Everyone",
    "HasTag",
    "Matcher",
    "Not",
    "Target",
    "compile_target",
    "describe",
    "matches",
    "target_adapter",
    "target_json",
]

MAX_DEPTH = 8
"""The deepest a target may nest; a lone leaf is depth 1."""
MAX_NODES = 1_000
"""The most target objects one target may hold, leaves included."""
MAX_VALUES = 1_000
"""The most values in one ``in`` list."""
MAX_DEVICE_IDS = 10_000
"""The most ids in one ``device_ids`` list."""

Attribute: TypeAlias = Literal["platform", "os_version", "app_version", "model", "region"]
"""A device attribute a target can test."""
_VERSION_ATTRIBUTES = ("app_version", "os_version")

Value = Annotated[str, StringConstraints(min_length=1, max_length=64)]

Matcher: TypeAlias = Callable[[str, DeviceAttributes], bool]
"""A compiled target: ``matcher(device_id, attributes)`` says whether the device is in."""


class _Node(BaseModel):
    # Unknown keys are refused so that a typo ("attribute") is an error, not a silent no-op;
    # aliases let Python keywords ("in", "not") be the JSON keys.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )
    # The JSON key that tells this kind apart; see _kind_of.
    key: ClassVar[str]


class AttrEquals(_Node):
    """The attribute equals a value: ``{"attr": "platform", "eq": "android"}``."""

    key: ClassVar[str] = "eq"
    attr: Attribute
    eq: Value


class AttrIn(_Node):
    """The attribute is one of some values: ``{"attr": "region", "in": ["eu", "us"]}``."""

    key: ClassVar[str] = "in"
    attr: Attribute
    in_: Annotated[list[Value], Field(min_length=1, max_length=MAX_VALUES, alias="in")]


class AttrSemver(_Node):
    """A version attribute is in a range: ``{"attr": "app_version", "semver": ">=5.2 <6"}``."""

    key: ClassVar[str] = "semver"
    attr: Attribute
    semver: str

    @field_validator("attr")
    @classmethod
    def _is_a_version(cls, attr: Attribute) -> Attribute:
        if attr not in _VERSION_ATTRIBUTES:
            raise PydanticCustomError(
                "semver_attribute",
                "semver applies only to app_version and os_version, not {attr}; "
                "use eq or in to test {attr}",
                {"attr": attr},
            )
        return attr

    @field_validator("semver")
    @classmethod
    def _parses(cls, semver: str) -> str:
        # Parsed now so that a bad range is refused when the deployment is created,
        # with the path to it, rather than discovered while evaluating the fleet.
        try:
            Range(semver)
        except InvalidVersionRange as problem:
            raise PydanticCustomError("invalid_version_range", problem.message) from None
        return semver.strip()


class HasTag(_Node):
    """The device carries a tag: ``{"tag": "beta"}``."""

    key: ClassVar[str] = "tag"
    tag: DeviceTag


def _canonical_uuid(device_id: str) -> str:
    try:
        return str(uuid.UUID(device_id))
    except ValueError:
        raise PydanticCustomError(
            "invalid_device_id", "device id {device_id} is not a UUID", {"device_id": device_id}
        ) from None


DeviceId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_canonical_uuid)]


class DeviceIds(_Node):
    """The device is one of those listed: ``{"device_ids": ["0b6f1c9e-...", ...]}``."""

    key: ClassVar[str] = "device_ids"
    device_ids: Annotated[list[DeviceId], Field(min_length=1, max_length=MAX_DEVICE_IDS)]


class AllOf(_Node):
    """Every sub-target matches: ``{"all": [target, ...]}``."""

    key: ClassVar[str] = "all"
    all: Annotated[list[Target], Field(min_length=1)]


class AnyOf(_Node):
    """At least one sub-target matches: ``{"any": [target, ...]}``."""

    key: ClassVar[str] = "any"
    any: Annotated[list[Target], Field(min_length=1)]


class Not(_Node):
    """The sub-target does not match: ``{"not": target}``."""

    key: ClassVar[str] = "not"
    not_: Annotated[Target, Field(alias="not")]


class Everyone(_Node):
    """Every device: ``{"everyone": true}``."""

    key: ClassVar[str] = "everyone"
    everyone: Literal[True] = True


_KINDS: tuple[type[_Node], ...] = (
    AttrEquals,
    AttrIn,
    AttrSemver,
    HasTag,
    DeviceIds,
    AllOf,
    AnyOf,
    Not,
    Everyone,
)
_KEYS = tuple(kind.key for kind in _KINDS)


def _kind_of(value: Any) -> str | None:
    """The discriminator: which kind of target ``value`` is, from the first key it has."""
    if isinstance(value, _Node):
        return value.key
    if isinstance(value, dict):
        return next((key for key in _KEYS if key in value), None)
    return None


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    """The sub-targets of a raw or validated target, with their path steps."""
    if isinstance(value, dict):
        for key in ("all", "any"):
            items = value.get(key)
            if isinstance(items, list):
                yield from ((f"{key}.{i}", item) for i, item in enumerate(items))
        if "not" in value:
            yield "not", value["not"]
    elif isinstance(value, AllOf | AnyOf):
        items = value.all if isinstance(value, AllOf) else value.any
        yield from ((f"{value.key}.{i}", item) for i, item in enumerate(items))
    elif isinstance(value, Not):
        yield "not", value.not_


def _within_limits(value: Any) -> Any:
    """Refuse a target nested too deep or too large, before validating any of it.

    Runs on the raw input so that hostile nesting costs at most MAX_NODES steps and never
    reaches the recursive validators. It also runs at every nesting level, where it finds
    nothing new: the cost is bounded by MAX_DEPTH * MAX_NODES.
    """
    count = 0
    stack: list[tuple[str, Any, int]] = [("", value, 1)]
    while stack:
        path, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PydanticCustomError(
                "target_too_deep",
                "target nests deeper than {limit} levels at {path}; flatten nested all/any",
                {"limit": MAX_DEPTH, "path": path},
            )
        count += 1
        if count > MAX_NODES:
            raise PydanticCustomError(
                "target_too_large",
                "target holds more than {limit} targets (reached at {path}); "
                "list devices with device_ids or tag them instead",
                {"limit": MAX_NODES, "path": path or "the top"},
            )
        children = [(f"{path}.{step}" if path else step, child) for step, child in _children(node)]
        # Reversed so the walk goes depth-first in document order and reports the first path.
        stack.extend((p, child, depth + 1) for p, child in reversed(children))
    return value


Target: TypeAlias = Annotated[
    Annotated[AttrEquals, Tag("eq")]
    | Annotated[AttrIn, Tag("in")]
    | Annotated[AttrSemver, Tag("semver")]
    | Annotated[HasTag, Tag("tag")]
    | Annotated[DeviceIds, Tag("device_ids")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[Everyone, Tag("everyone")],
    Discriminator(
        _kind_of,
        custom_error_type="invalid_target",
        custom_error_message=(
            "a target is an object with one of the keys attr (with eq, in or semver), "
            "tag, device_ids, all, any, not or everyone"
        ),
    ),
    BeforeValidator(_within_limits),
]
"""Any target; use this type for a schema field that holds one."""

for _kind in (AllOf, AnyOf, Not):
    _kind.model_rebuild()

target_adapter: TypeAdapter[Target] = TypeAdapter(Target)
"""Validates and serialises a target held outside a schema, e.g. one stored as JSON."""


def target_json(target: Target) -> dict[str, Any]:
    """The JSON form of ``target`` (with its ``in``/``not`` keys), for storage."""
    value: dict[str, Any] = target_adapter.dump_python(target, mode="json", by_alias=True)
    return value


def compile_target(target: Target) -> Matcher:
    """Turn ``target`` into a function of (device_id, attributes), built once, run many times."""
    if isinstance(target, AttrEquals):
        get, value = attrgetter(target.attr), target.eq
        return lambda _id, attributes: get(attributes) == value
    if isinstance(target, AttrIn):
        get, values = attrgetter(target.attr), frozenset(target.in_)
        return lambda _id, attributes: get(attributes) in values
    if isinstance(target, AttrSemver):
        get, version_range = attrgetter(target.attr), Range(target.semver)

        def in_range(_id: str, attributes: DeviceAttributes) -> bool:
            version = get(attributes)
            return version is not None and version_range.contains(version)

        return in_range
    if isinstance(target, HasTag):
        tag = target.tag
        return lambda _id, attributes: tag in attributes.tags
    if isinstance(target, DeviceIds):
        ids = frozenset(target.device_ids)
        return lambda device_id, _attributes: device_id in ids
    if isinstance(target, AllOf):
        every = tuple(compile_target(child) for child in target.all)
        return lambda device_id, attributes: all(m(device_id, attributes) for m in every)
    if isinstance(target, AnyOf):
        some = tuple(compile_target(child) for child in target.any)
        return lambda device_id, attributes: any(m(device_id, attributes) for m in some)
    if isinstance(target, Not):
        inner = compile_target(target.not_)
        return lambda device_id, attributes: not inner(device_id, attributes)
    if isinstance(target, Everyone):
        return lambda _id, _attributes: True
    assert_never(target)


def matches(target: Target, device_id: str, attributes: DeviceAttributes) -> bool:
    """Whether one device is targeted; to test many devices, call :func:`compile_target`."""
    return compile_target(target)(device_id, attributes)


_SHOWN_VALUES = 5


def describe(target: Target) -> str:
    """A short rendering for people: ``platform = android AND tag beta``."""
    if isinstance(target, AttrEquals):
        return f"{target.attr} = {target.eq}"
    if isinstance(target, AttrIn):
        shown = ", ".join(target.in_[:_SHOWN_VALUES])
        more = len(target.in_) - _SHOWN_VALUES
        return f"{target.attr} in [{shown}{f', +{more} more' if more > 0 else ''}]"
    if isinstance(target, AttrSemver):
        return f"{target.attr} in {target.semver}"
    if isinstance(target, HasTag):
        return f"tag {target.tag}"
    if isinstance(target, DeviceIds):
        count = len(target.device_ids)
        return f"one of {count} listed device{'s' if count != 1 else ''}"
    if isinstance(target, AllOf | AnyOf):
        children = target.all if isinstance(target, AllOf) else target.any
        joiner = " AND " if isinstance(target, AllOf) else " OR "
        return joiner.join(_operand(child) for child in children)
    if isinstance(target, Not):
        return f"NOT {_operand(target.not_)}"
    if isinstance(target, Everyone):
        return "everyone"
    assert_never(target)


def _operand(target: Target) -> str:
    # Composites are parenthesised inside another composite so that AND/OR read unambiguously.
    text = describe(target)
    if isinstance(target, AllOf) and len(target.all) > 1:
        return f"({text})"
    if isinstance(target, AnyOf) and len(target.any) > 1:
        return f"({text})"
    return text
