"""Registering devices, reading them, and listing them with filters and keyset pagination."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from cloud.auth.service import redeem_enrollment_key
from cloud.core.errors import DeviceNotFound
from cloud.core.pagination import keyset_page
from cloud.core.secrets import TokenKind, hash_token, new_token
from cloud.devices.tables import DeviceRow, DeviceTagRow
from device_sdk.wire import DeviceAttributes, DeviceInfo, RegisterDeviceResponse

MAX_PAGE = 500


@dataclass(frozen=True)
class DeviceFilter:
    platform: str | None = None
    os_version: str | None = None
    app_version: str | None = None
    model: str | None = None
    region: str | None = None
    tags: list[str] = field(default_factory=list)


def to_info(row: DeviceRow) -> DeviceInfo:
    return DeviceInfo(
        device_id=row.device_id,
        attributes=attributes_of(row),
        created_at=row.created_at,
        last_seen=row.last_seen,
    )


def attributes_of(row: DeviceRow) -> DeviceAttributes:
    return DeviceAttributes(
        platform=row.platform,
        os_version=row.os_version,
        app_version=row.app_version,
        model=row.model,
        region=row.region,
        tags=[t.tag for t in row.tags],
    )


def _apply_attributes(row: DeviceRow, attributes: DeviceAttributes) -> None:
    row.platform = attributes.platform
    row.os_version = attributes.os_version
    row.app_version = attributes.app_version
    row.model = attributes.model
    row.region = attributes.region
    row.tags = [DeviceTagRow(tag=t) for t in sorted(set(attributes.tags))]


def register(
    session: Session, enrollment_key: str, attributes: DeviceAttributes, *, public_key: str
) -> RegisterDeviceResponse:
    key = redeem_enrollment_key(session, enrollment_key)
    token = new_token(TokenKind.device)
    row = DeviceRow(
        device_id=str(uuid.uuid4()), token_hash=hash_token(token), enrollment_key_id=key.id
    )
    _apply_attributes(row, attributes)
    session.add(row)
    session.flush()
    return RegisterDeviceResponse(
        **to_info(row).model_dump(), token=token, platform_public_key=public_key
    )


def get_by_seq(session: Session, seq: int) -> DeviceRow:
    row = session.get(DeviceRow, seq)
    if row is None:  # the device was removed while its request was in flight
        raise DeviceNotFound("This device was removed; register it again.")
    return row


def get(session: Session, device_id: str) -> DeviceRow:
    row = session.scalar(select(DeviceRow).where(DeviceRow.device_id == device_id))
    if row is None:
        raise DeviceNotFound(
            f"Device {device_id!r} does not exist; list devices with GET /v1/devices."
        )
    return row


def update_attributes(session: Session, seq: int, attributes: DeviceAttributes) -> DeviceRow:
    row = get_by_seq(session, seq)
    _apply_attributes(row, attributes)
    session.flush()
    return row


def remove(session: Session, device_id: str) -> str:
    """Delete a device; returns its token's hash, for revoking cached credentials."""
    row = get(session, device_id)
    session.delete(row)
    return row.token_hash


def _filtered(filters: DeviceFilter) -> Select[DeviceRow]:
    query = select(DeviceRow)
    for column, value in (
        (DeviceRow.platform, filters.platform),
        (DeviceRow.os_version, filters.os_version),
        (DeviceRow.app_version, filters.app_version),
        (DeviceRow.model, filters.model),
        (DeviceRow.region, filters.region),
    ):
        if value is not None:
            query = query.where(column == value)
    for tag in set(filters.tags):
        query = query.where(
            select(DeviceTagRow.device_seq)
            .where(DeviceTagRow.device_seq == DeviceRow.seq, DeviceTagRow.tag == tag)
            .exists()
        )
    return query


def list_page(
    session: Session, filters: DeviceFilter, *, limit: int, cursor: str | None
) -> tuple[list[DeviceRow], str | None]:
    """One page of devices in registration order; the cursor is the last seq seen."""
    return keyset_page(session, _filtered(filters), DeviceRow.seq, limit=limit, cursor=cursor)
