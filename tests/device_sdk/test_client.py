"""The device's HTTP client: error mapping, conditional fetches, resumable downloads, SSE."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from device_sdk import (
    CloudClient,
    CloudRejected,
    CloudUnavailable,
    DeviceRevoked,
    InvalidBundle,
    OutboxItem,
    RegistrationRefused,
    UploadRejected,
)
from device_sdk.wire import RegisterDeviceRequest, StatusReport, TaskState
from tests.device_sdk.fake_cloud import DEVICE_TOKEN, ENROLLMENT_KEY, FakeCloud


def client_for(cloud: FakeCloud, token: str | None = DEVICE_TOKEN) -> CloudClient:
    return CloudClient("http://cloud", token=token, transport=cloud.transport)


def answering(status: int, body: object = None) -> CloudClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return CloudClient("http://cloud", token=DEVICE_TOKEN, transport=transport)


def test_register_returns_identity_and_pinned_key() -> None:
    """Registration returns the token and the platform key to pin."""
    cloud = FakeCloud()
    registered = client_for(cloud, token=None).register(
        RegisterDeviceRequest(enrollment_key=ENROLLMENT_KEY)
    )
    assert (registered.token, registered.platform_public_key) == (DEVICE_TOKEN, cloud.public_key)


def test_refused_enrollment_carries_the_servers_code() -> None:
    """A 401 at registration raises RegistrationRefused with the cloud's code and message."""
    client = client_for(FakeCloud(), token=None)
    with pytest.raises(RegistrationRefused, match="enrollment_key") as caught:
        client.register(RegisterDeviceRequest(enrollment_key="wrong"))
    assert (caught.value.status_code, caught.value.code) == (401, "invalid_enrollment_key")


def test_unchanged_desired_state_is_a_304() -> None:
    """desired(etag) with the current ETag returns no state and the same ETag."""
    client = client_for(FakeCloud())
    state, etag = client.desired()
    assert state is not None and state.rev == 1
    assert client.desired(etag) == (None, etag)


def test_401_on_a_device_endpoint_is_device_revoked() -> None:
    """A 401 from a device endpoint raises DeviceRevoked."""
    cloud = FakeCloud(revoked=True)
    with pytest.raises(DeviceRevoked, match="removed"):
        client_for(cloud).desired()


def test_5xx_is_cloud_unavailable() -> None:
    """A 503 raises CloudUnavailable, carrying the status code."""
    with pytest.raises(CloudUnavailable) as caught:
        answering(503, {"error": {"code": "service_unavailable", "message": "busy"}}).desired()
    assert (caught.value.status_code, caught.value.code) == (503, "service_unavailable")


def test_other_4xx_is_cloud_rejected() -> None:
    """A 422 raises CloudRejected, which a retry would not fix."""
    with pytest.raises(CloudRejected) as caught:
        answering(422, {"error": {"code": "invalid_input", "message": "no"}}).report(
            [StatusReport(task="a", version=1, state=TaskState.active)]
        )
    assert not isinstance(caught.value, DeviceRevoked)


def outbox_items(count: int) -> list[OutboxItem]:
    now = datetime.now(UTC)
    return [OutboxItem(f"key-{n}", "events", f'{{"n":{n}}}', 7, now) for n in range(count)]


def test_upload_sends_the_stored_json_and_tolerates_unreadable_counts() -> None:
    """upload() posts the items' stored JSON as is; a 2xx without counts accepts them all."""
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, text="stored")

    client = CloudClient("http://cloud", token=DEVICE_TOKEN, transport=httpx.MockTransport(handle))
    result = client.upload("events", outbox_items(2))
    assert (result.accepted, result.duplicates) == (2, 0)
    assert sent[0].url.path == "/v1/devices/me/uploads/events"
    assert sent[0].headers["Authorization"] == f"Bearer {DEVICE_TOKEN}"
    assert sent[0].content == (
        b'{"items":[{"key":"key-0","payload":{"n":0}},{"key":"key-1","payload":{"n":1}}]}'
    )


def test_refused_upload_names_the_items_its_details_single_out() -> None:
    """A 422 on upload raises UploadRejected carrying the details and the named positions."""
    details = [{"field": "items.1.payload", "message": "too deep"}]
    client = answering(422, {"error": {"code": "invalid", "message": "no", "details": details}})
    with pytest.raises(UploadRejected) as caught:
        client.upload("events", outbox_items(3))
    assert (caught.value.rejected, caught.value.details) == ((1,), details)


def test_network_failure_is_cloud_unavailable() -> None:
    """A refused connection raises CloudUnavailable naming the cloud."""
    with pytest.raises(CloudUnavailable, match="http://cloud"):
        client_for(FakeCloud(down=True)).desired()


