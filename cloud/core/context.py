"""What one running app holds: settings, database, broker, blob store, metrics.

Built by ``create_app`` and opened in its lifespan, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud.core.blobstore import BlobStore
from cloud.core.broker import Broker, InProcessBroker
from cloud.core.db import Database, make_engine
from cloud.core.observability import HttpMetrics
from cloud.core.redis_broker import RedisBroker
from cloud.core.settings import Settings


@dataclass
class CloudContext:
    settings: Settings
    db: Database
    broker: Broker
    blobs: BlobStore
    metrics: HttpMetrics = field(default_factory=HttpMetrics)

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudContext:
        broker: Broker = (
            RedisBroker(settings.redis_url) if settings.redis_url else InProcessBroker()
        )
        return cls(
            settings=settings,
            db=Database(make_engine(settings.resolved_database_url)),
            broker=broker,
            blobs=BlobStore(settings.blob_dir),
        )
