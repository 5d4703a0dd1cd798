"""``offmaps users``: add, list, delete users and add OAuth2 clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from offmaps.cli import main
from offmaps.state.users import SQLiteUserStore

PASSWORD = "correct horse battery"


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the CLI as ``offmaps`` would, with ``stdin`` as standard input."""
    with CliRunner().isolation(input=stdin, env=env) as (out, err, _):
        code = main(list(args))
    return code, out.getvalue().decode(), err.getvalue().decode()


def add(data: Path, name: str = "ann", *extra: str) -> tuple[int, str, str]:
    return run(
        "users", "add", name, "--scopes", "maps:read,maps:write", "--data", str(data),
        "--password-stdin", *extra, stdin=PASSWORD + "\n",
    )  # fmt: skip


def test_add_with_password_from_stdin_creates_a_user_who_can_sign_in(tmp_path: Path) -> None:
    code, out, _ = add(tmp_path, "ann", "--group", "crew", "--group", "north")
    assert code == 0
    assert "added user ann" in out
    with SQLiteUserStore(tmp_path / "users.sqlite") as store:
        user = store.verify_password("ann", PASSWORD)
    assert user.scopes == ("maps:read", "maps:write")
    assert user.groups == ("crew", "north")


def test_add_prompts_for_the_password_twice(tmp_path: Path) -> None:
    code, _, _ = run(
        "users", "add", "ann", "--scopes", "admin", "--data", str(tmp_path),
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert code == 0
    with SQLiteUserStore(tmp_path / "users.sqlite") as store:
        assert store.verify_password("ann", PASSWORD).scopes == ("admin",)


def test_add_refuses_mismatched_prompted_passwords(tmp_path: Path) -> None:
    code, out, _ = run(
        "users", "add", "ann", "--scopes", "admin", "--data", str(tmp_path),
        stdin=f"{PASSWORD}\nsomething else\n",
    )  # fmt: skip
    assert code == 130
    assert "do not match" in out
    assert not (tmp_path / "users.sqlite").exists()


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("bad name", "--scopes", "admin"), PASSWORD, "InvalidUserError: user name 'bad name'"),
        (("ann", "--scopes", "maps:read,root"), PASSWORD, "InvalidUserError: unknown scope"),
        (("ann", "--scopes", "admin"), "short", "InvalidUserError: a password must be"),
    ],
)
def test_add_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], stdin: str, message: str
) -> None:
    code, _, err = run(
        "users", "add", *args, "--data", str(tmp_path), "--password-stdin", stdin=stdin + "\n"
    )
    assert code == 1
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1


def test_adding_a_user_twice_is_user_exists(tmp_path: Path) -> None:
    add(tmp_path)
    code, _, err = add(tmp_path)
    assert code == 1
    assert err.startswith("UserExistsError:")


def test_list_prints_users_as_text_and_json(tmp_path: Path) -> None:
    add(tmp_path, "ann", "--group", "crew")
    add(tmp_path, "bob")
    code, out, _ = run("users", "list", "--data", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        "ann  maps:read,maps:write  groups: crew",
        "bob  maps:read,maps:write",
    ]
    code, out, _ = run("users", "list", "--data", str(tmp_path), "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["ann", "bob"]
    assert rows[0]["groups"] == ["crew"]
    assert rows[0]["disabled"] is False
    assert "password" not in json.dumps(rows)


def test_data_folder_defaults_to_offmaps_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    env = {"OFFMAPS_DATA_DIR": str(data)}
    code, _, _ = run(
        "users", "add", "ann", "--scopes", "maps:read", "--password-stdin",
        stdin=PASSWORD + "\n", env=env,
    )  # fmt: skip
    assert code == 0
    assert (data / "users.sqlite").is_file()
    assert run("users", "list", env=env)[1].startswith("ann")


def test_list_of_an_empty_folder_prints_nothing_and_creates_nothing(tmp_path: Path) -> None:
    code, out, _ = run("users", "list", "--data", str(tmp_path / "none"), "--json")
    assert (code, json.loads(out)) == (0, [])
    assert not (tmp_path / "none").exists()


def test_delete_removes_the_user(tmp_path: Path) -> None:
    add(tmp_path)
    code, out, _ = run("users", "delete", "ann", "--data", str(tmp_path))
    assert code == 0
    assert "deleted user ann" in out
    code, _, err = run("users", "delete", "ann", "--data", str(tmp_path))
    assert code == 1
    assert err.startswith("UserNotFoundError:")


def test_add_client_prints_a_secret_that_verifies(tmp_path: Path) -> None:
    code, out, err = run(
        "users", "add-client", "etl", "--scopes", "features:edit", "--data", str(tmp_path)
    )
    assert code == 0
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["client_id"] == "etl"
    assert "not stored" in err
    with SQLiteUserStore(tmp_path / "users.sqlite") as store:
        assert store.verify_client("etl", lines["client_secret"]).scopes == ("features:edit",)