def test_report_returns_the_accepted_count() -> None:
    """report() sends all reports in one request and returns how many were accepted."""
    cloud = FakeCloud()
    reports = [StatusReport(task="a", version=1, state=s) for s in ("downloaded", "active")]
    assert client_for(cloud).report(reports) == 2
    assert cloud.paths("POST") == ["/v1/devices/me/status"]


def test_download_resumes_with_range_after_a_truncated_transfer(tmp_path: Path) -> None:
    """A transfer cut after 100 bytes leaves a .part file; the next call asks only for the rest."""
    cloud = FakeCloud()
    task = cloud.release(files={"model.bin": bytes(range(256)) * 64})
    client = client_for(cloud)
    partial = tmp_path / "bundle.part"
    cloud.cut_next_download_at = 100
    with pytest.raises(CloudUnavailable):
        client.download(task.bundle_sha256, task.bundle_size, partial)
    assert partial.stat().st_size == 100
    data = client.download(task.bundle_sha256, task.bundle_size, partial)
    assert hashlib.sha256(data).hexdigest() == task.bundle_sha256
    last = cloud.requests[-1].headers
    assert (last["range"], last["if-range"]) == ("bytes=100-", f'"{task.bundle_sha256}"')


def test_a_complete_part_file_needs_no_request(tmp_path: Path) -> None:
    """A .part file already holding the whole verified bundle is used without a download."""
    cloud = FakeCloud()
    task = cloud.release()
    partial = tmp_path / "bundle.part"
    partial.write_bytes(cloud.blobs[task.bundle_sha256])
    client_for(cloud).download(task.bundle_sha256, task.bundle_size, partial)
    assert cloud.paths() == []


def test_a_download_with_another_digest_is_discarded(tmp_path: Path) -> None:
    """Bytes that do not hash to the announced digest raise InvalidBundle and are deleted."""
    cloud = FakeCloud()
    task = cloud.release()
    data = bytearray(cloud.blobs[task.bundle_sha256])
    data[-1] ^= 0xFF
    cloud.blobs[task.bundle_sha256] = bytes(data)
    partial = tmp_path / "bundle.part"
    with pytest.raises(InvalidBundle, match="truncated or was altered"):
        client_for(cloud).download(task.bundle_sha256, task.bundle_size, partial)
    assert not partial.exists()


def test_stream_yields_parsed_events_and_sends_last_event_id() -> None:
    """The stream sends Last-Event-ID and yields the cloud's desired events."""
    cloud = FakeCloud(rev=5)
    with client_for(cloud).stream(last_event_id="4") as stream:
        event = next(iter(stream))
    assert (event.event, event.id, event.data) == ("desired", "5", '{"desired_rev": 5}')
    assert stream.retry_ms == 1000
    assert cloud.requests[-1].headers["last-event-id"] == "4"


def test_stream_refused_with_401_is_device_revoked() -> None:
    """Opening the stream with a revoked token raises DeviceRevoked."""
    with pytest.raises(DeviceRevoked):
        client_for(FakeCloud(revoked=True)).stream()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A real socket server that opens an event stream and then never sends a byte more."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[socket.socket] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        connections.append(connection)
        connection.recv(65536)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nd\r\nretry: 1000\n\n\r\n"
        )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for connection in connections:
        connection.close()
    thread.join(5)


def test_close_unblocks_a_reader_on_a_real_socket(silent_server: str) -> None:
    """close() from another thread ends a read blocked on a silent connection at once."""
    client = CloudClient(silent_server, token=DEVICE_TOKEN, heartbeat_timeout_s=60)
    stream = client.stream()
    finished = threading.Event()

    def read() -> None:
        for _ in stream:
            pass
        finished.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert not finished.wait(0.2)
    stream.close()
    assert finished.wait(5)
    client.close()


def test_a_silent_stream_times_out_as_unavailable(silent_server: str) -> None:
    """A stream silent for longer than the heartbeat timeout raises CloudUnavailable."""
    client = CloudClient(silent_server, token=DEVICE_TOKEN, heartbeat_timeout_s=0.3)
    with client.stream() as stream, pytest.raises(CloudUnavailable, match="broke"):
        list(stream)
    client.close()


def test_stream_answered_with_html_is_unavailable() -> None:
    """A 200 that is not text/event-stream (a captive portal) raises CloudUnavailable."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, html="<h1>Log in</h1>"))
    client = CloudClient("http://cloud", token=DEVICE_TOKEN, transport=transport)
    with pytest.raises(CloudUnavailable, match="captive portal"):
        client.stream()
