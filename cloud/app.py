"""The application factory. Nothing connects at import time: ``create_app`` builds, the
lifespan opens (migrations, bootstrap key) and closes (broker, database)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from cloud.auth.cache import follow_revocations
from cloud.auth.online import keep_authenticated
from cloud.auth.routes import router as enrollment_router
from cloud.auth.service import sync_bootstrap_key
from cloud.blobs.routes import router as blob_router
from cloud.coda.builder import SnapshotBuilder
from cloud.coda.ratelimit import RateLimiter
from cloud.coda.routes import CodaState
from cloud.coda.routes import router as coda_router
from cloud.core.body_limit import BodyLimitMiddleware
from cloud.core.context import CloudContext
from cloud.core.handlers import ERROR_RESPONSES, install_error_handlers
from cloud.core.observability import ObservabilityMiddleware, configure_logging
from cloud.core.process_tuning import tuned_for_serving
from cloud.core.settings import Settings
from cloud.core.tandem_app import TandemApp
from cloud.dashboard.routes import install_dashboard
from cloud.deploy.device_routes import router as device_sync_router
from cloud.deploy.fast_path import DeviceFastPath
from cloud.deploy.rollout import Sweeper
from cloud.deploy.routes import router as deployment_router
from cloud.deploy.status_writer import StatusWriter
from cloud.devices.routes import router as device_router
from cloud.events.routes import router as event_router
from cloud.federation.rounds import RoundRunner
from cloud.federation.routes import FederationState
from cloud.federation.routes import router as federation_router
from cloud.migrations import upgrade
from cloud.ops.routes import router as ops_router
from cloud.pipelines.routes import router as pipeline_router
from cloud.registry.routes import router as registry_router
from cloud.router.routes import router as routing_router
from cloud.serving.fast_path import ServingFastPath
from cloud.serving.routes import router as serving_router
from cloud.serving.service import ServingPool
from cloud.tasks.routes import router as task_router
from cloud.uploads.routes import router as upload_router

log = logging.getLogger("tandem.app")


def _open(context: CloudContext) -> None:
    settings = context.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(context.db.engine)
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    with context.db.session() as session:
        sync_bootstrap_key(session, token)
    context.blobs.sweep_temp()
    context.platform_key  # noqa: B018  # create the signing key now, not on a device's first request
    if token is None:
        log.warning(
            "no bootstrap admin key: set TANDEM_ADMIN_TOKEN, or run `tandem admin create-key`"
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the cloud service for ``settings`` (read from the environment when omitted)."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    context = CloudContext.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        await run_in_threadpool(_open, context)
        log.info(
            "tandem ready",
            extra={
                "database": context.db.engine.url.render_as_string(hide_password=True),
                "broker": type(context.broker).__name__,
                "data_dir": str(settings.data_dir),
            },
        )
        app.state.status_writer = StatusWriter(context.db)
        sweeper = Sweeper(context)
        sweeper.start()
        app.state.serving.start()
        await run_in_threadpool(app.state.coda.builder.start)
        app.state.federation.runner.start()
        background = [
            asyncio.create_task(follow_revocations(context.broker, context.auth_cache)),
            asyncio.create_task(
                keep_authenticated(
                    context.db, context.auth_cache, context.online, context.auth_cache.ttl_s / 2
                )
            ),
        ]
        try:
            with tuned_for_serving():
                yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await sweeper.stop()
            await run_in_threadpool(app.state.coda.builder.stop)
            await app.state.federation.runner.stop()
            await app.state.serving.close()
            await app.state.status_writer.close()
            await context.broker.close()
            context.db.dispose()

    app = TandemApp(
        title="Tandem",
        version="0.1.0",
        summary="Device-cloud collaborative machine learning.",
        lifespan=lifespan,
        telemetry={
            "tracing": settings.opentelemetry,
            "metrics": settings.opentelemetry,
            "logs": settings.opentelemetry,
        },
    )
    app.state.context = context
    app.state.serving = ServingPool(context, context.metrics.registry)
    app.state.coda = CodaState(
        builder=SnapshotBuilder(
            context.db,
            settings.coda_dir,
            exact_below=settings.coda_exact_below,
            poll_s=settings.coda_index_poll_s,
        ),
        limiter=RateLimiter(settings.coda_retrieve_per_minute, settings.coda_retrieve_burst),
        max_results=settings.coda_max_results,
    )
    app.state.federation = FederationState(
        limiter=RateLimiter(
            settings.federation_updates_per_minute, settings.federation_updates_burst
        ),
        runner=RoundRunner(context),
    )
    install_error_handlers(app)
    for router in (
        ops_router,
        enrollment_router,
        device_sync_router,
        device_router,
        deployment_router,
        registry_router,
        task_router,
        blob_router,
        event_router,
        upload_router,
        pipeline_router,
        serving_router,
        routing_router,
        coda_router,
        federation_router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    install_dashboard(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    # In front of the whole stack, the last added outermost: the fast paths for devices'
    # hottest requests, then request ids and metrics, so every response is counted.
    if settings.serving_fast_path:
        app.add_front_layer(ServingFastPath, context=context, pool=app.state.serving)
    if settings.device_fast_path:
        app.add_front_layer(
            DeviceFastPath, context=context, status_writer=lambda: app.state.status_writer
        )
    app.add_front_layer(
        ObservabilityMiddleware, metrics=context.metrics, log_requests=settings.log_requests
    )
    return app


def app_from_environment() -> FastAPI:
    """Entry point for ``uvicorn --factory``: settings from TANDEM_* variables."""
    return create_app(Settings())
