"""Running specs over events: inline, or the ``events`` uploads a device stored.

The engine is the device's own (:func:`pipelines.run_batch`): the same specs over the same
events in the same order give the same features and firings as the device computed, which
is the point. Stored uploads are read in the order they arrived, each item's payload being
``{"events": [event, ...]}`` as ``Device.track``'s docstring shows; an item of another
shape is skipped and counted, a malformed event is counted by the engine as ``invalid``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.core.db import Database
from cloud.core.errors import DeviceNotFound, InvalidPipelineSpec, PipelineInputTooLarge
from cloud.devices.tables import DeviceRow
from cloud.pipelines.schemas import (
    MAX_EVENTS,
    FeatureOut,
    FiringOut,
    PipelineRunRequest,
    PipelineRunResult,
    UploadSelection,
)
from cloud.uploads import service as uploads
from device_sdk.wire import UploadChannel
from pipelines import Engine, SpecError


def check_specs(specs: list[dict[str, Any]]) -> Engine:
    """An engine of ``specs``, or :class:`InvalidPipelineSpec` naming every problem."""
    try:
        return Engine(specs)
    except SpecError as exc:
        raise InvalidPipelineSpec(str(exc), details=exc.problems) from exc


def stored_events(
    session: Session, selection: UploadSelection
) -> tuple[list[Any], int, int, str | None]:
    """The events of the selected uploads in order, the items read, the items skipped, and
    the cursor after the last item (None when the device has no more)."""
    found = session.execute(
        select(DeviceRow.seq).where(DeviceRow.device_id == selection.device_id)
    ).first()
    if found is None:
        raise DeviceNotFound(
            f"No device {selection.device_id!r}; list devices with GET /v1/devices."
        )
    rows, next_cursor = uploads.list_page(
        session,
        UploadChannel.events,
        device_id=selection.device_id,
        limit=selection.limit,
        cursor=selection.cursor,
    )
    events: list[Any] = []
    skipped = 0
    for row, _ in rows:
        batch = row.payload.get("events") if isinstance(row.payload, dict) else None
        if not isinstance(batch, list):
            skipped += 1
            continue
        events.extend(batch)
        if len(events) > MAX_EVENTS:
            raise PipelineInputTooLarge(
                f"The chosen uploads hold more than {MAX_EVENTS} events; ask for fewer "
                "items with uploads.limit and continue from next_cursor."
            )
    return events, len(rows), skipped, next_cursor


def run(db: Database, request: PipelineRunRequest) -> PipelineRunResult:
    """Run the request's specs over its events. Stored uploads are read in one short
    read-only transaction, closed before the engine runs."""
    engine = check_specs(request.specs)
    items = skipped = 0
    next_cursor = None
    if request.uploads is not None:
        with db.session(write=False) as session:
            events, items, skipped, next_cursor = stored_events(session, request.uploads)
    else:
        events = request.events or []
    features: dict[str, FeatureOut] = {}
    firings: list[FiringOut] = []
    # One batch, one drain: the last value of every feature, as a device that drained
    # after each event wrote it last (see Engine.feed_many).
    for firing in engine.feed_many(events):
        firings.append(
            FiringOut(
                trigger=firing.trigger,
                key=firing.key,
                events=[e.to_json() for e in firing.events],
            )
        )
    for feature in engine.drain():
        features[feature.name] = FeatureOut(
            value=feature.value, type=feature.type, ttl_s=feature.ttl_s
        )
    return PipelineRunResult(
        features=dict(sorted(features.items())),
        firings=firings,
        stats=engine.stats.as_dict(),
        events_read=len(events),
        upload_items_read=items,
        skipped_items=skipped,
        next_cursor=next_cursor,
    )
