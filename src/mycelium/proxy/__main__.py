"""`python -m mycelium.proxy SETTINGS_JSON`: the proxy process itself.

`myc proxy` parses its command line and then replaces itself with this, so that a
running sidecar holds only the proxy's modules. The one argument is `ProxySettings` as
JSON (`ProxySettings.to_json`). A join token, being a secret, comes in the environment
(`MYC_JOIN_TOKEN`, removed once read), never on the command line.
"""

from __future__ import annotations

import os
import sys

from mycelium.errors import MeshError
from mycelium.proxy.listeners.server import run_proxy
from mycelium.proxy.settings import ProxySettings


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mycelium.proxy SETTINGS_JSON (start proxies with 'myc proxy')")
    join_token = os.environ.pop("MYC_JOIN_TOKEN", None) or None
    try:
        run_proxy(ProxySettings.from_json(sys.argv[1]), join_token)
    except MeshError as exc:  # an expected failure (a port taken...): its sentence, as myc's
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
