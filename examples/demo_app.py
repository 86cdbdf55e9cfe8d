"""A tiny HTTP service for the demo: answers every request with who it is.

python examples/demo_app.py NAME HOST PORT
"""

from __future__ import annotations

import sys

from aiohttp import web


def main() -> None:
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(
            {"service": name, "path": request.path_qs}, headers={"x-served-by": name}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
