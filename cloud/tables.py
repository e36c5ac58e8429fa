"""Every feature's tables in one metadata, for migrations and schema checks."""

from __future__ import annotations

from cloud.auth import tables as auth_tables
from cloud.blobs import tables as blob_tables
from cloud.coda import tables as coda_tables
from cloud.core.db import Base
from cloud.deploy import tables as deploy_tables
from cloud.devices import tables as device_tables
from cloud.federation import tables as federation_tables
from cloud.registry import tables as registry_tables
from cloud.router import tables as router_tables
from cloud.tasks import tables as task_tables
from cloud.uploads import tables as upload_tables

metadata = Base.metadata

__all__ = [
    "auth_tables",
    "blob_tables",
    "coda_tables",
    "deploy_tables",
    "device_tables",
    "federation_tables",
    "metadata",
    "registry_tables",
    "router_tables",
    "task_tables",
    "upload_tables",
]
