"""What the dashboard does beyond reading: deployments from a form, and router insight.

A deployment form is parsed into the same ``CreateDeployment`` the REST API takes and
created through the deploy service, so a page and ``POST /v1/deployments`` cannot differ;
nothing is written until the whole form validates.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from cloud.core.context import CloudContext
from cloud.core.errors import TandemError
from cloud.deploy import service as deploy
from cloud.deploy.rollout import rematerialize
from cloud.deploy.schemas import Action, CreateDeployment
from cloud.events.publisher import publish_event
from cloud.router.controller import RouterEngine
from cloud.router.predictor import RouterModel
from cloud.router.tables import RouterObservationRow, RouterRow, RouterVersionRow
from device_sdk.text_features import FeatureSpec, featurize

MAX_FIELD_CHARS = 20_000
KEY_TOKEN_SAMPLE = 200
KEY_TOKENS_SHOWN = 10


class FormErrors(Exception):
    """The form's problems, one line each, for the page to show beside the form."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        raise FormErrors([f"{name}: send text, not a file."])
    if len(value) > MAX_FIELD_CHARS:
        raise FormErrors([f"{name}: at most {MAX_FIELD_CHARS} characters."])
    return value.strip()


def _gates(form: Mapping[str, Any]) -> dict[str, Any] | None:
    if _text(form, "gates") != "on":
        return None
    gates: dict[str, Any] = {}
    for name in ("min_healthy", "min_soak_s", "max_failure_rate", "min_reports"):
        value = _text(form, name)
        if value:
            gates[name] = value
    return gates


def deployment_from_form(form: Mapping[str, Any]) -> CreateDeployment:
    """The deployment a create form asks for; FormErrors lists every problem at once."""
    problems: list[str] = []
    task, _, version = _text(form, "task_version").rpartition(":")
    body: dict[str, Any] = {"task": task, "version": version}
    try:
        body["target"] = json.loads(_text(form, "target") or '{"everyone": true}')
    except (json.JSONDecodeError, RecursionError):
        problems.append('target: not valid JSON; e.g. {"attr": "platform", "eq": "android"}.')
    stages = _text(form, "stages") or "100"
    body["stages"] = [s.strip() for s in stages.split(",")]
    body["gates"] = _gates(form)
    body["priority"] = _text(form, "priority") or "0"
    if problems:
        raise FormErrors(problems)
    try:
        return CreateDeployment.model_validate(body)
    except ValidationError as exc:
        raise FormErrors(
            [
                f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}"
                for e in exc.errors()[:10]
            ]
        ) from None
    except RecursionError:
        raise FormErrors(["target: nested too deeply."]) from None
    except TandemError as exc:  # validators that raise domain errors (e.g. stages)
        raise FormErrors([exc.message]) from None


def _create(context: CloudContext, body: CreateDeployment) -> int:
    with context.db.session() as session:
        try:
            return deploy.create(session, body).id
        except TandemError as exc:
            raise FormErrors([exc.message]) from exc


async def create_deployment(context: CloudContext, body: CreateDeployment) -> int:
    """Create, materialise and announce a deployment, as ``POST /v1/deployments`` does."""
    deployment_id = await run_in_threadpool(_create, context, body)
    await rematerialize(context, body.task)
    await publish_event(
        context.broker, "deployment.created", {"deployment_id": deployment_id, "task": body.task}
    )
    return deployment_id


def _act(context: CloudContext, deployment_id: int, action: Action) -> str:
    with context.db.session() as session:
        return deploy.act(session, deployment_id, action).task_name


async def steer(context: CloudContext, deployment_id: int, action: Action) -> None:
    """Pause, resume, advance or roll back, as ``POST /v1/deployments/{id}/{action}`` does."""
    task = await run_in_threadpool(_act, context, deployment_id, action)
    await rematerialize(context, task)
    await publish_event(
        context.broker, f"deployment.{action.value}", {"deployment_id": deployment_id, "task": task}
    )


@dataclass(frozen=True)
class KeyToken:
    token: str
    push: float
    seen: int


class KeyTokenCache:
    """Top key tokens per metric, recomputed only when a router gets a new version or new
    observations (keyed by the version and the newest observation's id)."""

    def __init__(self, size: int = 32) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, int, int], dict[str, list[KeyToken]]] = OrderedDict()
        self._size = size

    def get(self, key: tuple[int, int, int], compute: Any) -> dict[str, list[KeyToken]]:
        with self._lock:
            found = self._entries.get(key)
        if found is not None:
            return found
        value: dict[str, list[KeyToken]] = compute()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value


def top_key_tokens(
    context: CloudContext,
    engine: RouterEngine,
    cache: KeyTokenCache,
    router: RouterRow,
    version: RouterVersionRow | None,
) -> dict[str, list[KeyToken]]:
    """Per metric, the terms that pushed the latest version's predictions hardest over
    the router's newest observations (summed push; negative favours the cloud)."""
    if version is None:
        return {}
    with context.db.session(write=False) as session:
        newest = session.scalar(
            select(func.max(RouterObservationRow.id)).where(
                RouterObservationRow.router_id == router.id
            )
        )
        if newest is None:
            return {}
        spec = FeatureSpec(**router.feature_spec)
        texts = [
            t
            for t in session.scalars(
                select(func.substr(RouterObservationRow.text, 1, spec.max_chars))
                .where(
                    RouterObservationRow.router_id == router.id,
                    RouterObservationRow.text.is_not(None),
                )
                .order_by(RouterObservationRow.id.desc())
                .limit(KEY_TOKEN_SAMPLE)
            )
            if t
        ]
    names = [str(m["name"]) for m in router.metrics]
    sha256 = version.weights_sha256

    def compute() -> dict[str, list[KeyToken]]:
        model: RouterModel = engine.model(
            router.id, version.version, lambda: context.blobs.path_for(sha256).read_bytes()
        )
        result: dict[str, list[KeyToken]] = {}
        for i, name in enumerate(names):
            pushes: dict[str, float] = {}
            seen: dict[str, int] = {}
            for text in texts:
                for found in model.key_tokens(text, featurize(text, spec), i, 5):
                    pushes[found.token] = pushes.get(found.token, 0.0) + found.push
                    seen[found.token] = seen.get(found.token, 0) + 1
            ranked = sorted(pushes, key=lambda t: (-abs(pushes[t]), t))[:KEY_TOKENS_SHOWN]
            result[name] = [KeyToken(t, round(pushes[t], 4), seen[t]) for t in ranked]
        return result

    try:
        return cache.get((router.id, version.version, newest), compute)
    except FileNotFoundError:
        return {}
