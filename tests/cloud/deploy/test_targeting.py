"""The targeting language: validation, evaluation and rendering."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from cloud.deploy.targeting import (
    MAX_DEPTH,
    MAX_DEVICE_IDS,
    MAX_NODES,
    AllOf,
    AnyOf,
    AttrEquals,
    AttrIn,
    AttrSemver,
    DeviceIds,
    Everyone,
    HasTag,
    Not,
    Target,
    compile_target,
    describe,
    matches,
)
from device_sdk.wire import DeviceAttributes

DEVICE_ID = "0b6f1c9e-5a3d-4c1e-9f7a-2d8e4b6a1c3f"
OTHER_ID = "6a1f0d2e-8b7c-4e3a-a1b2-c3d4e5f60718"


class Policy(BaseModel):
    """A stand-in for a schema that holds a target, so errors carry a field path."""

    target: Target


def parse(data: Any) -> Target:
    """Validate raw JSON-shaped data as a target."""
    return Policy.model_validate({"target": data}).target


def attributes(**fields: Any) -> DeviceAttributes:
    """Device attributes with every field unset unless given."""
    return DeviceAttributes(**fields)


ANDROID_BETA = attributes(
    platform="android",
    os_version="14.1",
    app_version="5.2.3",
    model="Pixel 8",
    region="eu",
    tags=["beta", "staff"],
)


def errors_of(data: Any) -> list[dict[str, Any]]:
    """The validation errors raised for ``data``."""
    with pytest.raises(ValidationError) as caught:
        parse(data)
    return [dict(error) for error in caught.value.errors(include_url=False, include_input=False)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"attr": "platform", "eq": "android"}, True, id="eq"),
        pytest.param({"attr": "platform", "eq": "ios"}, False, id="eq-miss"),
        pytest.param({"attr": "platform", "eq": "Android"}, False, id="eq-case-sensitive"),
        pytest.param({"attr": "model", "eq": "Pixel 8"}, True, id="eq-model"),
        pytest.param({"attr": "region", "in": ["us", "eu"]}, True, id="in"),
        pytest.param({"attr": "region", "in": ["us", "apac"]}, False, id="in-miss"),
        pytest.param({"attr": "app_version", "semver": ">=5.2.0 <6"}, True, id="semver"),
        pytest.param({"attr": "app_version", "semver": "^5.3"}, False, id="semver-miss"),
        pytest.param({"attr": "os_version", "semver": "14.x"}, True, id="semver-os"),
        pytest.param({"tag": "beta"}, True, id="tag"),
        pytest.param({"tag": "alpha"}, False, id="tag-miss"),
        pytest.param({"device_ids": [OTHER_ID, DEVICE_ID]}, True, id="device-ids"),
        pytest.param({"device_ids": [OTHER_ID]}, False, id="device-ids-miss"),
        pytest.param({"device_ids": [DEVICE_ID.upper()]}, True, id="device-ids-uppercase"),
        pytest.param({"everyone": True}, True, id="everyone"),
    ],
)
def test_leaf_kind(data: dict[str, Any], expected: bool) -> None:
    """Each leaf kind tests its attribute, tag or id as documented."""
    assert matches(parse(data), DEVICE_ID, ANDROID_BETA) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param({"all": [{"tag": "beta"}, {"attr": "region", "eq": "eu"}]}, True, id="all"),
        pytest.param({"all": [{"tag": "beta"}, {"attr": "region", "eq": "us"}]}, False, id="all-"),
        pytest.param({"any": [{"tag": "nope"}, {"attr": "region", "eq": "eu"}]}, True, id="any"),
        pytest.param({"any": [{"tag": "nope"}, {"attr": "region", "eq": "us"}]}, False, id="any-"),
        pytest.param({"not": {"tag": "beta"}}, False, id="not"),
        pytest.param({"not": {"not": {"tag": "beta"}}}, True, id="not-not"),
        pytest.param(
            {"all": [{"attr": "platform", "eq": "android"}, {"not": {"tag": "staff"}}]},
            False,
            id="all-with-not",
        ),
        pytest.param(
            {
                "any": [
                    {"all": [{"attr": "platform", "eq": "ios"}, {"tag": "beta"}]},
                    {"all": [{"attr": "platform", "eq": "android"}, {"tag": "beta"}]},
                ]
            },
            True,
            id="any-of-alls",
        ),
        pytest.param(
            {"not": {"any": [{"attr": "region", "in": ["us"]}, {"device_ids": [OTHER_ID]}]}},
            True,
            id="not-any",
        ),
    ],
)
def test_combination(data: dict[str, Any], expected: bool) -> None:
    """all, any and not combine their sub-targets as AND, OR and negation."""
    assert matches(parse(data), DEVICE_ID, ANDROID_BETA) is expected


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"attr": "platform", "eq": "android"}, id="eq"),
        pytest.param({"attr": "region", "in": ["eu", "us"]}, id="in"),
        pytest.param({"attr": "app_version", "semver": "*"}, id="semver-star"),
        pytest.param({"attr": "os_version", "semver": ">=0"}, id="semver-os"),
    ],
)
def test_unset_attribute_never_matches(data: dict[str, Any]) -> None:
    """A device without the attribute matches no eq, in or semver test on it."""
    assert not matches(parse(data), DEVICE_ID, attributes())


def test_unset_attribute_matches_negation() -> None:
    """The negation of a test on an unset attribute does match."""
    target = parse({"not": {"attr": "platform", "eq": "android"}})
    assert matches(target, DEVICE_ID, attributes())


def test_unparseable_version_attribute_does_not_match() -> None:
    """A device reporting a version that does not parse is outside every range."""
    target = parse({"attr": "app_version", "semver": "*"})
    assert not matches(target, DEVICE_ID, attributes(app_version="nightly"))


def test_device_without_tags_has_no_tag() -> None:
    """A device with no tags matches no tag test."""
    assert not matches(parse({"tag": "beta"}), DEVICE_ID, attributes())


@pytest.mark.parametrize("attr", ["platform", "model", "region"])
def test_semver_on_non_version_attribute_is_refused(attr: str) -> None:
    """semver is only for app_version and os_version; the error says what to use instead."""
    [error] = errors_of({"attr": attr, "semver": ">=1"})
    assert error["type"] == "semver_attribute"
    assert error["loc"] == ("target", "semver", "attr")
    assert "use eq or in" in error["msg"]


def test_bad_range_is_refused_with_its_path() -> None:
    """A range that does not parse is a validation error located at the range."""
    [error] = errors_of({"all": [{"tag": "a"}, {"not": {"attr": "app_version", "semver": "^^1"}}]})
    assert error["type"] == "invalid_version_range"
    assert error["loc"] == ("target", "all", "all", 1, "not", "not", "semver", "semver")
    assert "'^^1'" in error["msg"]


@pytest.mark.parametrize(
    ("data", "error_type"),
    [
        pytest.param({"attr": "colour", "eq": "red"}, "literal_error", id="unknown-attr"),
        pytest.param({"attr": "platform"}, "invalid_target", id="attr-without-test"),
        pytest.param({"attr": "platform", "eq": "a", "in": ["b"]}, "extra_forbidden", id="two"),
        pytest.param({"tag": "beta", "typo": 1}, "extra_forbidden", id="extra-key"),
        pytest.param({"colour": "red"}, "invalid_target", id="unknown-kind"),
        pytest.param([], "invalid_target", id="not-an-object"),
        pytest.param({"attr": "region", "in": []}, "too_short", id="empty-in"),
        pytest.param({"all": []}, "too_short", id="empty-all"),
        pytest.param({"any": []}, "too_short", id="empty-any"),
        pytest.param({"everyone": False}, "literal_error", id="everyone-false"),
        pytest.param({"tag": "has space"}, "string_pattern_mismatch", id="bad-tag"),
        pytest.param({"device_ids": ["not-a-uuid"]}, "invalid_device_id", id="bad-id"),
        pytest.param({"device_ids": []}, "too_short", id="no-ids"),
        pytest.param(
            {"device_ids": [DEVICE_ID] * (MAX_DEVICE_IDS + 1)}, "too_long", id="too-many-ids"
        ),
        pytest.param({"attr": "platform", "eq": ""}, "string_too_short", id="empty-value"),
    ],
)
def test_malformed_target_is_refused(data: Any, error_type: str) -> None:
    """Malformed targets are validation errors of a specific type."""
    assert [error["type"] for error in errors_of(data)] == [error_type]


def nested(depth: int) -> dict[str, Any]:
    """A target ``depth`` levels deep: nots around alls around a tag."""
    data: dict[str, Any] = {"tag": "beta"}
    for level in range(depth - 1):
        data = {"not": data} if level % 2 else {"all": [data]}
    return data


def test_maximum_depth_is_accepted() -> None:
    """A target exactly MAX_DEPTH levels deep is valid."""
    assert matches(parse(nested(MAX_DEPTH)), DEVICE_ID, ANDROID_BETA) in (True, False)


def test_too_deep_is_refused_with_a_path() -> None:
    """One level too many is refused, and the message names where."""
    [error] = errors_of(nested(MAX_DEPTH + 1))
    assert error["type"] == "target_too_deep"
    assert error["loc"] == ("target",)
    assert "at not.all.0.not.all.0.not.all.0.not.all.0;" in error["msg"]


def test_hostile_depth_is_refused_cheaply() -> None:
    """A target nested far beyond the limit is refused without recursing into it."""
    data: dict[str, Any] = {"tag": "beta"}
    for _ in range(50_000):
        data = {"not": data}
    with pytest.raises(ValidationError) as caught:
        parse(data)
    assert caught.value.errors()[0]["type"] == "target_too_deep"


def test_too_many_nodes_is_refused_with_a_path() -> None:
    """More than MAX_NODES targets in all is refused, naming where the limit was reached."""
    [error] = errors_of({"any": [{"tag": "beta"}] * MAX_NODES})
    assert error["type"] == "target_too_large"
    assert f"reached at any.{MAX_NODES - 1}" in error["msg"]


def test_maximum_node_count_is_accepted() -> None:
    """A target holding exactly MAX_NODES targets is valid."""
    target = parse({"any": [{"tag": "beta"}] * (MAX_NODES - 1)})
    assert matches(target, DEVICE_ID, ANDROID_BETA)


def test_limits_apply_to_python_built_targets() -> None:
    """Nesting already-built nodes is checked too, not only raw JSON."""
    node: Target = HasTag(tag="beta")
    for _ in range(MAX_DEPTH):
        node = Not(not_=node)
    with pytest.raises(ValidationError, match="target_too_deep"):
        Policy(target=node)


def test_python_construction_by_field_name() -> None:
    """Nodes build from Python with field names, the keywords spelled in_ and not_."""
    target = AllOf(
        all=[
            AttrIn(attr="region", in_=["eu"]),
            Not(not_=AttrEquals(attr="platform", eq="ios")),
            AnyOf(any=[Everyone()]),
            AttrSemver(attr="app_version", semver="^5"),
            DeviceIds(device_ids=[DEVICE_ID]),
        ]
    )
    assert matches(target, DEVICE_ID, ANDROID_BETA)


def test_json_round_trip() -> None:
    """A target dumps to the documented JSON keys and validates back to an equal target."""
    data = {
        "all": [
            {"attr": "platform", "eq": "android"},
            {"attr": "region", "in": ["eu", "us"]},
            {"attr": "app_version", "semver": ">=5.2.0 <6"},
            {"tag": "beta"},
            {"device_ids": [DEVICE_ID]},
            {"not": {"any": [{"everyone": True}, {"tag": "staff"}]}},
        ]
    }
    adapter: TypeAdapter[Target] = TypeAdapter(Target)
    target = adapter.validate_python(data)
    dumped = adapter.dump_json(target)
    assert json.loads(dumped) == data
    assert adapter.validate_json(dumped) == target


def test_model_dump_uses_json_keys() -> None:
    """A node's model_dump writes "in" and "not", not the Python field names."""
    assert AttrIn(attr="region", in_=["eu"]).model_dump() == {"attr": "region", "in": ["eu"]}
    assert Not(not_=Everyone()).model_dump() == {"not": {"everyone": True}}


