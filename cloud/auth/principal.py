"""Who is calling: an admin key or a device, as established from a bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    key_id: int
    name: str


@dataclass(frozen=True, slots=True)
class DevicePrincipal:
    seq: int
    device_id: str
    last_seen: datetime | None = None


Principal = AdminPrincipal | DevicePrincipal
