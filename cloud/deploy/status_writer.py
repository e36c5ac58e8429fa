"""Group commit for status reports: concurrent reports share one write transaction.

A release makes every targeted device report within the same second or two. Written one
transaction each, the reports queue for the database's write lock (SQLite has one; on
PostgreSQL each commit is a WAL flush). Here each request hands its reports to a batcher
and awaits the batch's commit: under load one transaction carries hundreds of reports;
alone, a report waits at most ``max_wait_s``. A request whose reports are refused gets its
own error; the rest of its batch is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from cloud.auth.principal import DevicePrincipal
from cloud.core.db import Database
from cloud.core.errors import TandemError
from cloud.deploy import service, status
from device_sdk.wire import StatusReport


@dataclass
class _Pending:
    device: DevicePrincipal
    reports: list[StatusReport]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class StatusWriter:
    def __init__(self, db: Database, *, max_batch: int = 500, max_wait_s: float = 0.02) -> None:
        self.db = db
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        # Deployments with gates that reports touched; the caller judges them.
        self._gated: set[int] = set()

    async def submit(self, device: DevicePrincipal, reports: list[StatusReport]) -> set[int]:
        """Store ``reports`` durably (returns after the commit); returns the ids of gated
        deployments that this batch touched, for the caller to judge."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="status-writer")
        pending = _Pending(device, reports)
        await self._queue.put(pending)
        await pending.done
        gated, self._gated = self._gated, set()
        return gated

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(0.0, timeout)))
                except TimeoutError:
                    break
            try:
                errors, gated = await run_in_threadpool(self._write, batch)
            except Exception as exc:  # the transaction failed: every request in it fails
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                continue
            self._gated |= gated
            for pending, error in zip(batch, errors, strict=True):
                if pending.done.done():
                    continue
                if error is None:
                    pending.done.set_result(None)
                else:
                    pending.done.set_exception(error)

    def _write(self, batch: list[_Pending]) -> tuple[list[TandemError | None], set[int]]:
        with self.db.session() as session:
            errors, touched = status.record_batch(
                session, [(pending.device, pending.reports) for pending in batch]
            )
            return errors, service.gated(session, touched)
