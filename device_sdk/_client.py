"""The device's typed HTTP client for the cloud's device endpoints.

A thin layer over httpx: one method per endpoint, wire schemas in and out, and every
failure mapped onto the SDK's error tree (:class:`CloudUnavailable` for what a retry may
fix, :class:`DeviceRevoked` for a 401, :class:`CloudRejected` for other refusals, and
:class:`UploadRejected` for refusals of an outbox batch). The
transport comes in from the edge, so tests drive it with ``httpx.MockTransport``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from device_sdk._errors import (
    CloudError,
    CloudRejected,
    CloudUnavailable,
    DeviceRevoked,
    DeviceSDKError,
    InvalidBundle,
    RegistrationRefused,
    UploadRejected,
)
from device_sdk._event_stream import EventStream
from device_sdk._outbox import OutboxItem
from device_sdk.coda_wire import RetrieveRequest, RetrieveResponse
from device_sdk.federation_wire import ModelUpdate, UpdateAccepted
from device_sdk.router_wire import DecisionReceipt, DecisionReport, RouterExport
from device_sdk.wire import (
    DesiredState,
    ErrorBody,
    RegisterDeviceRequest,
    RegisterDeviceResponse,
    StatusReport,
    StatusReports,
    UploadAccepted,
)

_TRANSIENT = {408, 425, 429}
_NPZ = "application/x-npz"
_ITEM_FIELD = re.compile(r"^items\.(\d+)(?:\.|$)")
_Schema = TypeVar("_Schema", bound=BaseModel)


class CloudClient:
    """Talks to one cloud as one device. Safe to share between threads.

    ``token`` is the device's bearer token (None until registration). The event stream
    uses ``heartbeat_timeout_s`` as its read timeout: the cloud sends a heartbeat every
    ~15 s, so a stream silent for longer is dead and is dropped.
    """

    def __init__(
        self,
        cloud_url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
        heartbeat_timeout_s: float = 45.0,
    ) -> None:
        self.cloud_url = cloud_url.rstrip("/")
        self.token = token
        self._stream_timeout = httpx.Timeout(timeout_s, read=heartbeat_timeout_s)
        self._http = httpx.Client(
            base_url=self.cloud_url,
            transport=transport,
            timeout=timeout_s,
            headers={"User-Agent": "tandem-device-sdk"},
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CloudClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- endpoints ------------------------------------------------------------------

    def register(self, request: RegisterDeviceRequest) -> RegisterDeviceResponse:
        """Register with an enrollment key; raises :class:`RegistrationRefused` on a 4xx."""
        response = self._send("POST", "/v1/devices", json=request.model_dump(mode="json"))
        if response.status_code != 201:
            error = self._error(response, "register the device")
            if isinstance(error, CloudRejected):
                raise RegistrationRefused(
                    f"The cloud at {self.cloud_url} refused to register this device "
                    f"({response.status_code} {error.code}: {error.server_message}); check the "
                    "enrollment_key given to Device(...), or ask the operator for a new one.",
                    status_code=error.status_code,
                    code=error.code,
                    server_message=error.server_message,
                )
            raise error
        return self._parse(RegisterDeviceResponse, response)

    def desired(self, etag: str | None = None) -> tuple[DesiredState | None, str | None]:
        """The device's desired state and its ETag; ``(None, etag)`` when unchanged (304)."""
        headers = self._auth()
        if etag is not None:
            headers["If-None-Match"] = etag
        response = self._send("GET", "/v1/devices/me/desired", headers=headers)
        if response.status_code == 304:
            return None, response.headers.get("ETag", etag)
        if response.status_code != 200:
            raise self._error(response, "fetch the desired state")
        return self._parse(DesiredState, response), response.headers.get("ETag")

    def report(self, reports: Sequence[StatusReport]) -> int:
        """Send status reports in one request; returns how many the cloud accepted."""
        body = StatusReports(reports=list(reports)).model_dump(mode="json")
        response = self._send("POST", "/v1/devices/me/status", headers=self._auth(), json=body)
        if response.status_code != 200:
            raise self._error(response, "report task status")
        try:
            accepted = response.json()["accepted"]
        except (ValueError, KeyError, TypeError):
            accepted = len(reports)
        return int(accepted)

    def upload(self, channel: str, items: Sequence[OutboxItem]) -> UploadAccepted:
        """Send outbox ``items`` of ``channel`` in one request; returns the cloud's counts.

        A refusal that retrying will not fix raises :class:`UploadRejected`, whose
        ``rejected`` names the items a 422 singled out.
        """
        # The payloads are stored as the compact JSON that is sent: no parse, no re-encode.
        body = ",".join(f'{{"key":"{i.key}","payload":{i.payload_json}}}' for i in items)
        headers = self._auth() | {"Content-Type": "application/json"}
        try:
            response = self._http.post(
                f"/v1/devices/me/uploads/{channel}",
                content=f'{{"items":[{body}]}}'.encode(),
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if not response.is_success:
            raise self._error(response, f"upload {len(items)} {channel!r} items", batch=len(items))
        try:
            return UploadAccepted.model_validate_json(response.content)
        except ValidationError:
            # The cloud stored the batch (2xx); only its counts are unreadable.
            return UploadAccepted(accepted=len(items), duplicates=0)

    def download(self, sha256: str, size: int, partial_path: Path) -> bytes:
        """The bundle ``sha256`` of ``size`` bytes, checked against its digest.

        Bytes are appended to ``partial_path`` as they arrive; if a transfer breaks, the
        next call resumes with ``Range`` from what is there (``If-Range`` guards against a
        changed resource). A complete file whose digest differs is deleted and raises
        :class:`InvalidBundle`. The file stays after success; the caller removes it.
        """
        partial_path.parent.mkdir(parents=True, exist_ok=True)
        have = partial_path.stat().st_size if partial_path.exists() else 0
        if have > size:
            partial_path.unlink()
            have = 0
        if have < size:
            self._fetch(sha256, size, partial_path, have)
        data = partial_path.read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            partial_path.unlink(missing_ok=True)
            raise InvalidBundle(
                f"The downloaded bundle {sha256[:12]}... has {len(data)} bytes and another "
                f"digest than the cloud announced ({size} bytes); it is truncated or was "
                "altered, so it was discarded."
            )
        return data

    def _fetch(self, sha256: str, size: int, partial_path: Path, have: int) -> None:
        headers = self._auth()
        if have:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = f'"{sha256}"'
        request = self._http.build_request("GET", f"/v1/bundles/{sha256}", headers=headers)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        try:
            if response.status_code == 416 and have:
                partial_path.unlink()  # what we kept is not a prefix of the bundle
                response.close()
                self._fetch(sha256, size, partial_path, 0)
                return
            resumed = response.status_code == 206 and response.headers.get(
                "Content-Range", ""
            ).startswith(f"bytes {have}-")
            if response.status_code != 200 and not resumed:
                response.read()
                raise self._error(response, f"download bundle {sha256[:12]}...")
            written = have if resumed else 0
            with partial_path.open("ab" if resumed else "wb") as file:
                for chunk in response.iter_bytes():
                    written += len(chunk)
                    if written > size:
                        break  # more than announced: the digest check will refuse it
                    file.write(chunk)
                file.flush()
                os.fsync(file.fileno())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.close()

    def stream(self, last_event_id: str | None = None) -> EventStream:
        """Open the device's event stream; iterate the result for events."""
        headers = self._auth() | {
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",  # a compressor may hold events back
            "Cache-Control": "no-store",
        }
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = self._http.build_request(
            "GET", "/v1/devices/me/stream", headers=headers, timeout=self._stream_timeout
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            try:
                response.read()
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            finally:
                response.close()
            raise self._error(response, "open the event stream")
        media_type = response.headers.get("Content-Type", "")
        if not media_type.startswith("text/event-stream"):
            response.close()
            raise CloudUnavailable(
                f"The cloud at {self.cloud_url} answered the event stream request with "
                f"{media_type or 'no content type'}, not text/event-stream; is a proxy or "
                "captive portal in the way? The SDK retries with backoff."
            )
        return EventStream(response, self.cloud_url)

    # --- routing --------------------------------------------------------------------

    def router_export(self, name: str) -> RouterExport:
        """The latest version of router ``name`` as a device routes with it."""
        response = self._send(
            "GET", f"/v1/routers/{quote(name, safe='')}/export", headers=self._auth()
        )
        if response.status_code != 200:
            raise self._error(response, f"fetch router {name!r}")
        return self._parse(RouterExport, response)

    def fetch_blob(self, sha256: str, size: int) -> bytes:
        """The blob ``sha256`` of ``size`` bytes, checked against its digest (a router's
        ONNX file); raises :class:`InvalidBundle` when the bytes do not match."""
        response = self._send("GET", f"/v1/blobs/{quote(sha256, safe='')}", headers=self._auth())
        if response.status_code != 200:
            raise self._error(response, f"download blob {sha256[:12]}...")
        data = response.content
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise InvalidBundle(
                f"The downloaded blob {sha256[:12]}... has {len(data)} bytes and another digest "
                f"than the cloud announced ({size} bytes); it was discarded."
            )
        return data

    def report_decisions(self, name: str, report: DecisionReport) -> DecisionReceipt:
        """Send routing decisions taken on this device; returns the cloud's receipt."""
        response = self._send(
            "POST",
            f"/v1/routers/{quote(name, safe='')}/decisions",
            headers=self._auth(),
            json=report.model_dump(mode="json"),
        )
        if response.status_code != 200:
            raise self._error(response, f"report {len(report.decisions)} routing decisions")
        return self._parse(DecisionReceipt, response)

    def coda_retrieve(self, request: RetrieveRequest) -> RetrieveResponse:
        """Send anonymous query embeddings to a CoDA pool; returns the nearest samples (and
        the random ones asked for). A 429 (rate limit) is a :class:`CloudUnavailable`."""
        response = self._send(
            "POST", "/v1/coda/retrieve", headers=self._auth(), json=request.model_dump(mode="json")
        )
        if response.status_code != 200:
            raise self._error(response, f"retrieve samples from pool {request.pool!r}")
        return self._parse(RetrieveResponse, response)

    def upload_update(self, update: ModelUpdate) -> UpdateAccepted:
        """Send one anonymous model update to its model's open federation round; returns
        the cloud's receipt (``duplicate`` when this update's key was received before)."""
        response = self._send(
            "POST",
            "/v1/federation/updates",
            headers=self._auth() | {"Content-Type": "application/json"},
            content=update.model_dump_json().encode(),
        )
        if response.status_code != 201:
            raise self._error(response, f"upload model update {update.key}")
        return self._parse(UpdateAccepted, response)

    def infer(self, model: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the cloud's model ``model`` on ``inputs`` (name -> array); returns its
        outputs as numpy arrays. Arrays travel as ``.npz``, so dtypes are kept exactly."""
        import numpy as np

        buffer = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in inputs.items()}
        np.savez(buffer, **arrays)
        headers = self._auth() | {"Content-Type": _NPZ, "Accept": _NPZ}
        try:
            response = self._http.post(
                f"/v1/models/{quote(model, safe='')}/infer",
                content=buffer.getvalue(),
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code != 200:
            raise self._error(response, f"run the cloud model {model!r}")
        try:
            with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise CloudError(
                f"The cloud at {self.cloud_url} answered model {model!r} with outputs this SDK "
                f"cannot read ({exc}); is a proxy rewriting responses?",
                status_code=response.status_code,
            ) from exc

    # --- plumbing -------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self.token is None:
            raise DeviceSDKError(
                "This client has no device token yet; register the device (Device.start()) "
                "or pass token= to CloudClient."
            )
        return {"Authorization": f"Bearer {self.token}"}

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        json: object = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(method, url, headers=headers, json=json, content=content)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: Exception) -> CloudUnavailable:
        return CloudUnavailable(
            f"Could not reach the cloud at {self.cloud_url} ({type(exc).__name__}: {exc}); "
            "the SDK retries with backoff, so check the network or the cloud's health."
        )

    def _error(
        self, response: httpx.Response, what: str, *, batch: int | None = None
    ) -> CloudError:
        """The error for an unsuccessful ``response``; ``what`` completes "Could not ...".

        ``batch`` is the number of items when the request uploaded an outbox batch: a
        refusal is then :class:`UploadRejected`, naming the items the details single out.
        """
        code, message, details = None, response.text[:200], None
        try:
            error = ErrorBody.model_validate_json(response.content).error
            code, message, details = error.code, error.message, error.details
        except ValidationError:
            pass
        status = response.status_code
        text = f"Could not {what}: the cloud at {self.cloud_url} answered {status}"
        text += f" ({code}: {message})" if code else f" ({message!r})" if message else ""
        kind: type[CloudError]
        if status == 401:
            kind, advice = (
                DeviceRevoked,
                ". The cloud no longer accepts this device's token: it was removed. "
                + (
                    "Uploads stopped; the queued items stay in the outbox."
                    if batch is not None
                    else "Sync stopped; installed tasks keep working. To enroll again, start a "
                    "Device with a new data_dir."
                ),
            )
        elif status >= 500 or status in _TRANSIENT:
            kind, advice = CloudUnavailable, "; the SDK retries with backoff."
        elif batch is not None:
            return UploadRejected(
                f"{text}; these items can never be accepted as they are.",
                status_code=status,
                code=code,
                server_message=message,
                details=details,
                rejected=_named_items(details, batch),
            )
        else:
            kind, advice = CloudRejected, "."
        return kind(
            text + advice, status_code=status, code=code, server_message=message, details=details
        )

    def _parse(self, schema: type[_Schema], response: httpx.Response) -> _Schema:
        try:
            return schema.model_validate_json(response.content)
        except ValidationError as exc:
            raise CloudError(
                f"The cloud at {self.cloud_url} sent a {schema.__name__} this SDK cannot read "
                f"({exc.error_count()} problems, first: {exc.errors()[0]['msg']}); is the SDK "
                "older than the cloud's wire format?",
                status_code=response.status_code,
            ) from exc


def _named_items(details: object, count: int) -> tuple[int, ...]:
    """The positions of the items a 422's details name (``items.3.payload``), if any."""
    if not isinstance(details, list):
        return ()
    named: set[int] = set()
    for detail in details:
        field = detail.get("field") if isinstance(detail, dict) else None
        match = _ITEM_FIELD.match(field) if isinstance(field, str) else None
        if match is None:
            return ()  # a problem with the request as a whole: no item is singled out
        named.add(int(match.group(1)))
    return tuple(sorted(named)) if all(i < count for i in named) else ()
