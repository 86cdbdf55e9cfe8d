"""Bookinfo's reviews service, in three versions (env VERSION):

- v1: the reviews, without ratings;
- v2: the reviews with their ratings from the ratings service, as black stars;
- v3: the same, as red stars.

GET /reviews/<id> answers {"id", "version", "podname", "reviews": [...]}; each review
has "reviewer" and "text", and in v2/v3 "rating": {"stars", "color"} or, when ratings
cannot be reached, {"error": "ratings unavailable"}. GET /health answers 200.

ratings is called by its service name, http://ratings:9080/ratings/<id>, through the
pod's sidecar: the proxy in HTTP_PROXY, which the runtime sets. Standard library only.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import urllib.error
import urllib.request

SERVICE = "reviews"
VERSION = os.environ.get("VERSION", "v1")
STAR_COLOR = {"v2": "black", "v3": "red"}
RATINGS_URL = os.environ.get("RATINGS_URL", "http://ratings:9080")
RATINGS_TIMEOUT_S = 0.5  # within the route's perTryTimeout (1s), so reviews still answers

REVIEWS = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. "
        "The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
]


def mesh_opener() -> urllib.request.OpenerDirector:
    """Calls by service name go through the sidecar, which HTTP_PROXY names (the
    runtime sets it, and clears any other proxy setting the app could inherit).
    Built once: each opener loads the system's CA store, about 20 ms."""
    proxy = os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy")
    proxies = {"http": proxy} if proxy else {}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


MESH = mesh_opener()


def fetch_ratings(book: int) -> dict[str, int] | None:
    """The ratings of a book, or None when the ratings service does not answer well."""
    try:
        with MESH.open(f"{RATINGS_URL}/ratings/{book}", timeout=RATINGS_TIMEOUT_S) as r:
            ratings = json.load(r)["ratings"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{SERVICE}-{VERSION} ratings call failed: {exc}", flush=True)
        return None
    return {str(name): int(stars) for name, stars in ratings.items()}


def book_reviews(book: int) -> dict[str, object]:
    color = STAR_COLOR.get(VERSION)
    ratings = fetch_ratings(book) if color else None
    reviews: list[dict[str, object]] = []
    for reviewer, text in REVIEWS:
        review: dict[str, object] = {"reviewer": reviewer, "text": text}
        if color is not None:
            if ratings is None:
                review["rating"] = {"error": "ratings unavailable"}
            elif reviewer in ratings:
                review["rating"] = {"stars": ratings[reviewer], "color": color}
        reviews.append(review)
    return {
        "id": book,
        "version": VERSION,
        "podname": os.environ.get("MYC_POD_NAME", ""),
        "reviews": reviews,
    }


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.answer(200, {"status": "ok"})
        elif path.startswith("/reviews/") and path.removeprefix("/reviews/").isdigit():
            self.answer(200, book_reviews(int(path.removeprefix("/reviews/"))))
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
        print(f"{SERVICE}-{VERSION} {self.command} {self.path} {code}", flush=True)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{SERVICE}-{VERSION} " + format % args, file=sys.stderr, flush=True)


def main() -> None:
    address = (os.environ["MYC_APP_ADDRESS"], int(os.environ.get("PORT", "9080")))
    server = http.server.ThreadingHTTPServer(address, Handler)
    print(f"{SERVICE}-{VERSION} listening on {address[0]}:{address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
