"""Where the admin token comes from: MYC_TOKEN, else <home>/admin-token, else nowhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.cli.settings import TOKEN_ENV, CliSettings


def settings(home: Path) -> CliSettings:
    return CliSettings(controller_url="http://127.0.0.1:15014", home=home)


def test_the_token_file_in_the_home_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    (tmp_path / "admin-token").write_text("s3cret\n")

    assert settings(tmp_path).token() == ("s3cret", str(tmp_path / "admin-token"))


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    (tmp_path / "admin-token").write_text("s3cret\n")

    assert settings(tmp_path).token() == ("from-env", TOKEN_ENV)


def test_no_token_anywhere_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)

    assert settings(tmp_path).token() == (None, str(tmp_path / "admin-token"))
