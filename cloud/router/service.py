"""Routers: configuration, observations, training into versions, routing, statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.blobs.service import record_blob
from cloud.core.blobstore import BlobStore
from cloud.core.db import Database, utcnow
from cloud.core.errors import (
    DuplicateName,
    InvalidObservation,
    NotEnoughObservations,
    RouterNotFound,
    RouterNotTrained,
    RouterVersionNotFound,
    ServiceUnavailable,
)
from cloud.router.calibration import HISTOGRAM_BINS, calibrate, histogram
from cloud.router.controller import ControllerKey, RouterEngine
from cloud.router.export import to_onnx
from cloud.router.featurize import Batch, make_batch
from cloud.router.keys import key_tokens
from cloud.router.predictor import RouterModel
from cloud.router.schemas import (
    CreateRouter,
    Observation,
    ObservationsAccepted,
    RouteDecision,
    RouteItem,
    RouteRequest,
    RouteResponse,
    RouterOut,
    RouterStats,
    RouterVersionOut,
    SharePoint,
    TrainRequest,
    UpdateRouter,
)
from cloud.router.tables import RouterObservationRow, RouterRow, RouterTallyRow, RouterVersionRow
from cloud.router.training import TrainingOptions, auc, fit, labels
from device_sdk.router_wire import (
    DecisionReceipt,
    DecisionReport,
    MetricSpec,
    RouterExport,
)
from device_sdk.text_features import FeatureSpec

MIN_OBSERVATIONS = 10
# Observations kept per router; past this the oldest are deleted as new ones arrive.
MAX_KEPT_OBSERVATIONS = 500_000
# "Recent traffic" for the first threshold: the newest logged requests.
CALIBRATION_WINDOW = 5000
STATS_BUCKETS = 24
# Statistics read at most this many tallies (route calls and device reports), newest first.
MAX_STATS_TALLIES = 100_000


# --- configuration --------------------------------------------------------------------


def create_router(session: Session, body: CreateRouter) -> RouterRow:
    if session.scalar(select(RouterRow.id).where(RouterRow.name == body.name)) is not None:
        raise DuplicateName(
            f"A router named {body.name!r} exists; choose another name, or train a new "
            f"version of it with POST /v1/routers/{body.name}/train."
        )
    row = RouterRow(
        name=body.name,
        description=body.description,
        metrics=[m.model_dump() for m in body.metrics],
        n_features=body.n_features,
        feature_spec=body.feature_spec.model_dump(),
        budget=body.budget,
        window=body.window,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # created concurrently under the same name
        raise DuplicateName(f"A router named {body.name!r} exists; choose another name.") from exc
    return row


def get_router(session: Session, name: str) -> RouterRow:
    row = session.scalar(select(RouterRow).where(RouterRow.name == name))
    if row is None:
        raise RouterNotFound(f"No router named {name!r}; create one with POST /v1/routers.")
    return row


def list_routers(session: Session) -> list[RouterRow]:
    return list(session.scalars(select(RouterRow).order_by(RouterRow.name)))


def update_router(session: Session, name: str, body: UpdateRouter) -> RouterRow:
    row = get_router(session, name)
    if body.budget is not None:
        row.budget = body.budget
    if body.window is not None:
        row.window = body.window
    row.updated_at = utcnow()
    return row


def versions_of(session: Session, router: RouterRow) -> list[RouterVersionRow]:
    return list(
        session.scalars(
            select(RouterVersionRow)
            .where(RouterVersionRow.router_id == router.id)
            .order_by(RouterVersionRow.version)
        )
    )


def to_out(session: Session, router: RouterRow) -> RouterOut:
    return RouterOut(
        name=router.name,
        description=router.description,
        metrics=[MetricSpec(**m) for m in router.metrics],
        n_features=router.n_features,
        feature_spec=FeatureSpec(**router.feature_spec),
        budget=router.budget,
        window=router.window,
        created_at=router.created_at,
        updated_at=router.updated_at,
        versions=[
            RouterVersionOut(
                version=v.version,
                alpha=v.alpha,
                onnx_sha256=v.onnx_sha256,
                onnx_size=v.onnx_size,
                training=v.training,
                created_at=v.created_at,
            )
            for v in versions_of(session, router)
        ],
    )


def metric_names(router: RouterRow) -> list[str]:
    return [str(m["name"]) for m in router.metrics]


# --- observations ---------------------------------------------------------------------


def _check_request(
    router: RouterRow, text: str | None, features: list[float] | None, at: str
) -> None:
    if features is not None and len(features) != router.n_features:
        raise InvalidObservation(
            f"{at}: router {router.name!r} takes {router.n_features} plain features per "
            f"request; this one has {len(features)}.",
            details=[{"field": f"{at}.features", "message": "wrong length"}],
        )
    if router.n_features == 0 and text is None:
        raise InvalidObservation(
            f"{at}: router {router.name!r} reads the request text; send 'text'.",
            details=[{"field": f"{at}.text", "message": "missing"}],
        )
    if router.n_features and features is None and text is None:
        raise InvalidObservation(
            f"{at}: send 'text', 'features' ({router.n_features} numbers), or both.",
            details=[{"field": at, "message": "empty request"}],
        )


def add_observations(
    session: Session, name: str, items: Sequence[Observation]
) -> ObservationsAccepted:
    """Validate every item against the router's metrics and features, then store all of
    them in one transaction (or none)."""
    router = get_router(session, name)
    names = metric_names(router)
    wanted = set(names)
    rows = []
    for i, item in enumerate(items):
        at = f"items.{i}"
        _check_request(router, item.text, item.features, at)
        for side, scores in (("edge", item.edge), ("cloud", item.cloud)):
            if set(scores) != wanted:
                raise InvalidObservation(
                    f"{at}.{side} must score exactly the metrics {names}; it has "
                    f"{sorted(scores)[:20]}.",
                    details=[{"field": f"{at}.{side}", "message": "wrong metrics"}],
                )
        rows.append(
            RouterObservationRow(
                router_id=router.id,
                text=item.text,
                features=item.features,
                edge=[item.edge[n] for n in names],
                cloud=[item.cloud[n] for n in names],
            )
        )
    session.add_all(rows)
    session.flush()
    count = select(func.count()).where(RouterObservationRow.router_id == router.id)
    total = int(session.scalar(count) or 0)
    if total > MAX_KEPT_OBSERVATIONS:
        # Keep the newest: training reads at most the latest ones anyway.
        oldest_kept = session.scalar(
            select(RouterObservationRow.id)
            .where(RouterObservationRow.router_id == router.id)
            .order_by(RouterObservationRow.id.desc())
            .offset(MAX_KEPT_OBSERVATIONS - 1)
            .limit(1)
        )
        session.execute(
            delete(RouterObservationRow).where(
                RouterObservationRow.router_id == router.id,
                RouterObservationRow.id < oldest_kept,
            )
        )
        total = MAX_KEPT_OBSERVATIONS
    return ObservationsAccepted(accepted=len(rows), total=total)


# --- training ---------------------------------------------------------------------------


def train(
    db: Database, blobs: BlobStore, engine: RouterEngine, name: str, body: TrainRequest
) -> RouterVersionRow:
    """Fit a new version on the latest observations, calibrate its threshold, export it to
    ONNX, store both artifacts, and record the version (numbered under a per-name lock)."""
    with db.session(write=False) as session:
        router = get_router(session, name)
        spec = FeatureSpec(**router.feature_spec)
        # Only what the featurizer reads of each text is loaded.
        observations = list(
            session.execute(
                select(
                    func.substr(RouterObservationRow.text, 1, spec.max_chars),
                    RouterObservationRow.features,
                    RouterObservationRow.edge,
                    RouterObservationRow.cloud,
                )
                .where(RouterObservationRow.router_id == router.id)
                .order_by(RouterObservationRow.id.desc())
                .limit(body.max_observations)
            )
        )
        router_id, budget = router.id, router.budget
        metrics = [MetricSpec(**m) for m in router.metrics]
        n_features = router.n_features
    if len(observations) < MIN_OBSERVATIONS:
        raise NotEnoughObservations(
            f"Router {name!r} has {len(observations)} observations; training needs at least "
            f"{MIN_OBSERVATIONS}. Send more with POST /v1/routers/{name}/observations."
        )
    observations.reverse()  # oldest first; the newest are the "recent traffic"
    batch = make_batch(
        [text for text, _, _, _ in observations],
        [features for _, features, _, _ in observations],
        spec=spec,
        n_features=n_features,
    )
    y = labels(
        np.array([edge for _, _, edge, _ in observations], dtype=np.float64),
        np.array([cloud for _, _, _, cloud in observations], dtype=np.float64),
        np.array([m.tolerance for m in metrics]),
    )
    weights = np.array([m.weight for m in metrics])
    options = TrainingOptions(l2=body.l2, epochs=body.epochs)
    model, report = fit(batch, y, spec=spec, metric_weights=weights, options=options)
    recent_prs, held_out_auc = _recent(model, batch, y, spec, weights, options)
    alpha = calibrate(recent_prs, budget)
    weights_blob = blobs.write_bytes(model.to_bytes())
    onnx_blob = blobs.write_bytes(to_onnx(model, name=name))
    training = {
        "observations": len(observations),
        "budget": budget,
        "l2": body.l2,
        "epochs": body.epochs,
        "metrics": {
            m.name: {
                "edge_share": round(report.edge_share[i], 6),
                "log_loss": round(report.log_loss[i], 6),
                "auc": round(report.auc[i], 6),
                "held_out_auc": None if held_out_auc is None else round(held_out_auc[i], 6),
            }
            for i, m in enumerate(metrics)
        },
    }
    with db.session() as session:
        _lock_router(session, name)
        latest = session.scalar(
            select(func.max(RouterVersionRow.version)).where(
                RouterVersionRow.router_id == router_id
            )
        )
        record_blob(session, weights_blob.sha256, weights_blob.size, device_readable=False)
        record_blob(session, onnx_blob.sha256, onnx_blob.size, device_readable=True)
        row = RouterVersionRow(
            router_id=router_id,
            version=(latest or 0) + 1,
            weights_sha256=weights_blob.sha256,
            onnx_sha256=onnx_blob.sha256,
            onnx_size=onnx_blob.size,
            alpha=alpha,
            training=training,
        )
        session.add(row)
        session.flush()
    return row


def _recent(
    model: RouterModel,
    batch: Batch,
    y: np.ndarray,
    spec: FeatureSpec,
    weights: np.ndarray,
    options: TrainingOptions,
) -> tuple[np.ndarray, list[float] | None]:
    """Predicted PRS of the newest observations by a model that did not see them, and
    that model's per-metric AUC on them (None when too few observations to hold out).

    A model scores its own training requests too confidently, so a threshold taken from
    them would sit in the wrong place. The newest fifth (at most ``CALIBRATION_WINDOW``)
    stands in for recent traffic, scored by a model fitted on the older ones.
    """
    n = batch.sparse.n_rows
    recent = min(CALIBRATION_WINDOW, n // 5)
    if recent < MIN_OBSERVATIONS:
        return model.predict(batch).prs, None
    older, newer = batch.split(n - recent)
    held_out, _ = fit(older, y[: n - recent], spec=spec, metric_weights=weights, options=options)
    prediction = held_out.predict(newer)
    y_new = y[n - recent :]
    return prediction.prs, [auc(y_new[:, i], prediction.d[:, i]) for i in range(y.shape[1])]


def _lock_router(session: Session, name: str) -> None:
    # SQLite write transactions are already serial (BEGIN IMMEDIATE).
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": f"router:{name}"})


def version_row(session: Session, router: RouterRow, version: int | None) -> RouterVersionRow:
    query = select(RouterVersionRow).where(RouterVersionRow.router_id == router.id)
    if version is None:
        row = session.scalar(query.order_by(RouterVersionRow.version.desc()).limit(1))
        if row is None:
            raise RouterNotTrained(
                f"Router {router.name!r} has no trained version yet; send observations, then "
                f"POST /v1/routers/{router.name}/train."
            )
        return row
    row = session.scalar(query.where(RouterVersionRow.version == version))
    if row is None:
        published = ", ".join(str(v.version) for v in versions_of(session, router)) or "none"
        raise RouterVersionNotFound(
            f"Router {router.name!r} has no version {version}; trained versions: {published}."
        )
    return row


# --- routing ----------------------------------------------------------------------------


def route(
    db: Database, blobs: BlobStore, engine: RouterEngine, request: RouteRequest
) -> RouteResponse:
    """Score each request, decide with the router's budget controller, count the decisions."""
    with db.session(write=False) as session:
        router = get_router(session, request.router)
        version = version_row(session, router, request.version)
        items = request.items or [RouteItem(text=request.text, features=request.features)]
        for i, item in enumerate(items):
            at = f"items.{i}" if request.items is not None else "body"
            _check_request(router, item.text, item.features, at)
        names = metric_names(router)
        key = ControllerKey(router.id, router.budget, router.window)
        number = version.version
        weights_sha256, alpha = version.weights_sha256, version.alpha
        spec, n_features = FeatureSpec(**router.feature_spec), router.n_features
    model = engine.model(key.router_id, number, lambda: _read_blob(blobs, weights_sha256))
    batch = make_batch(
        [item.text for item in items],
        [item.features for item in items],
        spec=spec,
        n_features=n_features,
    )
    prediction = model.predict(batch)
    controller = engine.controller(key, number, alpha)
    threshold = controller.alpha
    decisions = controller.decide_many([float(p) for p in prediction.prs])
    answers = [
        RouteDecision(
            target="cloud" if decision.cloud else "edge",
            prs=float(prediction.prs[r]),
            d={name: float(prediction.d[r, i]) for i, name in enumerate(names)},
            key_tokens=key_tokens(model, batch.raw[r], batch.texts[r], names, request.key_tokens),
            capped=decision.capped,
        )
        for r, decision in enumerate(decisions)
    ]
    with db.session() as session:
        _tally(session, key.router_id, number, "cloud", prediction.prs, decisions_cloud(answers))
    return RouteResponse(
        router=request.router,
        version=number,
        threshold=threshold,
        budget=key.budget,
        decision=answers[0] if request.items is None else None,
        items=answers if request.items is not None else None,
    )


