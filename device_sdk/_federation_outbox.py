"""The federation outbox: model updates waiting for upload, kept on disk until the cloud
has them, and their upload to ``POST /v1/federation/updates``.

A model update is larger than an item of the general outbox allows (hundreds of embedding
rows), and it goes to its own endpoint, so it has an outbox of its own kind: one JSON file
per update in a folder. :meth:`UpdateOutbox.put` writes the file under a scratch name,
flushes it to disk and renames it into place (then flushes the folder), so an update
``put`` accepted survives ``kill -9`` and power loss, and a crash mid-write leaves no half
file. The update's ``key`` is its idempotency key: sent again after a lost response, the
cloud counts it once (``duplicate: true``).

:func:`upload_updates` sends the queued updates oldest first, by the cloud's answer:

- **201**: the cloud has it (new or duplicate): removed.
- **401**: the device was removed: :class:`DeviceRevoked` is raised; updates stay.
- **408, 425, 429, 5xx or no answer**: stop here, keep it and the rest for a later call.
- **Any other 4xx** (409 the round trains another base version, 422 the deltas do not fit
  the model): the update can never be accepted as it is: dropped, and counted.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from device_sdk._client import CloudClient
from device_sdk._errors import CloudRejected, CloudUnavailable
from device_sdk.federation_wire import ModelUpdate, UpdateAccepted

_SUFFIX = ".update.json"


class UpdateOutbox:
    """Model updates to upload, one durable file each in ``directory`` (created if need
    be). At most ``max_items`` are kept: a newer update makes the oldest one go (an old
    update trains a base version the cloud has likely moved past)."""

    def __init__(self, directory: Path, *, max_items: int = 16) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}.")
        self.directory = directory
        self.max_items = max_items
        self.evicted = 0
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, update: ModelUpdate) -> str:
        """Queue ``update``; returns its key once the update is on disk."""
        name = f"{time.time_ns():020d}-{update.key}{_SUFFIX}"
        scratch = self.directory / f".{name}.partial"
        with scratch.open("wb") as handle:
            handle.write(update.model_dump_json().encode())
            handle.flush()
            os.fsync(handle.fileno())
        scratch.replace(self.directory / name)
        self._sync_folder()
        for old in self._files()[: -self.max_items]:
            old.unlink(missing_ok=True)
            self.evicted += 1
        return update.key

    def pending(self) -> list[ModelUpdate]:
        """The queued updates, oldest first (a file that no longer parses is dropped)."""
        out = []
        for path in self._files():
            try:
                out.append(ModelUpdate.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError):
                path.unlink(missing_ok=True)
                self.dropped += 1
        return out

    def count(self) -> int:
        """How many updates are queued."""
        return len(self._files())

    def remove(self, key: str, *, dropped: bool = False) -> None:
        """Take the update ``key`` out of the outbox (``dropped``: counted as dropped)."""
        for path in self.directory.glob(f"*-{key}{_SUFFIX}"):
            path.unlink(missing_ok=True)
            self.dropped += dropped

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if not p.name.startswith("."))

    def _sync_folder(self) -> None:
        if os.name != "posix":
            return  # other systems cannot open a folder to flush its entries
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@dataclass(frozen=True)
class UploadSummary:
    """What one :func:`upload_updates` call did; ``receipts`` are the cloud's answers."""

    sent: int
    duplicates: int
    dropped: int
    remaining: int
    receipts: tuple[UpdateAccepted, ...]


def upload_updates(outbox: UpdateOutbox, client: CloudClient) -> UploadSummary:
    """Send the queued updates with the device's token (the cloud uses it only to limit
    the rate; it stores nothing about the sender). See the module docstring for what each
    answer does; :class:`DeviceRevoked` propagates."""
    receipts: list[UpdateAccepted] = []
    dropped = 0
    for update in outbox.pending():
        try:
            receipts.append(post_update(client, update))
        except CloudUnavailable:
            break
        except CloudRejected:
            outbox.remove(update.key, dropped=True)
            dropped += 1
            continue
        outbox.remove(update.key)
    return UploadSummary(
        sent=len(receipts),
        duplicates=sum(r.duplicate for r in receipts),
        dropped=dropped,
        remaining=outbox.count(),
        receipts=tuple(receipts),
    )


def post_update(client: CloudClient, update: ModelUpdate) -> UpdateAccepted:
    """``POST /v1/federation/updates`` one update; the cloud's receipt. Raises the SDK's
    error tree: :class:`CloudUnavailable` (retry later), :class:`DeviceRevoked`,
    :class:`CloudRejected` (never as it is)."""
    return client.upload_update(update)
