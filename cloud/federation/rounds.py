"""Closing rounds: aggregate a full round with FedSubAvg, judge the candidate on the cloud
validation set, release it as a new model version (and deploy it) when it is better; and
the per-replica sweeper that discards rounds whose deadline passed short of k.

Every step that changes a round is conditional on its status, so replicas sweeping at the
same moment do the work once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from cloud.core.context import CloudContext
from cloud.core.db import utcnow
from cloud.core.errors import TandemError
from cloud.deploy.rollout import rematerialize
from cloud.federation import codec, evaluation, service
from cloud.federation.aggregate import combine
from cloud.federation.candidate import build_candidate
from cloud.federation.release import publish_and_deploy
from cloud.federation.schemas import DeployAfterRelease, RoundStatus
from cloud.federation.tables import (
    FederationEvaluationRow,
    FederationModelRow,
    FederationRoundRow,
    FederationUpdateRow,
)
from cloud.registry import service as registry
from cloud.registry.schemas import Target

log = logging.getLogger("tandem.federation")
# An aggregation claimed this long ago and not finished was lost (its replica stopped).
STALE_CLAIM_S = 900.0


@dataclass(frozen=True)
class Outcome:
    """How a round ended, and the task whose deployment needs rolling out (if any)."""

    round_id: int
    status: RoundStatus
    deployed_task: str | None = None


def _claim(context: CloudContext, round_id: int, now: datetime) -> bool:
    """Take a stale aggregating round for this replica; False when another has it."""
    with context.db.session() as session:
        result = session.execute(
            update(FederationRoundRow)
            .where(
                FederationRoundRow.id == round_id,
                FederationRoundRow.status == RoundStatus.aggregating.value,
                FederationRoundRow.claimed_at < now - timedelta(seconds=STALE_CLAIM_S),
            )
            .values(claimed_at=now)
        )
        return bool(getattr(result, "rowcount", 0))


def sweep(context: CloudContext, now: datetime | None = None) -> list[int]:
    """Close every open round past its deadline: with fewer than k updates it is
    discarded (its updates deleted), with k it is claimed. Returns the rounds to aggregate:
    those claimed now and those whose aggregation was lost."""
    now = now or utcnow()
    ready: list[int] = []
    with context.db.session() as session:
        query = select(FederationRoundRow).where(
            FederationRoundRow.status == RoundStatus.open.value,
            FederationRoundRow.deadline_at <= now,
        )
        if session.get_bind().dialect.name == "postgresql":
            # Another replica sweeping now takes other rounds; SQLite runs writers in turn.
            query = query.with_for_update(skip_locked=True)
        expired = list(session.scalars(query))
        for row in expired:
            if row.received >= row.k:
                row.status = RoundStatus.aggregating.value
                row.open_model = None
                row.claimed_at = now
                ready.append(row.id)
            else:
                service.close(
                    session,
                    row,
                    RoundStatus.discarded,
                    f"The deadline passed with {row.received} of {row.k} updates; "
                    "nothing was released and the updates were deleted.",
                    now,
                )
    with context.db.session(write=False) as session:
        stale = list(
            session.scalars(
                select(FederationRoundRow.id).where(
                    FederationRoundRow.status == RoundStatus.aggregating.value,
                    FederationRoundRow.claimed_at < now - timedelta(seconds=STALE_CLAIM_S),
                )
            )
        )
    ready += [round_id for round_id in stale if _claim(context, round_id, now)]
    return ready


def _evaluated(
    context: CloudContext,
    model: str,
    version: int,
    sha256: str,
    round_id: int,
    data: bytes,
    validation: evaluation.ValidationSet,
) -> float:
    """A version's AUC on the validation set: recorded once, computed when not yet."""
    with context.db.session(write=False) as session:
        known = session.scalar(
            select(FederationEvaluationRow.auc).where(
                FederationEvaluationRow.model == model,
                FederationEvaluationRow.version == version,
                FederationEvaluationRow.validation_sha256 == sha256,
            )
        )
    if known is not None:
        return known
    auc = evaluation.evaluate(data, validation)
    _record(context, model, version, sha256, round_id, auc)
    return auc


def _record(
    context: CloudContext, model: str, version: int, sha256: str, round_id: int, auc: float
) -> None:
    # Another replica may have recorded it first.
    with contextlib.suppress(IntegrityError), context.db.session() as session:
        session.add(
            FederationEvaluationRow(
                model=model,
                version=version,
                validation_sha256=sha256,
                auc=auc,
                round_id=round_id,
            )
        )


def _finish(context: CloudContext, round_id: int, status: RoundStatus, **values: object) -> None:
    with context.db.session() as session:
        row = session.get_one(FederationRoundRow, round_id)
        for name, value in values.items():
            setattr(row, name, value)
        service.close(session, row, status, str(values.get("reason", "")), utcnow())


