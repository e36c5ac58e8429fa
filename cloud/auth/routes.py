"""Enrollment keys: admins create them; apps use one to register devices."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Path, status

from cloud.auth import service
from cloud.auth.schemas import (
    CreatedEnrollmentKey,
    CreateEnrollmentKey,
    EnrollmentKeyList,
    EnrollmentKeyOut,
)
from cloud.auth.tables import EnrollmentKeyRow
from cloud.core.db import INT32_MAX, utcnow
from cloud.core.deps import Admin, DbSession, ReadSession

router = APIRouter(prefix="/v1/enrollment-keys", tags=["enrollment keys"])


def _out(row: EnrollmentKeyRow) -> EnrollmentKeyOut:
    return EnrollmentKeyOut(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        max_devices=row.max_devices,
        devices_enrolled=row.devices_enrolled,
        revoked=row.revoked_at is not None,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_enrollment_key(
    _admin: Admin,
    session: DbSession,
    body: Annotated[CreateEnrollmentKey | None, Body()] = None,
) -> CreatedEnrollmentKey:
    """Create an enrollment key. The secret `key` is in this response only; store it in the app."""
    body = body or CreateEnrollmentKey()
    expires_at = utcnow() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    row, token = service.create_enrollment_key(
        session,
        name=body.name or f"key-{secrets.token_hex(4)}",
        expires_at=expires_at,
        max_devices=body.max_devices,
    )
    return CreatedEnrollmentKey(**_out(row).model_dump(), key=token)


@router.get("")
def list_enrollment_keys(_admin: Admin, session: ReadSession) -> EnrollmentKeyList:
    """List enrollment keys (never their secrets)."""
    return EnrollmentKeyList(items=[_out(r) for r in service.list_enrollment_keys(session)])


@router.delete("/{key_id}")
def revoke_enrollment_key(
    key_id: Annotated[int, Path(ge=1, le=INT32_MAX)], _admin: Admin, session: DbSession
) -> EnrollmentKeyOut:
    """Revoke an enrollment key: it enrolls no more devices; devices it enrolled stay."""
    return _out(service.revoke_enrollment_key(session, key_id))
