"""Storing uploaded items once per device and key, and listing them for the admin."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.core.db import utcnow
from cloud.core.errors import Unauthorized
from cloud.core.pagination import decode_cursor, encode_cursor
from cloud.devices.tables import DeviceRow
from cloud.uploads.tables import UploadRow
from device_sdk.wire import UploadAccepted, UploadChannel, UploadItem

MAX_PAGE = 500


def store(
    session: Session, device_seq: int, channel: UploadChannel, items: Sequence[UploadItem]
) -> UploadAccepted:
    """Insert the items whose key this device has not uploaded before; count the rest.

    One statement, ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: two requests racing
    with the same keys (a retry overtaking its original) still store each item once.
    """
    now = utcnow()
    rows = [
        {
            "device_seq": device_seq,
            "channel": channel.value,
            "key": item.key,
            "payload": item.payload,
            "received_at": now,
        }
        for item in items
    ]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(UploadRow)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["device_seq", "key"])
        .returning(UploadRow.id)
    )
    try:
        accepted = len(session.execute(statement).all())
    except IntegrityError as exc:  # the only foreign key: the device row went away
        raise Unauthorized(
            "This device was removed while its upload was in flight; its token no longer "
            "works. Register the device again."
        ) from exc
    return UploadAccepted(accepted=accepted, duplicates=len(items) - accepted)


def list_page(
    session: Session,
    channel: UploadChannel,
    *,
    device_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[UploadRow, str]], str | None]:
    """One page of a channel's items in the order they were stored, with their device's id;
    the cursor is the last row id seen."""
    query = (
        select(UploadRow, DeviceRow.device_id)
        .join(DeviceRow, DeviceRow.seq == UploadRow.device_seq)
        .where(UploadRow.channel == channel.value)
    )
    if device_id is not None:
        query = query.where(DeviceRow.device_id == device_id)
    if cursor:
        query = query.where(UploadRow.id > decode_cursor(cursor))
    rows = [
        (row, owner)
        for row, owner in session.execute(query.order_by(UploadRow.id).limit(limit + 1))
    ]
    next_cursor = encode_cursor(rows[limit - 1][0].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
