"""Gates: decide from a stage's reports whether a rollout advances, holds, or rolls back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cloud.deploy.schemas import Gates


class Verdict(StrEnum):
    hold = "hold"
    advance = "advance"
    rollback = "rollback"


@dataclass(frozen=True)
class StageHealth:
    """What the devices of the current stage's slice have reported."""

    targeted: int
    active: int
    failed: int


def judge(
    gates: Gates,
    health: StageHealth,
    *,
    stage: int,
    last_stage: int,
    since: datetime,
    now: datetime,
) -> tuple[Verdict, str]:
    """The gate's verdict for the current stage, with a reason a person can read."""
    reports = health.active + health.failed
    if (
        gates.max_failure_rate is not None
        and reports >= gates.min_reports
        and health.failed / reports > gates.max_failure_rate
    ):
        return Verdict.rollback, (
            f"rolled back automatically: {health.failed} of {reports} devices in stage "
            f"{stage} failed ({health.failed / reports:.0%} > {gates.max_failure_rate:.0%})"
        )
    if stage >= last_stage:
        return Verdict.hold, "final stage"
    needed = min(gates.min_healthy, health.targeted)
    soaked = (now - since).total_seconds() >= gates.min_soak_s
    if health.active >= needed and soaked:
        return Verdict.advance, (
            f"advanced automatically: {health.active} healthy activations in stage {stage} "
            f"(needed {needed}) after {gates.min_soak_s:.0f} s of soak"
        )
    return Verdict.hold, "waiting for healthy activations or soak time"
