"""What the Router and Learning pages show, gathered from those features' own services.

Run in a worker thread: each view opens its own read-only session.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request

from cloud.coda import service as coda
from cloud.coda.routes import CodaState
from cloud.dashboard.rendering import context_of, state_of
from cloud.dashboard.service import top_key_tokens
from cloud.federation import service as federation
from cloud.federation.tables import FederationEvaluationRow, FederationRoundRow
from cloud.router import service as routing
from cloud.router.routes import get_engine
from cloud.router.tables import RouterRow, RouterVersionRow

SHARE_CHART_HEIGHT = 120
ROUNDS_SHOWN = 25
EVALUATIONS_SHOWN = 100


def router_view(request: Request, name: str, hours: int) -> dict[str, Any]:
    """Every router's name; for the chosen one (the first by default) its budget, the
    realised cloud share per time bucket, the PRS histogram and the top key tokens."""
    context = context_of(request)
    engine = get_engine(request)
    with context.db.session(write=False) as session:
        routers = routing.list_routers(session)
        chosen: RouterRow | None = next(
            (r for r in routers if r.name == name), routers[0] if routers and not name else None
        )
        if chosen is None:
            return {
                "routers": routers,
                "chosen": None,
                "hours": hours,
                "status": 404 if name else 200,
                "missing": name,
            }
        stats = routing.stats(session, engine, chosen, hours)
        version = session.scalar(
            select(RouterVersionRow)
            .where(RouterVersionRow.router_id == chosen.id)
            .order_by(RouterVersionRow.version.desc())
            .limit(1)
        )
    tokens = top_key_tokens(context, engine, state_of(request).key_tokens, chosen, version)
    peak = max([*(p.share for p in stats.over_time), stats.budget, 0.01])
    most = max([*stats.prs_histogram, 1])
    return {
        "routers": routers,
        "chosen": chosen,
        "version": version,
        "stats": stats,
        "hours": hours,
        "tokens": tokens,
        "share_peak": peak,
        "histogram_peak": most,
        "chart_height": SHARE_CHART_HEIGHT,
        "missing": "",
    }


def learning_view(request: Request) -> dict[str, Any]:
    """CoDA pools with their sizes, index snapshots and retrieval counts; the newest
    federation rounds (updates of k, outcome) and the validation AUC per model version."""
    context = context_of(request)
    state: CodaState = request.app.state.coda
    with context.db.session(write=False) as session:
        pools = [coda.describe(session, row, state.builder) for row in coda.list_pools(session)]
        rounds, _ = federation.list_page(
            session, model=None, status=None, limit=ROUNDS_SHOWN, cursor=None
        )
        round_counts = dict(
            session.execute(
                select(FederationRoundRow.status, func.count()).group_by(FederationRoundRow.status)
            ).all()
        )
        evaluations = list(
            session.execute(
                select(
                    FederationEvaluationRow.model,
                    FederationEvaluationRow.version,
                    FederationEvaluationRow.auc,
                    FederationEvaluationRow.round_id,
                    FederationEvaluationRow.evaluated_at,
                )
                .order_by(FederationEvaluationRow.id.desc())
                .limit(EVALUATIONS_SHOWN)
            )
        )
    return {
        "pools": pools,
        "rounds": [federation.round_out(r) for r in rounds],
        "round_counts": round_counts,
        "evaluations": sorted(evaluations, key=lambda e: (e.model, -e.version)),
    }
