"""The `tandem` command: admin keys, migrations, and refusing unsafe serve options."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cloud.app import create_app
from cloud.cli import app
from cloud.core.settings import Settings

runner = CliRunner()


def test_create_key_prints_a_working_admin_key(tmp_path: Path) -> None:
    """`tandem admin create-key` prints a key that the server then accepts."""
    result = runner.invoke(
        app, ["admin", "create-key", "--name", "ops", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[0]
    assert token.startswith("tdm_admin_")
    with TestClient(create_app(Settings(data_dir=tmp_path, log_requests=False))) as client:
        response = client.get("/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_duplicate_key_name_fails_with_a_message(tmp_path: Path) -> None:
    """A second key with the same name exits 1 and says to choose another name."""
    args = ["admin", "create-key", "--name", "ops", "--data-dir", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "choose another name" in again.output


def test_list_and_revoke_keys(tmp_path: Path) -> None:
    """list-keys shows a key as active, and as revoked after revoke-key."""
    data = ["--data-dir", str(tmp_path)]
    runner.invoke(app, ["admin", "create-key", "--name", "ci", *data])
    assert "ci\tactive" in runner.invoke(app, ["admin", "list-keys", *data]).output
    assert runner.invoke(app, ["admin", "revoke-key", "ci", *data]).exit_code == 0
    assert "ci\trevoked" in runner.invoke(app, ["admin", "list-keys", *data]).output
    missing = runner.invoke(app, ["admin", "revoke-key", "nope", *data])
    assert missing.exit_code == 1
    assert "existing keys: ci" in missing.output


def test_db_upgrade_reports_the_revision(tmp_path: Path) -> None:
    """`tandem db upgrade` migrates an empty data directory and prints the revision."""
    result = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "database at revision" in result.output
    assert (tmp_path / "tandem.db").exists()


def test_serve_refuses_workers_without_redis(tmp_path: Path) -> None:
    """`tandem serve --workers 2` without TANDEM_REDIS_URL exits 2 and says what to set."""
    result = runner.invoke(app, ["serve", "--workers", "2", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "TANDEM_REDIS_URL" in result.output


def test_invalid_configuration_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A placeholder token in production stops the CLI with exit code 2 and the reason."""
    monkeypatch.setenv("TANDEM_ENV", "production")
    monkeypatch.setenv("TANDEM_ADMIN_TOKEN", "changeme")
    result = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "placeholder" in result.output
