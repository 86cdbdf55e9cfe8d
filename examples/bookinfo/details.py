"""Bookinfo's details service: what is known about a book.

GET /details/<id> answers the book's details as JSON; GET /health answers 200.
Standard library only. Binds to MYC_APP_ADDRESS (what the mesh's runtime sets) and
PORT (default 9080).
"""

from __future__ import annotations

import http.server
import json
import os
import sys

SERVICE = "details"


def book_details(book: int) -> dict[str, object]:
    return {
        "id": book,
        "title": "The Comedy of Errors",
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.answer(200, {"status": "ok"})
        elif path.startswith("/details/") and path.removeprefix("/details/").isdigit():
            self.answer(200, book_details(int(path.removeprefix("/details/"))))
        else:
            self.answer(404, {"error": f"no such path: {path}"})

    def answer(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        print(f"{SERVICE} {self.command} {self.path} {code}", flush=True)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{SERVICE} " + format % args, file=sys.stderr, flush=True)


def main() -> None:
    address = (os.environ["MYC_APP_ADDRESS"], int(os.environ.get("PORT", "9080")))
    server = http.server.ThreadingHTTPServer(address, Handler)
    print(f"{SERVICE} listening on {address[0]}:{address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
