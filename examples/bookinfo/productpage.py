"""Bookinfo's product page: one HTML page about a book, put together from the details
and reviews services.

GET /productpage answers the page: the book's details (from details), its reviews
(from reviews, whichever version the mesh routed to, named on the page) and, when the
reviews carry ratings, their stars. A dependency that fails shows as an error block in
the page, which still answers 200. GET / redirects to /productpage; GET /health
answers 200.

details and reviews are called by their service names (http://details:9080,
http://reviews:9080) through the pod's sidecar: the proxy in HTTP_PROXY, which the
runtime sets. Standard library only.
"""

from __future__ import annotations

import html
import http.server
import json
import os
import sys
import urllib.error
import urllib.request

SERVICE = "productpage"
DETAILS_URL = os.environ.get("DETAILS_URL", "http://details:9080")
REVIEWS_URL = os.environ.get("REVIEWS_URL", "http://reviews:9080")
CALL_TIMEOUT_S = 3.0
BOOK = 0
MAX_STARS = 5

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 52em; color: #222; }
h1 { border-bottom: 1px solid #ccc; padding-bottom: .3em; }
.columns { display: flex; gap: 3em; }
.columns > section { flex: 1; }
dt { font-weight: bold; margin-top: .4em; }
blockquote { margin: 0 0 1.2em 0; padding-left: 1em; border-left: 3px solid #ddd; }
.stars { font-size: 1.2em; }
.error { background: #fdecea; border: 1px solid #e0a8a2; padding: .6em 1em; }
.served-by { color: #666; font-size: .9em; }
"""


def mesh_opener() -> urllib.request.OpenerDirector:
    """Calls by service name go through the sidecar, which HTTP_PROXY names (the
    runtime sets it, and clears any other proxy setting the app could inherit).
    Built once: each opener loads the system's CA store, about 20 ms."""
    proxy = os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy")
    proxies = {"http": proxy} if proxy else {}
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


MESH = mesh_opener()


def call(url: str) -> tuple[dict[str, object] | None, str | None]:
    """The JSON document at `url`, or None and why not."""
    try:
        with MESH.open(url, timeout=CALL_TIMEOUT_S) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        # When the mesh answered rather than the service, it says why.
        mesh_reason = exc.headers.get("x-mycelium-reason")
        why = f" (mesh: {mesh_reason})" if mesh_reason else ""
        return None, f"{url} answered {exc.code} {exc.reason}{why}"
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{url} could not be reached: {getattr(exc, 'reason', exc)}"
    except ValueError as exc:
        return None, f"{url} did not answer JSON: {exc}"
    if not isinstance(document, dict):
        return None, f"{url} did not answer a JSON object"
    return document, None


def error_block(what: str, why: str) -> str:
    return (
        f'<div class="error" role="alert"><strong>Error fetching {html.escape(what)}</strong>'
        f"<br>{html.escape(why)}</div>"
    )


def render_details(details: dict[str, object] | None, error: str | None) -> str:
    if details is None:
        return error_block("product details", error or "unknown error")
    fields = [
        ("Author", "author"),
        ("Year", "year"),
        ("Type", "type"),
        ("Pages", "pages"),
        ("Publisher", "publisher"),
        ("Language", "language"),
        ("ISBN-10", "ISBN-10"),
        ("ISBN-13", "ISBN-13"),
    ]
    rows = "".join(
        f"<dt>{label}</dt><dd>{html.escape(str(details[key]))}</dd>"
        for label, key in fields
        if key in details
    )
    return f"<dl>{rows}</dl>"


def render_stars(rating: object) -> str:
    if not isinstance(rating, dict):
        return ""
    if "error" in rating:
        return f'<p class="error">{html.escape(str(rating["error"]))}</p>'
    stars = max(0, min(MAX_STARS, int(rating.get("stars", 0))))
    color = html.escape(str(rating.get("color", "black")))
    shown = "\u2605" * stars + "\u2606" * (MAX_STARS - stars)
    return (
        f'<p class="stars" style="color: {color}" data-stars="{stars}" '
        f'aria-label="{stars} of {MAX_STARS} stars">{shown}</p>'
    )


def render_reviews(reviews: dict[str, object] | None, error: str | None) -> str:
    if reviews is None:
        return error_block("product reviews", error or "unknown error")
    version = html.escape(str(reviews.get("version", "unknown")))
    pod = html.escape(str(reviews.get("podname", "")))
    items = reviews.get("reviews")
    parts = []
    for review in items if isinstance(items, list) else []:
        if not isinstance(review, dict):
            continue
        parts.append(
            "<blockquote>"
            f"<p>{html.escape(str(review.get('text', '')))}</p>"
            f"<footer>\u2014 {html.escape(str(review.get('reviewer', '')))}</footer>"
            f"{render_stars(review.get('rating'))}"
            "</blockquote>"
        )
    served = (
        f'<p class="served-by" data-reviews-version="{version}">'
        f"Reviews served by reviews {version}" + (f" ({pod})" if pod else "") + "</p>"
    )
    return "".join(parts) + served


def product_page() -> str:
    details, details_error = call(f"{DETAILS_URL}/details/{BOOK}")
    reviews, reviews_error = call(f"{REVIEWS_URL}/reviews/{BOOK}")
    title = "The Comedy of Errors"
    if details is not None and isinstance(details.get("title"), str):
        title = str(details["title"])
    title = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bookinfo: {title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p>Summary: <a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">The Comedy of
Errors</a> is one of William Shakespeare's early plays, his shortest and one of his most
farcical comedies.</p>
<div class="columns">
<section id="details"><h2>Book Details</h2>{render_details(details, details_error)}</section>
<section id="reviews"><h2>Book Reviews</h2>{render_reviews(reviews, reviews_error)}</section>
</div>
<p class="served-by">Page served by {html.escape(os.environ.get("MYC_POD_NAME", SERVICE))}</p>
</body>
</html>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.answer(200, "text/plain", b"ok\n")
        elif path == "/":
            self.send_response(302)
            self.send_header("location", "/productpage")
            self.send_header("content-length", "0")
            self.end_headers()
        elif path == "/productpage":
            self.answer(200, "text/html; charset=utf-8", product_page().encode())
        else:
            self.answer(404, "text/plain", f"no such page: {path}\n".encode())

    def answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
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
