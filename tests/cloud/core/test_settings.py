"""Settings: defaults, URLs, and refusing placeholder secrets in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.core.settings import Environment, Settings


def test_default_database_is_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    """With no database URL, the database is a SQLite file inside the data directory."""
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/tandem.db"
    assert settings.is_sqlite


def test_postgresql_urls_get_the_psycopg_driver(tmp_path: Path) -> None:
    """postgresql:// and postgres:// URLs are run through psycopg 3."""
    for url in ("postgresql://u@h:5432/d", "postgres://u@h:5432/d"):
        settings = Settings(data_dir=tmp_path, database_url=url)
        assert settings.resolved_database_url == "postgresql+psycopg://u@h:5432/d"


def test_environment_variables_configure_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TANDEM_* variables set the fields."""
    monkeypatch.setenv("TANDEM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TANDEM_REDIS_URL", "redis://example:6379/1")
    monkeypatch.setenv("TANDEM_MAX_UPLOAD_BYTES", "1024")
    settings = Settings()
    assert settings.data_dir == tmp_path.resolve()
    assert settings.redis_url == "redis://example:6379/1"
    assert settings.max_upload_bytes == 1024


@pytest.mark.parametrize("token", ["changeme", "admin", "short-token"])
def test_production_refuses_placeholder_admin_token(tmp_path: Path, token: str) -> None:
    """In production a placeholder or short admin token is refused with a fix in the message."""
    with pytest.raises(ValidationError, match=r"secrets\.token_urlsafe"):
        Settings(data_dir=tmp_path, env=Environment.production, admin_token=token)


def test_development_accepts_a_short_admin_token(tmp_path: Path) -> None:
    """Development settings accept a short token, for local experiments."""
    settings = Settings(data_dir=tmp_path, admin_token="dev-token")
    assert settings.admin_token is not None


def test_upload_limit_must_be_positive(tmp_path: Path) -> None:
    """A zero or negative upload limit is refused."""
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, max_upload_bytes=0)


def test_admin_token_is_not_shown_in_repr(tmp_path: Path) -> None:
    """The admin token never appears when settings are printed or logged."""
    settings = Settings(data_dir=tmp_path, admin_token="very-secret-value-123456789")
    assert "very-secret-value" not in repr(settings)
