"""The outbox against a real `tandem serve`, across kill -9: a device process killed while
uploading, or while queueing, loses nothing, and every item is stored exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_sdk._records import Identity
from device_sdk._store import DeviceStore
from tests.e2e.live_server import LiveServer
from tests.factories import ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.slow

WAIT_S = 60.0
ROOT = Path(__file__).resolve().parents[2]

# The device process. `queue N LOSE_AFTER`: start uploading (batches of 10), and put N items
# one by one, printing each key once its put returned, then "queued". After LOSE_AFTER
# answers (-1: never) the transport stops handing them over, as if each later response were
# lost in flight, and creates the file `lost` in the data directory. The process then waits
# to be killed.
# `drain`: upload whatever the outbox holds, print the uploader's counts, exit.
DEVICE_SCRIPT = """
import json, sys, threading
from pathlib import Path

import httpx

from device_sdk._outbox import Outbox
from device_sdk._store import DeviceStore
from device_sdk._client import CloudClient
from device_sdk._uploader import Uploader


class LoseResponsesAfter(httpx.HTTPTransport):
    def __init__(self, answered: int, marker: Path) -> None:
        super().__init__()
        self.left = answered
        self.marker = marker

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.left -= 1
        if self.left < 0:
            self.marker.touch()
            threading.Event().wait()  # the cloud stored this batch; the device never hears
        return response


mode, data_dir = sys.argv[1], Path(sys.argv[2])
store = DeviceStore(data_dir / "device.db")
identity = store.identity()
outbox = Outbox(store)
transport = None
if mode == "queue":
    count, answered = int(sys.argv[3]), int(sys.argv[4])
    transport = LoseResponsesAfter(answered, data_dir / "lost") if answered >= 0 else None
client = CloudClient(identity.cloud_url, token=identity.token, transport=transport)
uploader = Uploader(outbox, client, max_items=10, linger_s=0.0)
uploader.start()
if mode == "queue":
    for n in range(count):
        print(outbox.put("events", {"n": n, "pad": "x" * 100}), flush=True)
    print("queued", flush=True)
    threading.Event().wait()
drained = uploader.flush(60.0)
uploader.stop()
print(json.dumps({"drained": drained, "left": outbox.count(), "uploaded": uploader.uploaded,
                  "duplicates": uploader.duplicates, "dropped": uploader.dropped}))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "cloud", env={"TANDEM_ADMIN_TOKEN": ADMIN_TOKEN}) as live:
        yield live


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "device_process.py"
    path.write_text(DEVICE_SCRIPT)
    return path


def registered_data_dir(server: LiveServer, tmp_path: Path) -> Path:
    """A data directory holding the identity of a device registered with ``server``."""
    key = httpx.post(f"{server.url}/v1/enrollment-keys", headers=ADMIN, json={})
    assert key.status_code == 201, key.text
    device = httpx.post(f"{server.url}/v1/devices", json={"enrollment_key": key.json()["key"]})
    assert device.status_code == 201, device.text
    body = device.json()
    data_dir = tmp_path / "device"
    store = DeviceStore(data_dir / "device.db")
    store.save_identity(
        Identity(
            device_id=body["device_id"],
            token=body["token"],
            platform_public_key=body["platform_public_key"],
            cloud_url=server.url,
            registered_at=datetime.now(UTC),
        )
    )
    store.close()
    return data_dir


def start_device(script: Path, *arguments: str | int) -> subprocess.Popen[str]:
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, arguments)],
        cwd=script.parent,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored_keys(server: LiveServer) -> list[str]:
    """Every key the cloud stored on the events channel, following the cursor."""
    keys: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = httpx.get(f"{server.url}/v1/uploads/events", headers=ADMIN, params=params)
        assert page.status_code == 200, page.text
        keys += [item["key"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return keys


def read_lines(process: subprocess.Popen[str], until: str | int) -> list[str]:
    """Lines the process prints, up to the line ``until`` or ``until`` lines."""
    assert process.stdout is not None
    lines: list[str] = []
    while len(lines) != until:
        line = process.stdout.readline()
        assert line, "the device process ended early"
        if line.rstrip("\n") == until:
            return lines
        lines.append(line.rstrip("\n"))
    return lines


def kill_9(process: subprocess.Popen[str]) -> list[str]:
    """SIGKILL the process; returns the complete lines it printed that were not read yet."""
    process.kill()
    process.wait(timeout=WAIT_S)
    assert process.stdout is not None
    assert process.stderr is not None
    # Read through the same file object readline() used: lines it has already buffered
    # would be lost to communicate(), which reads the raw pipe.
    with process.stdout, process.stderr:
        out = process.stdout.read()
        err = process.stderr.read()
    assert process.returncode == -9, err
    return [line for line in out.split("\n")[:-1] if line]  # a cut-off last line is dropped


def drain(script: Path, data_dir: Path) -> dict[str, Any]:
    """Run the device again on ``data_dir`` with the uploader only; its final counts."""
    process = start_device(script, "drain", data_dir)
    out, err = process.communicate(timeout=WAIT_S + 30)
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_kill_9_mid_upload_then_restart_delivers_every_item_once(
    server: LiveServer, tmp_path: Path, script: Path
) -> None:
    """500 items are queued while uploading; the process is killed with a batch the cloud
    stored but never acknowledged (its response lost). Restarted, the uploader sends the
    rest and that batch again: the cloud holds the 500 keys, each once."""
    data_dir = registered_data_dir(server, tmp_path)
    process = start_device(script, "queue", data_dir, 500, 10)
    try:
        queued = read_lines(process, "queued")
        wait_until((data_dir / "lost").exists, "a response was lost")
    finally:
        kill_9(process)
    before = len(stored_keys(server))
    assert len(queued) == 500 and 0 < before < 500

    result = drain(script, data_dir)

    assert result["drained"] and (result["left"], result["dropped"]) == (0, 0), result
    assert result["uploaded"] == 500 - before and result["duplicates"] >= 1, result
    keys = stored_keys(server)
    assert len(keys) == len(set(keys)) == 500
    assert set(keys) == set(queued)


def test_kill_9_while_queueing_keeps_every_item_put_returned(
    server: LiveServer, tmp_path: Path, script: Path
) -> None:
    """The process is killed while it puts items (uploading as it goes); every item whose
    put had returned reaches the cloud after a restart, each once."""
    data_dir = registered_data_dir(server, tmp_path)
    process = start_device(script, "queue", data_dir, 100_000, -1)
    try:
        queued = read_lines(process, 200)
    finally:
        queued += kill_9(process)
    assert 200 <= len(queued) < 100_000

    result = drain(script, data_dir)

    assert result["drained"] and result["left"] == 0, result
    keys = stored_keys(server)
    assert len(keys) == len(set(keys))
    assert set(queued) <= set(keys)
    assert len(keys) <= len(queued) + 1  # at most the put that was cut off before printing