def _read_blob(blobs: BlobStore, sha256: str) -> bytes:
    try:
        return blobs.path_for(sha256).read_bytes()
    except FileNotFoundError:
        raise ServiceUnavailable(
            f"The router weights (blob {sha256[:12]}...) are missing from this replica's blob "
            "store; check that every replica shares the blob directory."
        ) from None


def decisions_cloud(answers: Sequence[RouteDecision]) -> int:
    return sum(1 for a in answers if a.target == "cloud")


def _tally(
    session: Session, router_id: int, version: int, source: str, prs: np.ndarray, cloud: int
) -> None:
    session.add(
        RouterTallyRow(
            router_id=router_id,
            version=version,
            source=source,
            requests=len(prs),
            cloud=cloud,
            histogram=histogram(prs),
        )
    )


# --- devices ----------------------------------------------------------------------------


def export(session: Session, engine: RouterEngine, name: str) -> RouterExport:
    """The latest version for a device, with the threshold this replica holds now."""
    router = get_router(session, name)
    version = version_row(session, router, None)
    key = ControllerKey(router.id, router.budget, router.window)
    controller = engine.controller(key, version.version, version.alpha)
    return RouterExport(
        name=router.name,
        version=version.version,
        metrics=[MetricSpec(**m) for m in router.metrics],
        feature_spec=FeatureSpec(**router.feature_spec),
        n_features=router.n_features,
        budget=router.budget,
        window=router.window,
        threshold=controller.alpha,
        onnx_sha256=version.onnx_sha256,
        onnx_size=version.onnx_size,
        download_url=f"/v1/blobs/{version.onnx_sha256}",
    )


