"""Federated learning over HTTP: devices upload anonymous updates; admins open and watch
rounds and give each model its cloud validation set."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from cloud.coda.ratelimit import RateLimiter
from cloud.core.body_limit import read_within
from cloud.core.db import INT32_MAX
from cloud.core.deps import Admin, Context, CurrentDevice, ReadSession
from cloud.core.errors import PayloadTooLarge, RateLimited, UnsupportedMediaType
from cloud.federation import service
from cloud.federation.candidate import TrainableCache
from cloud.federation.errors import InvalidValidationSet, RoundAlreadyOpen
from cloud.federation.rounds import RoundRunner
from cloud.federation.schemas import (
    CreateRound,
    FederatedModelOut,
    RoundOut,
    RoundPage,
    RoundStatus,
    ValidationSetOut,
)
from device_sdk.federation_wire import MODEL_NAME_PATTERN, ModelUpdate, UpdateAccepted

router = APIRouter(tags=["federation"])
ModelPath = Annotated[str, Path(max_length=64, pattern=MODEL_NAME_PATTERN)]
RoundPath = Annotated[int, Path(ge=1, le=INT32_MAX)]
# A concurrent request may take the same key, or open the model's round, between our
# checks and our insert; the retry then sees what it did.
_RACE_RETRIES = 3


@dataclass
class FederationState:
    """What federation keeps per replica: the per-device upload limiter (memory only),
    the base models' trainable tensors, and the background round runner."""

    limiter: RateLimiter
    runner: RoundRunner
    trainables: TrainableCache = field(default_factory=TrainableCache)


async def get_federation(request: Request) -> FederationState:
    state: FederationState = request.app.state.federation
    return state


Federation = Annotated[FederationState, Depends(get_federation)]


async def _read(request: Request, limit: int, what: str) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what} may have at most {limit} bytes; this one has {declared}.")
    too_large = PayloadTooLarge(f"{what} may have at most {limit} bytes; send a smaller one.")
    return await read_within(request, limit, too_large)


def _parse_update(raw: bytes) -> ModelUpdate:
    try:
        return ModelUpdate.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"]), "input": None} for e in exc.errors()]
        raise RequestValidationError(errors, body=None) from None


@router.post(
    "/v1/federation/updates",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "device_sdk.federation_wire.ModelUpdate",
                    }
                }
            },
        }
    },
)
async def upload_update(
    request: Request, device: CurrentDevice, context: Context, federation: Federation
) -> UpdateAccepted:
    """Add a device's model update (`ModelUpdate`: deltas of the base version's trainable
    tensors) to its model's open round, opening one if none is. Nothing that identifies the
    device is stored with it: not its id, token, address, nor when it arrived. A retried
    `key` counts once (`duplicate: true`). 409 `base_version_mismatch` when the round trains
    another version; 422 `unknown_parameter`, `parameter_shape_mismatch` or
    `row_id_out_of_range` when the deltas do not fit the model; 429 with Retry-After when
    this device token uploads too often."""
    wait = federation.limiter.acquire(device.seq)
    if wait > 0:
        raise RateLimited(
            f"This device has uploaded updates too often; retry in {math.ceil(wait)} s.",
            retry_after_s=math.ceil(wait),
        )
    media = request.headers.get("content-type", "application/json").partition(";")[0].strip()
    if media.lower() != "application/json":
        raise UnsupportedMediaType(
            f"An update is sent as application/json; this request has Content-Type {media!r}."
        )
    raw = await _read(request, context.settings.federation_max_update_bytes, "An update")
    body = await run_in_threadpool(_parse_update, raw)
    del device  # from here on, nothing about the caller is used

    def work() -> tuple[UpdateAccepted, int | None]:
        for _attempt in range(_RACE_RETRIES):
            try:
                with context.db.session() as session:
                    return service.receive(
                        session, context.settings, context.blobs, federation.trainables, body
                    )
            except IntegrityError:
                continue
        raise RoundAlreadyOpen(
            f"Model {body.model!r}'s round changed while this update was stored; upload it again."
        )

    accepted, ready = await run_in_threadpool(work)
    if ready is not None:
        federation.runner.close_soon(ready)
    return accepted


@router.post("/v1/federation/rounds", status_code=status.HTTP_201_CREATED)
def create_round(body: CreateRound, _admin: Admin, context: Context) -> RoundOut:
    """Open a round for a model (one open round per model; 409 `round_already_open`). The
    model needs a validation set first (409 `federation_not_enabled`). With `deploy`, a
    released version is shipped as the task's next version under the given policy."""
    try:
        with context.db.session() as session:
            return service.round_out(service.open_round(session, context.settings, body))
    except IntegrityError:
        with context.db.session(write=False) as session:
            service.open_round(session, context.settings, body)  # raises RoundAlreadyOpen
        raise


@router.get("/v1/federation/rounds")
def list_rounds(
    _admin: Admin,
    session: ReadSession,
    model: Annotated[str | None, Query(max_length=64, pattern=MODEL_NAME_PATTERN)] = None,
    status: RoundStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RoundPage:
    """Rounds, newest first, optionally of one model or in one status. Pass `next_cursor`
    back as `cursor` for the next page."""
    rows, next_cursor = service.list_page(
        session, model=model, status=status, limit=limit, cursor=cursor
    )
    return RoundPage(items=[service.round_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/v1/federation/rounds/{round_id}")
def read_round(round_id: RoundPath, _admin: Admin, session: ReadSession) -> RoundOut:
    """One round: updates received of k, status, clients aggregated, the base's and the
    candidate's validation AUC, and the released version (and deployment) if any."""
    return service.round_out(service.get_round(session, round_id))


@router.get("/v1/federation/models/{name}")
def read_model(name: ModelPath, _admin: Admin, session: ReadSession) -> FederatedModelOut:
    """A model's federation: its validation set, open round, rounds by status, and the
    validation AUC of each version evaluated."""
    return service.model_overview(session, name)


@router.put("/v1/federation/models/{name}/validation")
async def put_validation(
    name: ModelPath, request: Request, _admin: Admin, context: Context
) -> ValidationSetOut:
    """Give a model its cloud validation set: an .npz (raw body, or the `file` part of a
    multipart form) with one array per model input, named as the input, and `label` (0/1).
    It is checked against the latest version (422 `invalid_validation_set`) and replaces
    the previous set."""
    limit = context.settings.max_upload_bytes
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form(max_part_size=limit) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InvalidValidationSet(
                    "A multipart validation upload needs the .npz in a part named 'file'."
                )
            data = await upload.read()
    else:
        data = await _read(request, limit, "A validation set")
    return await run_in_threadpool(
        service.put_validation, context.db, context.blobs, name, data, max_bytes=limit
    )
