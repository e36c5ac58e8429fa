"""The cloud's one configuration object, read from ``TANDEM_*`` environment variables."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that people paste from tutorials. Outside development they are refused.
_PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "secret", "admin", "password", "token", "test", "dev", "tandem"}
)
_MIN_SECRET_LENGTH = 24


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tandem"


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    """Everything the cloud service can be configured with.

    Every field reads ``TANDEM_<FIELD>`` from the environment (or a ``.env`` file in
    the working directory); keyword arguments win over both.
    """

    model_config = SettingsConfigDict(
        env_prefix="TANDEM_", env_file=".env", extra="ignore", frozen=True
    )

    env: Environment = Environment.development
    data_dir: Annotated[Path, Field(default_factory=_default_data_dir)]
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means a SQLite file in the data directory.",
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL for the broker; unset means in-process."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bootstrap admin key, kept (hashed) in sync on every start."
    )
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    stream_heartbeat_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Idle time before a device stream sends a heartbeat.",
    )
    deploy_sweep_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="How often gates and unfinished rollouts are checked.",
    )
    worker_threads: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Threads for blocking work (database calls). The work holds the GIL for most "
        "of its time, so more threads mostly add switching; raise it for a high-latency database.",
    )
    device_fast_path: bool = Field(
        default=True,
        description="Answer devices' desired-state, bundle and status requests below the "
        "framework when they are routine (see cloud/deploy/fast_path.py).",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry spans, metrics and logs, for a process "
        "that configures an OpenTelemetry provider. Off, requests skip its per-request checks.",
    )
    log_level: str = "INFO"
    log_requests: bool = True
    # Model serving (POST /v1/models/{name}/infer); see the README's "Serving models".
    serving_batching: bool = Field(
        default=True,
        description="Merge concurrent requests for one model version into one onnxruntime call.",
    )
    serving_max_batch: int = Field(
        default=64, ge=1, le=65536, description="Most rows in one merged onnxruntime call."
    )
    serving_max_delay_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="Longest a request waits for others to fill its batch, once requests "
        "overlap. 0: a batch is what queued while the previous run ran.",
    )
    serving_max_queue_rows: int = Field(
        default=2048,
        ge=1,
        le=10_000_000,
        description="Rows waiting per model version beyond which requests get 429.",
    )
    serving_max_request_rows: int = Field(
        default=1024, ge=1, le=1_000_000, description="Most rows one request may carry."
    )
    serving_max_body_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0, description="Largest inference request body."
    )
    serving_intra_op_threads: int = Field(
        default=1, ge=0, le=256, description="onnxruntime intra-op threads; 0 lets it choose."
    )
    serving_concurrent_runs: int = Field(
        default=1, ge=1, le=64, description="onnxruntime calls in flight per model version."
    )
    serving_run_async: bool = Field(
        default=True,
        description="Hand each run to onnxruntime's own thread (run_async), not to a Python "
        "worker thread: one GIL hand-off a run instead of two.",
    )
    serving_max_loaded: int = Field(
        default=8, ge=1, le=1024, description="Model versions kept loaded; idle ones are evicted."
    )
    serving_latest_ttl_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How long an unpinned request trusts the cached latest version number.",
    )
    serving_fast_path: bool = Field(
        default=True,
        description="Answer device inference requests below the framework (same answers).",
    )
    serving_providers: list[str] = Field(
        default=["CPUExecutionProvider"],
        description="onnxruntime execution providers in order, e.g. "
        '["CUDAExecutionProvider", "CPUExecutionProvider"].',
    )
    # CoDA sample pools (cloud/coda/); see the README's "On-device learning with CoDA".
    coda_exact_below: int = Field(
        default=50_000,
        ge=1,
        le=100_000_000,
        description="Pools smaller than this get an exact index; larger ones an HNSW graph.",
    )
    coda_index_poll_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the index builder looks for samples other replicas ingested.",
    )
    coda_max_results: int = Field(
        default=1000, ge=1, le=10_000, description="Most nearest samples one retrieval returns."
    )
    coda_retrieve_per_minute: float = Field(
        default=30.0, gt=0, le=1_000_000, description="Retrievals a minute per device token."
    )
    coda_retrieve_burst: int = Field(
        default=10, ge=1, le=100_000, description="Retrievals a device may make back to back."
    )
    # Federated learning (cloud/federation/); see the README's "Federated learning".
    federation_k: int = Field(
        default=20, ge=2, le=100_000, description="Updates a round needs before it aggregates."
    )
    federation_round_deadline_s: float = Field(
        default=86_400.0,
        gt=0,
        le=365 * 86_400,
        description="How long an automatically opened round waits for k updates.",
    )
    federation_sweep_s: float = Field(
        default=10.0, gt=0, le=3600, description="How often rounds past their deadline close."
    )
    federation_updates_per_minute: float = Field(
        default=6.0, gt=0, le=1_000_000, description="Update uploads a minute per device token."
    )
    federation_updates_burst: int = Field(
        default=3, ge=1, le=100_000, description="Update uploads a device may make back to back."
    )
    federation_max_update_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest update upload body."
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.admin_token is None:
            return self
        token = self.admin_token.get_secret_value()
        if self.env is Environment.production and (
            token.lower() in _PLACEHOLDER_SECRETS or len(token) < _MIN_SECRET_LENGTH
        ):
            raise ValueError(
                "TANDEM_ADMIN_TOKEN looks like a placeholder; in production use at least "
                f"{_MIN_SECRET_LENGTH} random characters, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        if not token.strip():
            raise ValueError("TANDEM_ADMIN_TOKEN is empty; unset it or give it a value.")
        return self

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def coda_dir(self) -> Path:
        return self.data_dir / "coda"

    @property
    def key_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def resolved_database_url(self) -> str:
        """The database URL with the driver chosen: SQLite by default, psycopg 3 for PostgreSQL."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'tandem.db'}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
