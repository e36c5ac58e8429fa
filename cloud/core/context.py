"""What one running app holds: settings, database, broker, blob store, metrics.

Built by ``create_app`` and opened in its lifespan, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud.auth.cache import AuthCache
from cloud.auth.online import OnlineDevices
from cloud.core.blobstore import BlobStore
from cloud.core.broker import Broker, InProcessBroker
from cloud.core.db import Database, make_engine
from cloud.core.observability import HttpMetrics
from cloud.core.redis_broker import RedisBroker
from cloud.core.settings import Settings
from cloud.core.signing import PlatformKey

MAX_READABLE_BUNDLES = 100_000


@dataclass
class CloudContext:
    settings: Settings
    db: Database
    broker: Broker
    blobs: BlobStore
    metrics: HttpMetrics = field(default_factory=HttpMetrics)
    auth_cache: AuthCache = field(default_factory=AuthCache)
    online: OnlineDevices = field(default_factory=OnlineDevices)
    # (device seq or 0 for admins, bundle digest) already found readable: a bundle once in a
    # device's desired state stays fine for it to fetch, so a hit needs no lookup.
    readable_bundles: set[tuple[int, str]] = field(default_factory=set)
    _platform_key: PlatformKey | None = None

    def remember_readable(self, seq: int, sha256: str) -> None:
        """Note that device ``seq`` (0: admins) may fetch bundle ``sha256``."""
        if len(self.readable_bundles) >= MAX_READABLE_BUNDLES:
            self.readable_bundles.clear()
        self.readable_bundles.add((seq, sha256))

    @property
    def platform_key(self) -> PlatformKey:
        """The signing key, loaded (or created) on first use from the data directory."""
        if self._platform_key is None:
            self._platform_key = PlatformKey.load_or_create(self.settings.key_dir)
        return self._platform_key

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
