"""The ``tandem`` command: run the cloud, migrate its database, manage admin keys, publish
tasks."""

from __future__ import annotations

import hashlib
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from cloud.coda.loader import coda_app
from cloud.core.db import Database, make_engine
from cloud.core.errors import TandemError
from cloud.core.settings import Settings
from cloud.models_cli import models_app

if TYPE_CHECKING:
    import httpx

    from device_sdk.wire import TaskManifest

app = typer.Typer(help="Tandem: device-cloud collaborative machine learning.", no_args_is_help=True)
db_app = typer.Typer(help="The metadata database.", no_args_is_help=True)
admin_app = typer.Typer(help="Admin API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
task_app = typer.Typer(help="ML task bundles: pack and publish.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(task_app, name="task")
app.add_typer(models_app, name="models")
app.add_typer(coda_app, name="coda")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Blobs, keys and the SQLite database [env: TANDEM_DATA_DIR]."),
]


def _settings(data_dir: Path | None) -> Settings:
    if data_dir is not None:
        # Through the environment, so that uvicorn's worker processes see it too.
        os.environ["TANDEM_DATA_DIR"] = str(data_dir.expanduser().resolve())
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        typer.echo(f"error: invalid configuration: {problems}", err=True)
        raise typer.Exit(2) from exc


def _database(settings: Settings) -> Database:
    from cloud.migrations import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(make_engine(settings.resolved_database_url))
    upgrade(database.engine)
    return database


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    data_dir: DataDir = None,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the cloud service (SQLite, in-process broker and local blobs unless configured)."""
    import uvicorn

    os.environ["TANDEM_LOG_LEVEL"] = log_level.upper()
    settings = _settings(data_dir)
    if workers > 1 and not settings.redis_url:
        typer.echo(
            f"error: --workers {workers} needs TANDEM_REDIS_URL: the in-process broker cannot "
            "carry nudges between worker processes. Set TANDEM_REDIS_URL or use --workers 1.",
            err=True,
        )
        raise typer.Exit(2)
    _database(settings).dispose()  # migrate once here, before any worker starts
    uvicorn.run(
        "cloud.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # the app writes structured request logs of its own
        log_level=log_level.lower(),
        timeout_graceful_shutdown=5,  # device streams never end on their own
    )


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply all pending migrations (the server also does this on start)."""
    from cloud.migrations import current_revision

    database = _database(_settings(data_dir))
    typer.echo(f"database at revision {current_revision(database.engine)}")
    database.dispose()


@admin_app.command("create-key")
def create_key(
    name: Annotated[str | None, typer.Option(help="A unique label for the key.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an admin API key and print it. It is shown once; only its hash is stored."""
    from cloud.auth.service import create_admin_key

    database = _database(_settings(data_dir))
    label = name or f"cli-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    try:
        with database.session() as session:
            token = create_admin_key(session, label)
    except TandemError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    typer.echo(token)
    typer.echo(f"admin key {label!r} created; it is shown only this once.", err=True)


@admin_app.command("list-keys")
def list_keys(data_dir: DataDir = None) -> None:
    """List admin keys (names and state, never secrets)."""
    from cloud.auth.service import list_admin_keys

    database = _database(_settings(data_dir))
    with database.session() as session:
        for key in list_admin_keys(session):
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.name}\t{state}\tcreated {key.created_at:%Y-%m-%d %H:%M}")
    database.dispose()


@admin_app.command("revoke-key")
def revoke_key(name: str, data_dir: DataDir = None) -> None:
    """Revoke an admin key by name; it stops working at once."""
    from cloud.auth.service import revoke_admin_key

    database = _database(_settings(data_dir))
    try:
        with database.session() as session:
            revoke_admin_key(session, name)
    except TandemError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    typer.echo(f"admin key {name!r} revoked")


@task_app.command("pack")
def task_pack(
    directory: Annotated[
        Path, typer.Argument(help="The task directory: manifest.json and its files.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write the bundle [default: ./<name>-<version>.tar.gz]."
        ),
    ] = None,
) -> None:
    """Pack a task directory into a deterministic, publishable .tar.gz bundle."""
    manifest, data = _pack_or_exit(directory)
    path = out or Path(f"{manifest.name}-{manifest.version}.tar.gz")
    path.write_bytes(data)
    typer.echo(f"{path}  {len(data)} bytes  sha256 {hashlib.sha256(data).hexdigest()}")
    typer.echo(
        f"task {manifest.name!r} version {manifest.version}, {len(manifest.files)} files", err=True
    )


@task_app.command("publish")
def task_publish(
    path: Annotated[Path, typer.Argument(help="A task directory, or a bundle from `task pack`.")],
    url: Annotated[
        str, typer.Option("--url", envvar="TANDEM_URL", help="The cloud's base URL.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option("--token", envvar="TANDEM_TOKEN", help="An admin key.")
    ] = None,
) -> None:
    """Publish a task to the cloud as the version its manifest names (packing a directory
    first). Published versions are immutable: raise `version` to publish a change."""
    import httpx

    if not token:
        typer.echo(
            "error: publishing needs an admin key: pass --token or set TANDEM_TOKEN.", err=True
        )
        raise typer.Exit(2)
    if path.is_dir():
        data = _pack_or_exit(path)[1]
        filename = f"{path.resolve().name}.tar.gz"
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            typer.echo(f"error: cannot read {path}: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from exc
        filename = path.name
    endpoint = f"{url.rstrip('/')}/v1/tasks"
    try:
        response = httpx.post(
            endpoint,
            headers={"Authorization": f"Bearer {token}"},
            files={"bundle": (filename, data, "application/gzip")},
            timeout=httpx.Timeout(30.0, write=600.0),
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {endpoint}: {exc}. Is the cloud running?", err=True)
        raise typer.Exit(1) from exc
    if response.status_code != 201:
        typer.echo(f"error: {_error_message(response)}", err=True)
        raise typer.Exit(1)
    body = response.json()
    typer.echo(
        f"published task {body['name']!r} version {body['version']}  sha256 {body['bundle_sha256']}"
    )


def _pack_or_exit(directory: Path) -> tuple[TaskManifest, bytes]:
    from device_sdk import InvalidBundle, bundle

    if not directory.is_dir():
        typer.echo(f"error: {directory} is not a directory; give a task directory.", err=True)
        raise typer.Exit(1)
    try:
        return bundle.pack(directory)
    except InvalidBundle as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _error_message(response: httpx.Response) -> str:
    """The server's error message, or the status line when the body has none."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if isinstance(message, str):
        return message
    return f"HTTP {response.status_code} {response.reason_phrase} from {response.url}"


def main() -> None:
    app(prog_name="tandem")


if __name__ == "__main__":
    main()
