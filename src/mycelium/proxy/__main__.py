"""`python -m mycelium.proxy SETTINGS_JSON`: the proxy process itself.

`myc proxy` parses its command line and then replaces itself with this, so that a
running sidecar holds only the proxy's modules. The one argument is `ProxySettings` as
JSON (`ProxySettings.to_json`).
"""

from __future__ import annotations

import sys

from mycelium.proxy.server import run_proxy
from mycelium.proxy.settings import ProxySettings


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mycelium.proxy SETTINGS_JSON (start proxies with 'myc proxy')")
    run_proxy(ProxySettings.from_json(sys.argv[1]))


if __name__ == "__main__":
    main()
