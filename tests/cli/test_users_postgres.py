"""``offmaps users`` with ``OFFMAPS_DATABASE_URL``: users go to the PostgreSQL store the
server reads, not to ``DATA/users.sqlite``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from offmaps.cli import main
from offmaps.services import build_services
from offmaps.settings import ServerSettings
from tests.features.conftest import postgres_url
from tests.state.test_postgres_migrations import prefix

__all__ = ["prefix"]  # the fixture, used by name


def test_users_added_by_the_cli_are_the_servers_in_postgresql(
    tmp_path: Path,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OFFMAPS_DATABASE_URL", postgres_url())
    monkeypatch.setenv("OFFMAPS_DATABASE_SCHEMA", prefix)
    monkeypatch.setenv("OFFMAPS_DATABASE_MIGRATE", "true")
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["users", "add", "crew1", "--scopes", "maps:read", "--password-stdin",
                 "--data", str(data)]) == 0  # fmt: skip
    assert main(["users", "list", "--data", str(data)]) == 0
    assert "crew1" in capsys.readouterr().out
    assert not (data / "users.sqlite").exists()
    services = build_services(ServerSettings(data_dir=data))
    try:
        assert services.users.get_user("crew1").scopes == ("maps:read",)
    finally:
        services.close()
    assert main(["users", "delete", "crew1", "--data", str(data)]) == 0
    assert main(["users", "delete", "crew1", "--data", str(data)]) == 1  # one line: no such user
