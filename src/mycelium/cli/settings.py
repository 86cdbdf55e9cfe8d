"""Where `myc` finds its controller and the admin token.

Resolved once per invocation from the global options (`--controller`, `--home`, their
environment variables) and stored on the Typer context. The token is looked up only when
a command talks to the controller: `MYC_TOKEN` wins, else `<home>/admin-token`, which the
controller writes at its first start. Reading it lazily keeps `myc version --client` and
`myc controller` independent of a token that may not exist yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mycelium import ports
from mycelium.cli.errors import InputError

if TYPE_CHECKING:
    from mycelium.cli.client import ControllerClient

DEFAULT_CONTROLLER_URL = f"http://127.0.0.1:{ports.API}"
DEFAULT_HOME = "~/.mycelium"
TOKEN_FILE_NAME = "admin-token"
TOKEN_ENV = "MYC_TOKEN"


@dataclass(frozen=True, slots=True)
class CliSettings:
    controller_url: str
    home: Path  # already expanded

    @property
    def token_file(self) -> Path:
        return self.home / TOKEN_FILE_NAME

    def token(self) -> tuple[str | None, str]:
        """The admin token (None when there is none) and where it came from."""
        from_env = os.environ.get(TOKEN_ENV)
        if from_env:
            return from_env.strip(), TOKEN_ENV
        try:
            text = self.token_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None, str(self.token_file)
        except OSError as exc:
            raise InputError(
                f"cannot read the admin token at {self.token_file}: {exc.strerror}; "
                f"check its permissions, or set {TOKEN_ENV}"
            ) from exc
        return (text or None), str(self.token_file)

    def client(self) -> ControllerClient:
        """A client for the configured controller; close it (or use `with`)."""
        # Imported here so that `myc --help` does not pay for importing aiohttp.
        from mycelium.cli.client import ControllerClient  # noqa: PLC0415

        token, source = self.token()
        return ControllerClient(self.controller_url, token, token_source=source)


def settings_of(ctx: typer.Context) -> CliSettings:
    """The settings the root callback stored on the context."""
    root = ctx.find_root()
    settings = root.obj
    if not isinstance(settings, CliSettings):  # only when a command is invoked bare
        settings = CliSettings(DEFAULT_CONTROLLER_URL, Path(DEFAULT_HOME).expanduser())
        root.obj = settings
    return settings