def report_decisions(
    session: Session, engine: RouterEngine, name: str, report: DecisionReport
) -> DecisionReceipt:
    """Count decisions a device took locally; they move this replica's threshold too."""
    router = get_router(session, name)
    version = version_row(session, router, report.version)
    key = ControllerKey(router.id, router.budget, router.window)
    controller = engine.controller(key, version.version, version.alpha)
    for decision in report.decisions:
        controller.observe(decision.cloud, decision.prs)
    prs = np.array([d.prs for d in report.decisions])
    _tally(
        session, router.id, version.version, "device", prs, sum(d.cloud for d in report.decisions)
    )
    return DecisionReceipt(accepted=len(report.decisions), threshold=controller.alpha)


# --- statistics -------------------------------------------------------------------------


def stats(session: Session, engine: RouterEngine, router: RouterRow, hours: int) -> RouterStats:
    """Decisions of the last ``hours``: share per bucket vs the budget, PRS histogram."""
    now = utcnow()
    since = now - timedelta(hours=hours)
    bucket = timedelta(hours=hours) / STATS_BUCKETS
    requests = [0] * STATS_BUCKETS
    cloud = [0] * STATS_BUCKETS
    prs_histogram = [0] * HISTOGRAM_BINS
    rows = session.execute(
        select(
            RouterTallyRow.at,
            RouterTallyRow.requests,
            RouterTallyRow.cloud,
            RouterTallyRow.histogram,
        )
        .where(RouterTallyRow.router_id == router.id, RouterTallyRow.at >= since)
        .order_by(RouterTallyRow.at.desc())
        .limit(MAX_STATS_TALLIES)
    )
    for at, n, c, hist in rows:
        i = min(int((at - since) / bucket), STATS_BUCKETS - 1)
        requests[i] += n
        cloud[i] += c
        prs_histogram = [a + b for a, b in zip(prs_histogram, hist, strict=False)]
    live = engine.live(router.id)
    observations = session.scalar(
        select(func.count()).where(RouterObservationRow.router_id == router.id)
    )
    total, total_cloud = sum(requests), sum(cloud)
    return RouterStats(
        hours=hours,
        requests=total,
        cloud=total_cloud,
        share=total_cloud / total if total else 0.0,
        budget=router.budget,
        over_time=[
            SharePoint(
                start=since + bucket * i,
                requests=requests[i],
                cloud=cloud[i],
                share=cloud[i] / requests[i] if requests[i] else 0.0,
                budget=router.budget,
            )
            for i in range(STATS_BUCKETS)
        ],
        prs_histogram=prs_histogram,
        bins=HISTOGRAM_BINS,
        threshold=None if live is None else live.alpha,
        window_share=None if live is None else live.share(),
        observations=int(observations or 0),
    )
