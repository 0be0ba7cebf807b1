"""Who may write: the reviewer list as the library resolves it (secrets files, $CARLOS_REVIEWERS,
local mode, failing closed) and the check of an acting user, whatever flag the caller set."""

from __future__ import annotations

from pathlib import Path

import pytest

from carlos.core.access import AccessPolicy, CurrentUser, authorize, default_secrets_files, local_identity, resolve_policy
from carlos.errors import InvalidInputError, PermissionDeniedError

NO_ENV: dict[str, str] = {}


def _toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reviewers_from_the_secrets_file(tmp_path: Path) -> None:
    f = _toml(tmp_path / "secrets.toml", '[carlos]\nreviewers = ["Alice@Example.org", " bob@example.org "]\n')
    policy = resolve_policy([f], env=NO_ENV)
    assert policy.reviewers == {"alice@example.org", "bob@example.org"} and not policy.login and not policy.local
    assert policy.can_write("alice@example.org") and policy.can_write("ALICE@example.org") and policy.can_write("bob@example.org")
    assert not policy.can_write("mallory@example.org")
    assert str(f) in policy.source


def test_later_files_win_and_missing_files_are_skipped(tmp_path: Path) -> None:
    home = _toml(tmp_path / "home.toml", '[carlos]\nreviewers = ["old@example.org"]\n')
    project = _toml(tmp_path / "project.toml", '[carlos]\nreviewers = ["new@example.org"]\n')
    policy = resolve_policy([home, tmp_path / "absent.toml", project], env=NO_ENV)
    assert policy.can_write("new@example.org") and not policy.can_write("old@example.org")


def test_environment_list_replaces_the_file_list(tmp_path: Path) -> None:
    f = _toml(tmp_path / "secrets.toml", '[carlos]\nreviewers = ["alice@example.org"]\n')
    policy = resolve_policy([f], env={"CARLOS_REVIEWERS": "carol@example.org, dave@example.org"})
    assert policy.reviewers == {"carol@example.org", "dave@example.org"} and policy.source == "$CARLOS_REVIEWERS"
    assert not policy.can_write("alice@example.org")
    assert resolve_policy([f], env={"CARLOS_REVIEWERS": "  "}).can_write("alice@example.org")  # empty: not set


def test_neither_is_local_mode_and_login_without_a_list_is_nobody(tmp_path: Path) -> None:
    local = resolve_policy([tmp_path / "absent.toml"], env=NO_ENV)
    assert local.local and local.can_write("anyone") and not local.can_write(None) and not local.can_write("  ")
    login_only = resolve_policy([_toml(tmp_path / "s.toml", '[auth]\nclient_id = "x"\n')], env=NO_ENV)
    assert login_only.login and not login_only.local and not login_only.can_write("alice@example.org")
    assert "no reviewers are listed" in login_only.why_not("alice@example.org")
    empty_list = resolve_policy([_toml(tmp_path / "e.toml", "[carlos]\nreviewers = []\n")], env=NO_ENV)
    assert not empty_list.can_write("alice@example.org")


@pytest.mark.parametrize(
    "content",
    [
        b"[carlos\nreviewers = 1",  # not TOML
        b"\xff\xfe[carlos]",  # not UTF-8
        b'[carlos]\nreviewers = "alice@example.org"\n',  # a string, not a list
        b"[carlos]\nreviewers = [1, 2]\n",
        b'carlos = "reviewers"\n',  # not a table
    ],
)
def test_an_unreadable_secrets_file_fails_closed(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "secrets.toml"
    f.write_bytes(content)
    for env in (NO_ENV, {"CARLOS_REVIEWERS": "alice@example.org"}):  # the environment does not reopen it
        policy = resolve_policy([f], env=env)
        assert policy.error and not policy.can_write("alice@example.org") and not policy.can_write("anyone")
        with pytest.raises(PermissionDeniedError, match="nobody may write"):
            policy.check(CurrentUser.local("alice@example.org"), "claim x")


def test_a_directory_where_the_file_should_be_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").mkdir()
    assert resolve_policy([tmp_path / "secrets.toml"], env=NO_ENV).error


def test_the_check_ignores_can_write_and_needs_a_login(tmp_path: Path) -> None:
    f = _toml(tmp_path / "secrets.toml", '[carlos]\nreviewers = ["alice@example.org"]\n')
    files = (str(f),)
    liar = CurrentUser("mallory@example.org", True, "", "oidc", True, files)  # the caller claims it may write
    with pytest.raises(PermissionDeniedError) as e:
        authorize(liar, "record a decision on civitai:1")
    assert str(e.value).startswith("mallory@example.org may not record a decision on civitai:1: not a listed reviewer")
    logged_out = CurrentUser("alice@example.org", True, "", "oidc", False, files)  # a listed name, but no login
    with pytest.raises(PermissionDeniedError, match="not logged in"):
        authorize(logged_out, "claim civitai:1")
    with pytest.raises(PermissionDeniedError, match="a visitor who is not logged in may not claim"):
        authorize(CurrentUser("", False, "", "oidc", False, files), "claim civitai:1", AccessPolicy())  # not even locally
    assert authorize(CurrentUser(" alice@example.org ", False, "UI said no", "oidc", True, files), "claim civitai:1") == "alice@example.org"
    with pytest.raises(InvalidInputError, match="CurrentUser"):
        authorize("alice@example.org", "claim civitai:1")  # type: ignore[arg-type]


def test_default_locations_and_local_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    files = default_secrets_files(tmp_path / "project")
    assert files[0] == tmp_path / "home" / ".streamlit" / "secrets.toml"
    assert files[-1] == tmp_path / "project" / ".streamlit" / "secrets.toml" and len(set(files)) == len(files)
    assert local_identity({"CARLOS_REVIEWER": " ada "}) == "ada"
    assert local_identity({})  # the OS user, or a placeholder in a container without one
