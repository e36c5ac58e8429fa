"""Admin keys, enrollment keys and bearer-token authentication."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.auth.principal import AdminPrincipal, DevicePrincipal, Principal
from cloud.auth.tables import AdminKeyRow, EnrollmentKeyRow
from cloud.core.db import utcnow
from cloud.core.errors import (
    DuplicateName,
    EnrollmentKeyExhausted,
    EnrollmentKeyExpired,
    EnrollmentKeyNotFound,
    EnrollmentKeyRevoked,
    InvalidEnrollmentKey,
    NotFound,
    Unauthorized,
)
from cloud.core.secrets import TokenKind, hash_token, hashes_match, new_token, token_kind
from cloud.devices.tables import DeviceRow

BOOTSTRAP_KEY_NAME = "bootstrap"
# A device's last_seen is written at most this often, so polling devices cost no writes.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)


def authenticate(session: Session, token: str) -> Principal:
    """The admin key or device behind ``token``; Unauthorized when nobody issued it.

    Read-only: the caller records a device's ``last_seen`` (see ``needs_last_seen``)."""
    digest = hash_token(token)
    # Device tokens say so in their prefix: the hot path (devices) skips the admin lookup.
    if token_kind(token) is not TokenKind.device:
        admin = session.scalar(
            select(AdminKeyRow).where(
                AdminKeyRow.token_hash == digest, AdminKeyRow.revoked_at.is_(None)
            )
        )
        if admin is not None and hashes_match(admin.token_hash, token):
            return AdminPrincipal(key_id=admin.id, name=admin.name)
    device = session.execute(
        select(DeviceRow.seq, DeviceRow.device_id, DeviceRow.token_hash, DeviceRow.last_seen).where(
            DeviceRow.token_hash == digest
        )
    ).one_or_none()
    if device is not None and hashes_match(device.token_hash, token):
        return DevicePrincipal(
            seq=device.seq, device_id=device.device_id, last_seen=device.last_seen
        )
    raise Unauthorized(
        "The bearer token is not valid (unknown, revoked, or mistyped). Use an admin key from "
        "`tandem admin create-key`, or the device token returned by POST /v1/devices."
    )


def needs_last_seen(principal: DevicePrincipal) -> bool:
    return principal.last_seen is None or utcnow() - principal.last_seen >= LAST_SEEN_RESOLUTION


def touch_last_seen(session: Session, principal: DevicePrincipal) -> None:
    session.execute(
        update(DeviceRow).where(DeviceRow.seq == principal.seq).values(last_seen=utcnow())
    )


def sync_bootstrap_key(session: Session, token: str | None) -> None:
    """Make the ``bootstrap`` admin key match TANDEM_ADMIN_TOKEN: set, changed, or removed."""
    row = session.scalar(select(AdminKeyRow).where(AdminKeyRow.bootstrap.is_(True)))
    if token is None:
        if row is not None and row.revoked_at is None:
            row.revoked_at = utcnow()
        return
    digest = hash_token(token)
    if row is None:
        session.add(AdminKeyRow(name=BOOTSTRAP_KEY_NAME, token_hash=digest, bootstrap=True))
    else:
        row.token_hash = digest
        row.revoked_at = None
    try:
        session.flush()
    except IntegrityError:
        # Another replica starting at the same moment wrote the same row first.
        session.rollback()


def create_admin_key(session: Session, name: str) -> str:
    """A new admin key; returns the secret, which is shown once and stored only hashed."""
    if session.scalar(select(AdminKeyRow.id).where(AdminKeyRow.name == name)) is not None:
        raise DuplicateName(f"An admin key named {name!r} exists; choose another name.")
    token = new_token(TokenKind.admin)
    session.add(AdminKeyRow(name=name, token_hash=hash_token(token)))
    session.flush()
    return token


def list_admin_keys(session: Session) -> list[AdminKeyRow]:
    return list(session.scalars(select(AdminKeyRow).order_by(AdminKeyRow.id)))


def revoke_admin_key(session: Session, name: str) -> None:
    row = session.scalar(select(AdminKeyRow).where(AdminKeyRow.name == name))
    if row is None:
        names = ", ".join(k.name for k in list_admin_keys(session)) or "none"
        raise NotFound(f"No admin key named {name!r}; existing keys: {names}.")
    row.revoked_at = row.revoked_at or utcnow()


def create_enrollment_key(
    session: Session,
    *,
    name: str,
    expires_at: datetime | None = None,
    max_devices: int | None = None,
) -> tuple[EnrollmentKeyRow, str]:
    if session.scalar(select(EnrollmentKeyRow.id).where(EnrollmentKeyRow.name == name)) is not None:
        raise DuplicateName(f"An enrollment key named {name!r} exists; choose another name.")
    token = new_token(TokenKind.enrollment)
    row = EnrollmentKeyRow(
        name=name, token_hash=hash_token(token), expires_at=expires_at, max_devices=max_devices
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise DuplicateName(
            f"An enrollment key named {name!r} exists; choose another name."
        ) from exc
    return row, token


def list_enrollment_keys(session: Session) -> list[EnrollmentKeyRow]:
    return list(session.scalars(select(EnrollmentKeyRow).order_by(EnrollmentKeyRow.id)))


def revoke_enrollment_key(session: Session, key_id: int) -> EnrollmentKeyRow:
    row = session.get(EnrollmentKeyRow, key_id)
    if row is None:
        raise EnrollmentKeyNotFound(
            f"Enrollment key {key_id} does not exist; list them with GET /v1/enrollment-keys."
        )
    row.revoked_at = row.revoked_at or utcnow()
    return row


def redeem_enrollment_key(session: Session, token: str) -> EnrollmentKeyRow:
    """Count one enrollment against the key, atomically; refuse unknown, revoked, spent keys."""
    digest = hash_token(token)
    row = session.scalar(select(EnrollmentKeyRow).where(EnrollmentKeyRow.token_hash == digest))
    if row is None or not hashes_match(row.token_hash, token):
        raise InvalidEnrollmentKey(
            "The enrollment key is not valid; ask an admin for one (POST /v1/enrollment-keys)."
        )
    if row.revoked_at is not None:
        raise EnrollmentKeyRevoked(
            f"Enrollment key {row.name!r} was revoked; ask an admin for a new one."
        )
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise EnrollmentKeyExpired(
            f"Enrollment key {row.name!r} expired; ask an admin for a new one."
        )
    # A conditional UPDATE, so two devices racing for the last slot cannot both win.
    claim = update(EnrollmentKeyRow).where(EnrollmentKeyRow.id == row.id)
    if row.max_devices is not None:
        claim = claim.where(EnrollmentKeyRow.devices_enrolled < row.max_devices)
    result = session.execute(claim.values(devices_enrolled=EnrollmentKeyRow.devices_enrolled + 1))
    if result.rowcount == 0:  # type: ignore[attr-defined]  # CursorResult of an UPDATE has rowcount
        raise EnrollmentKeyExhausted(
            f"Enrollment key {row.name!r} has enrolled its maximum of {row.max_devices} devices; "
            "ask an admin for a new one."
        )
    return row
