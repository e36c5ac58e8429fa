"""Read queries for the fleet pages: counts grouped in the database, pages by keyset.

Every list is one page of rows found through an index, and whatever a page shows per row
(tags, versions, statuses) comes in one more query for the whole page, never one per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cloud.core.db import utcnow
from cloud.core.pagination import decode_cursor, encode_cursor, keyset_page
from cloud.deploy.tables import DeviceTaskRow, TaskStatusRow
from cloud.devices.tables import DeviceRow, DeviceTagRow
from cloud.registry.tables import ModelVersionRow
from cloud.tasks.tables import TaskVersionRow

RECENTLY_SEEN = timedelta(minutes=5)
TOP_VERSIONS = 12
DEVICE_PAGE = 50
MODEL_PAGE = 50
RECENT_REPORTS = 20


@dataclass(frozen=True)
class Fleet:
    total: int
    online_now: int
    seen_recently: int
    by_platform: list[tuple[str, int]]
    by_app_version: list[tuple[str, int]]
    other_app_versions: int


@dataclass(frozen=True)
class DeviceSearch:
    """What the devices page filters on; empty strings mean "any"."""

    q: str = ""
    platform: str = ""
    app_version: str = ""
    region: str = ""
    tag: str = ""

    def active(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class DevicePage:
    rows: list[DeviceRow]
    total: int
    next_cursor: str | None


@dataclass(frozen=True)
class DeviceDetail:
    device: DeviceRow
    desired: list[tuple[str, int, int]]  # task, version, deployment id
    reports: list[TaskStatusRow]


@dataclass(frozen=True)
class ModelPage:
    rows: list[ModelVersionRow]
    names: int
    next_cursor: str | None


def _label(value: str | None) -> str:
    return value if value is not None else "(unset)"


def fleet(session: Session, online_now: int) -> Fleet:
    """Fleet size and breakdowns, each one GROUP BY over an indexed column."""
    seen = (
        session.scalar(
            select(func.count())
            .select_from(DeviceRow)
            .where(DeviceRow.last_seen >= utcnow() - RECENTLY_SEEN)
        )
        or 0
    )
    platforms = session.execute(
        select(DeviceRow.platform, func.count()).group_by(DeviceRow.platform)
    ).all()
    versions = session.execute(
        select(DeviceRow.app_version, func.count()).group_by(DeviceRow.app_version)
    ).all()
    ranked = sorted(((_label(v), n) for v, n in versions), key=lambda p: (-p[1], p[0]))
    return Fleet(
        total=sum(n for _, n in platforms),  # every device is in one platform group
        online_now=online_now,
        seen_recently=seen,
        by_platform=sorted(((_label(p), n) for p, n in platforms), key=lambda p: (-p[1], p[0])),
        by_app_version=ranked[:TOP_VERSIONS],
        other_app_versions=sum(n for _, n in ranked[TOP_VERSIONS:]),
    )


def _searched(search: DeviceSearch) -> Select[Any]:
    query = select(DeviceRow.seq)
    for column, value in (
        (DeviceRow.platform, search.platform),
        (DeviceRow.app_version, search.app_version),
        (DeviceRow.region, search.region),
    ):
        if value:
            query = query.where(column == value)
    if search.q:
        # A prefix of the id as a range, so the unique index on device_id answers it.
        prefix = search.q.lower()
        query = query.where(DeviceRow.device_id >= prefix, DeviceRow.device_id < prefix + "~")
    if search.tag:
        # IN (the tag's devices) reads the (tag, device_seq) index once; a correlated
        # EXISTS would probe it once per device.
        query = query.where(
            DeviceRow.seq.in_(select(DeviceTagRow.device_seq).where(DeviceTagRow.tag == search.tag))
        )
    return query


def devices(
    session: Session, search: DeviceSearch, cursor: str | None, limit: int | None = None
) -> DevicePage:
    """One page of matching devices in registration order, and how many match in all."""
    limit = limit or DEVICE_PAGE
    ids = _searched(search)
    total = session.scalar(select(func.count()).select_from(ids.subquery())) or 0
    if cursor:
        ids = ids.where(DeviceRow.seq > decode_cursor(cursor))
    seqs: list[int] = list(session.scalars(ids.order_by(DeviceRow.seq).limit(limit + 1)))
    page = seqs[:limit]
    # The ORM rows (and, through selectin, every row's tags in one query) for the page only.
    rows = (
        list(session.scalars(select(DeviceRow).where(DeviceRow.seq.in_(page)).order_by("seq")))
        if page
        else []
    )
    next_cursor = encode_cursor(page[-1]) if len(seqs) > limit else None
    return DevicePage(rows=rows, total=total, next_cursor=next_cursor)


def device(session: Session, device_id: str) -> DeviceDetail | None:
    row = session.scalar(select(DeviceRow).where(DeviceRow.device_id == device_id))
    if row is None:
        return None
    desired = [
        (task, version, deployment_id)
        for task, version, deployment_id in session.execute(
            select(DeviceTaskRow.task_name, TaskVersionRow.version, DeviceTaskRow.deployment_id)
            .join(TaskVersionRow, TaskVersionRow.id == DeviceTaskRow.task_version_id)
            .where(DeviceTaskRow.device_seq == row.seq)
            .order_by(DeviceTaskRow.task_name)
        )
    ]
    reports = list(
        session.scalars(
            select(TaskStatusRow)
            .where(TaskStatusRow.device_seq == row.seq)
            .order_by(TaskStatusRow.updated_at.desc())
            .limit(RECENT_REPORTS)
        )
    )
    return DeviceDetail(device=row, desired=desired, reports=reports)


def models(session: Session, cursor: str | None, limit: int = MODEL_PAGE) -> ModelPage:
    """Model versions, newest first."""
    rows, next_cursor = keyset_page(
        session,
        select(ModelVersionRow),
        ModelVersionRow.id,
        limit=limit,
        cursor=cursor,
        newest_first=True,
    )
    names = session.scalar(select(func.count(func.distinct(ModelVersionRow.name)))) or 0
    return ModelPage(rows=rows, names=names, next_cursor=next_cursor)


def last_seen_age(now: datetime, then: datetime) -> str:
    """ "12 s ago", "5 min ago", "3 h ago", "4 d ago"."""
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
