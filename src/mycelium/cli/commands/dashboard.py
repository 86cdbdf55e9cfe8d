"""`myc dashboard`: log a browser into the controller's dashboard.

The dashboard's API shows as much as the REST API, so it asks for a login; the page
never holds the admin token. This command, which has the token, gets a one-time link
from the controller and opens it in a browser (or prints it, with --no-open or when no
browser can be started): the link works once, within two minutes, and leaves the
browser a session cookie for the dashboard only.
"""

from __future__ import annotations

import os
import sys
import webbrowser
from typing import Annotated

import typer

from mycelium.cli.settings import settings_of


def dashboard_command(
    ctx: typer.Context,
    *,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the link; do not start a browser.")
    ] = False,
) -> None:
    """Open the dashboard in a browser, logged in by a one-time link.

    The dashboard shows every resource, the service graph and live taps, so its API
    asks for a login. This asks the controller for a link that works once, within two
    minutes, and opens it; the browser then holds a session cookie for the dashboard
    only, and the page never sees the admin token. With --no-open, or with no display
    to start a browser on, the link is printed to copy.

    [bold]Examples[/]

      myc dashboard
      myc dashboard --no-open   # on a server: copy the link to your browser
    """
    with settings_of(ctx).client() as client:
        link = client.dashboard_login()
    opened = False if no_open else _open(link)
    if not opened:
        typer.echo("open this link in a browser within 2 minutes (it works once):")
    typer.echo(link)


def _open(link: str) -> bool:
    # Without a display, webbrowser falls back to terminal browsers (lynx, w3m): they
    # would take the terminal over; print the link instead.
    graphical = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not graphical and sys.platform != "darwin":
        return False
    try:
        return webbrowser.open(link)
    except webbrowser.Error:
        return False
