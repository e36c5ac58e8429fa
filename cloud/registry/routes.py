"""The model registry over HTTP: upload ONNX files, read versions and their signatures."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from cloud.core.db import INT32_MAX
from cloud.core.deps import Admin, Context, ReadSession
from cloud.events.publisher import publish_event
from cloud.registry import service
from cloud.registry.schemas import (
    MODEL_NAME_PATTERN,
    ModelDescription,
    ModelDetail,
    ModelList,
    ModelName,
    ModelVersionOut,
    Target,
    parse_metrics,
)

router = APIRouter(prefix="/v1/models", tags=["models"])
# The name pattern refuses what no model can be called (a NUL, say) before any query.
NamePath = Annotated[str, Path(max_length=64, pattern=MODEL_NAME_PATTERN)]
VersionPath = Annotated[int, Path(ge=1, le=INT32_MAX)]


async def _refuse_repeated_parts(request: Request) -> None:
    """A form that sends a field twice is ambiguous: refuse it rather than keep the last."""
    form = await request.form()  # already parsed for the parameters; this reads the cache
    counts = Counter(field for field, _ in form.multi_items())
    repeated = sorted(field for field, count in counts.items() if count > 1)
    if repeated:
        raise RequestValidationError(
            [
                {
                    "type": "repeated_field",
                    "loc": ("body", field),
                    "msg": f"sent {counts[field]} times; send it once",
                    "input": None,
                }
                for field in repeated
            ]
        )


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_model(
    _admin: Admin,
    context: Context,
    request: Request,
    file: Annotated[UploadFile, File(description="The .onnx file.")],
    name: Annotated[ModelName, Form(description="Lowercase name: letters, digits, '.', '_', '-'.")],
    target: Annotated[Target, Form(description="`cloud` (served by the cloud) or `device`.")],
    description: Annotated[
        ModelDescription,
        Form(description="Up to 500 characters; of control characters, tab and line breaks only."),
    ] = "",
    metrics: Annotated[str | None, Form(description='JSON object, e.g. {"auc": 0.78}.')] = None,
) -> ModelVersionOut:
    """Register an ONNX model as the next immutable version of `name`. The file is checked
    with the ONNX checker (422 when invalid) and its input/output signature is recorded."""
    await _refuse_repeated_parts(request)
    parsed_metrics = parse_metrics(metrics)
    data = await file.read()
    row = await run_in_threadpool(
        lambda: service.register_model(
            context.db,
            context.blobs,
            name=name,
            target=target,
            data=data,
            description=description,
            metrics=parsed_metrics,
        )
    )
    await publish_event(
        context.broker, "model.registered", {"name": row.name, "version": row.version}
    )
    return service.to_out(row)


@router.get("")
def list_models(_admin: Admin, session: ReadSession) -> ModelList:
    """Every registered model name with its latest version."""
    return ModelList(items=service.list_models(session))


@router.get("/{name}")
def read_model(name: NamePath, _admin: Admin, session: ReadSession) -> ModelDetail:
    """A model and all its versions, oldest first."""
    rows = service.versions_of(session, name)
    return ModelDetail(
        name=name, target=Target(rows[-1].target), versions=[service.to_out(r) for r in rows]
    )


@router.get("/{name}/versions/{version}")
def read_model_version(
    name: NamePath, version: VersionPath, _admin: Admin, session: ReadSession
) -> ModelVersionOut:
    """One version of a model: digest, size, signature, metrics."""
    return service.to_out(service.get_version(session, name, version))
