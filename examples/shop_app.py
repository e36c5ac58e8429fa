"""A small shop app that embeds the Tandem device SDK: it tracks what the user looks at and
re-ranks the catalogue on the device with the task ``shop-rerank`` the cloud deployed.

Against a cloud where ``shop-rerank`` is deployed and an enrollment key exists::

    python examples/shop_app.py --cloud http://127.0.0.1:8000 --enrollment-key tdm_enroll_...

The whole demo against ``tandem serve`` on a fresh data directory, given an admin key: it
publishes ``examples/tasks/shop_rerank``, creates an enrollment key and a deployment to
every device through the REST API, then runs the app::

    python examples/shop_app.py --demo --admin-token "$(tandem admin create-key)"
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from device_sdk import Device, DeviceSDKError, bundle

TASK_DIR = Path(__file__).resolve().parent / "tasks" / "shop_rerank"
TASK = "shop-rerank"
CATALOGUE = [
    {"id": "sku-101", "name": "trail shoes", "price": 89.0, "rating": 4.1},
    {"id": "sku-102", "name": "rain jacket", "price": 149.0, "rating": 4.6},
    {"id": "sku-103", "name": "wool socks", "price": 12.5, "rating": 4.4},
    {"id": "sku-104", "name": "head torch", "price": 35.0, "rating": 3.9},
    {"id": "sku-105", "name": "water bottle", "price": 18.0, "rating": 4.0},
]
# What the user did in this session: the app tracks these as events.
VIEWS = ["sku-104", "sku-105"]


class DemoError(Exception):
    """A step of the demo's set-up failed; the message says what to do."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.demo:
            if not args.admin_token:
                raise DemoError(
                    "--demo needs an admin key: pass --admin-token, or set TANDEM_TOKEN "
                    "(create one with `tandem admin create-key`)."
                )
            enrollment_key = set_up_demo(args.cloud, args.admin_token)
        elif not args.enrollment_key:
            raise DemoError(
                "Pass --enrollment-key (or set TANDEM_ENROLLMENT_KEY), or --demo with an "
                "admin key to create one."
            )
        else:
            enrollment_key = args.enrollment_key
        if args.data_dir is not None:
            run_shop(args.cloud, enrollment_key, args.data_dir, timeout_s=args.timeout)
        else:
            with tempfile.TemporaryDirectory(prefix="shop-device-") as data_dir:
                run_shop(args.cloud, enrollment_key, Path(data_dir), timeout_s=args.timeout)
    except (DemoError, DeviceSDKError, TimeoutError) as exc:
        print(f"shop app: error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_shop(cloud: str, enrollment_key: str, data_dir: Path, *, timeout_s: float) -> None:
    """The app: start a device, track the user's views, rank the catalogue on the device."""
    with Device(
        cloud,
        enrollment_key=enrollment_key,
        data_dir=data_dir,
        attributes={"platform": "linux", "app_version": "1.0.0", "tags": ["shop-demo"]},
    ) as device:
        print(f"device {device.status().device_id} registered with {cloud}")
        track = getattr(device, "track", None)  # Device.track arrives with the pipelines
        for item in VIEWS:
            if track is not None:
                track("view", item=item, page="catalogue")
            else:
                device.queue("events", {"event": "view", "item": item, "page": "catalogue"})
        how = "tracked" if track is not None else "queued for upload"
        print(f"{len(VIEWS)} view events {how}")

        print(f"waiting up to {timeout_s:g} s for task {TASK} ...")
        status = device.wait_for(lambda s: TASK in s.installed, timeout_s=timeout_s)
        print(f"task {TASK} version {status.installed[TASK]} installed")
        result: dict[str, Any] = device.predict(TASK, {"items": CATALOGUE, "viewed": VIEWS})
        names = {item["id"]: item["name"] for item in CATALOGUE}
        print("ranking, best first:")
        for position, item_id in enumerate(result["ranking"], start=1):
            print(f"  {position}. {names[item_id]:<13} {result['scores'][item_id]:7.3f}")
        if device.flush_uploads(timeout_s):
            print("events uploaded")
        else:
            print("events still queued; they are sent when the cloud is reachable")
    print("shop app: done")


def set_up_demo(cloud: str, admin_token: str) -> str:
    """Publish the task, create an enrollment key and deploy the task to every device;
    returns the enrollment key."""
    with httpx.Client(
        base_url=cloud, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    ) as admin:
        manifest, data = bundle.pack(TASK_DIR)
        published = _call(
            admin, "POST", "/v1/tasks", files={"bundle": (f"{TASK}.tar.gz", data)}, ok=(201, 409)
        )
        verb = "published" if published.status_code == 201 else "already published:"
        print(f"{verb} task {manifest.name} version {manifest.version}")
        key: str = _call(admin, "POST", "/v1/enrollment-keys", json={}).json()["key"]
        deployment = _call(
            admin,
            "POST",
            "/v1/deployments",
            json={
                "task": manifest.name,
                "version": manifest.version,
                "target": {"everyone": True},
                "stages": [100],
            },
        ).json()
        print(f"created an enrollment key and deployment {deployment['id']} to every device")
    return key


def _call(
    client: httpx.Client, method: str, path: str, *, ok: tuple[int, ...] = (201,), **kw: Any
) -> httpx.Response:
    try:
        response = client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise DemoError(
            f"Could not reach the cloud at {client.base_url} ({exc}); is `tandem serve` "
            "running there? Pass its address with --cloud."
        ) from exc
    if response.status_code in ok:
        return response
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    hint = (
        " (`tandem admin create-key` must use the data directory `tandem serve` uses.)"
        if response.status_code == 401
        else ""
    )
    raise DemoError(f"{method} {path} answered {response.status_code}: {message}{hint}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cloud",
        default=os.environ.get("TANDEM_URL", "http://127.0.0.1:8000"),
        help="the cloud's URL (default: $TANDEM_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--enrollment-key",
        default=os.environ.get("TANDEM_ENROLLMENT_KEY"),
        help="the key the device registers with (default: $TANDEM_ENROLLMENT_KEY)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="first publish the task, create an enrollment key and deploy, as an admin",
    )
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("TANDEM_TOKEN"),
        help="an admin key, for --demo (default: $TANDEM_TOKEN)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the device keeps its state (default: a temporary directory)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the task (default: 60)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