def aggregate_round(
    context: CloudContext, round_id: int, rng: np.random.Generator | None = None
) -> Outcome:
    """Aggregate a claimed round, judge the candidate, and release or reject it. Any
    failure ends the round as ``failed`` with the reason; its updates are deleted either way."""
    try:
        return _aggregate(context, round_id, rng)
    except Exception as exc:
        log.exception("federated round failed", extra={"round": round_id})
        message = exc.message if isinstance(exc, TandemError) else f"{type(exc).__name__}: {exc}"
        _finish(context, round_id, RoundStatus.failed, reason=f"Aggregation failed: {message}")
        return Outcome(round_id, RoundStatus.failed)


def _aggregate(context: CloudContext, round_id: int, rng: np.random.Generator | None) -> Outcome:
    with context.db.session(write=False) as session:
        row = session.get_one(FederationRoundRow, round_id)
        base = registry.get_version(session, row.model, row.base_version)
        validation_row = session.get_one(FederationModelRow, row.model)
        payloads = list(
            session.scalars(
                select(FederationUpdateRow.payload).where(FederationUpdateRow.round_id == round_id)
            )
        )
    updates = [codec.decode(p) for p in payloads if p is not None]
    base_bytes = context.blobs.path_for(base.sha256).read_bytes()
    validation = evaluation.read_validation(
        context.blobs.path_for(validation_row.validation_sha256).read_bytes(),
        base.inputs,
        max_bytes=context.settings.max_upload_bytes,
    )
    agg = combine(updates, subset=True, clip=row.clip, noise_std=row.noise_std, rng=rng)
    candidate = build_candidate(base_bytes, agg, lr=row.lr)
    sha = validation_row.validation_sha256
    base_auc = _evaluated(context, row.model, base.version, sha, round_id, base_bytes, validation)
    auc = evaluation.evaluate(candidate, validation)
    gain = auc - base_auc
    common = {"clients": agg.clients, "base_auc": base_auc, "auc": auc}
    if gain <= 0 or gain < row.min_gain:
        _finish(
            context,
            round_id,
            RoundStatus.rejected,
            reason=f"The candidate's AUC {auc:.4f} does not beat the base's {base_auc:.4f} "
            f"by the round's min_gain {row.min_gain}.",
            **common,
        )
        return Outcome(round_id, RoundStatus.rejected)
    released = registry.register_model(
        context.db,
        context.blobs,
        name=row.model,
        target=Target(base.target),
        data=candidate,
        description=f"Federated round {round_id}: FedSubAvg of {agg.clients} updates "
        f"on version {base.version}.",
        metrics={"auc": auc, "base_auc": base_auc},
    )
    _record(context, row.model, released.version, sha, round_id, auc)
    task_version = deployment_id = None
    deployed_task = None
    reason = f"Released version {released.version}: AUC {auc:.4f} against {base_auc:.4f}."
    if row.deploy is not None:
        deploy = DeployAfterRelease.model_validate(row.deploy)
        try:
            task_version, deployment_id = publish_and_deploy(context, deploy, base, candidate)
            deployed_task = deploy.task
        except TandemError as exc:
            reason += f" Deploying it failed: {exc.message}"
    _finish(
        context,
        round_id,
        RoundStatus.released,
        released_version=released.version,
        task_version=task_version,
        deployment_id=deployment_id,
        reason=reason,
        **common,
    )
    return Outcome(round_id, RoundStatus.released, deployed_task)


async def finish_round(context: CloudContext, round_id: int) -> Outcome:
    """Aggregate a claimed round off the event loop, then roll out its deployment."""
    outcome = await run_in_threadpool(aggregate_round, context, round_id)
    if outcome.deployed_task is not None:
        await rematerialize(context, outcome.deployed_task)
    return outcome


@dataclass
class RoundRunner:
    """Runs round closings in the background of one replica: on demand when an update
    completes a round, and every ``federation_sweep_s`` for deadlines and lost claims."""

    context: CloudContext
    _loop: asyncio.Task[None] | None = None
    _running: set[asyncio.Task[Outcome]] = field(default_factory=set)

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="federation-sweeper")

    def close_soon(self, round_id: int) -> None:
        """Aggregate ``round_id`` (claimed by the caller) in the background."""
        task = asyncio.create_task(finish_round(self.context, round_id))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._running:
            # An aggregation in its worker thread cannot be interrupted; let it finish so
            # the round is not left claimed until the stale-claim timeout.
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.context.settings.federation_sweep_s)
            try:
                for round_id in await run_in_threadpool(sweep, self.context):
                    self.close_soon(round_id)
            except Exception:
                log.exception("federation sweep failed; retrying next interval")