def test_device_ids_are_stored_canonically() -> None:
    """Listed ids are normalised to lowercase hyphenated UUIDs."""
    target = parse({"device_ids": [DEVICE_ID.upper().replace("-", "")]})
    assert isinstance(target, DeviceIds)
    assert target.device_ids == [DEVICE_ID]


@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param({"attr": "platform", "eq": "android"}, "platform = android", id="eq"),
        pytest.param({"attr": "region", "in": ["eu", "us"]}, "region in [eu, us]", id="in"),
        pytest.param(
            {"attr": "region", "in": [f"r{i}" for i in range(8)]},
            "region in [r0, r1, r2, r3, r4, +3 more]",
            id="long-in",
        ),
        pytest.param(
            {"attr": "app_version", "semver": ">=5.2.0 <6"},
            "app_version in >=5.2.0 <6",
            id="semver",
        ),
        pytest.param({"tag": "beta"}, "tag beta", id="tag"),
        pytest.param({"device_ids": [DEVICE_ID]}, "one of 1 listed device", id="one-id"),
        pytest.param({"device_ids": [DEVICE_ID, OTHER_ID]}, "one of 2 listed devices", id="ids"),
        pytest.param({"everyone": True}, "everyone", id="everyone"),
        pytest.param(
            {
                "all": [
                    {"attr": "platform", "eq": "android"},
                    {"attr": "app_version", "semver": ">=5.2.0 <6"},
                    {"tag": "beta"},
                ]
            },
            "platform = android AND app_version in >=5.2.0 <6 AND tag beta",
            id="all",
        ),
        pytest.param(
            {"all": [{"any": [{"tag": "a"}, {"tag": "b"}]}, {"not": {"tag": "c"}}]},
            "(tag a OR tag b) AND NOT tag c",
            id="nested-parenthesised",
        ),
        pytest.param(
            {"not": {"all": [{"tag": "a"}, {"tag": "b"}]}},
            "NOT (tag a AND tag b)",
            id="not-composite",
        ),
        pytest.param({"any": [{"all": [{"tag": "a"}]}]}, "tag a", id="single-child"),
    ],
)
def test_describe(data: dict[str, Any], text: str) -> None:
    """describe() renders a target as a short line for dashboards."""
    assert describe(parse(data)) == text


def test_compiled_target_matches_like_matches() -> None:
    """A compiled target gives the same answer as matches() for every device."""
    target = parse(
        {"any": [{"attr": "region", "eq": "eu"}, {"all": [{"tag": "beta"}, {"everyone": True}]}]}
    )
    matcher = compile_target(target)
    devices = [
        attributes(region="eu"),
        attributes(region="us", tags=["beta"]),
        attributes(region="us"),
        attributes(),
    ]
    assert [matcher(DEVICE_ID, device) for device in devices] == [
        matches(target, DEVICE_ID, device) for device in devices
    ]


def test_large_device_id_list_over_a_fleet() -> None:
    """A 10,000-id list compiles once and is evaluated across a large fleet."""
    listed = [str(uuid.UUID(int=i + 1)) for i in range(MAX_DEVICE_IDS)]
    matcher = compile_target(parse({"device_ids": listed}))
    fleet = [str(uuid.UUID(int=i)) for i in range(0, 2 * MAX_DEVICE_IDS, 2)]
    hits = sum(matcher(device_id, ANDROID_BETA) for device_id in fleet)
    # Even ids 2..10,000 are listed: 5,000 of the 10,000 devices.
    assert hits == MAX_DEVICE_IDS // 2
