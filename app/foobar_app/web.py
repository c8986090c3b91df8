"""The WSGI application: routes, JSON handling and the X-Served-By header."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from foobar_app.cache import ItemsCache
from foobar_app.config import Settings
from foobar_app.store import ItemStore, StoreError

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

MAX_BODY_BYTES = 16 * 1024
# /healthz answers within this bound (seconds), far below the load balancer's check timeout.
HEALTH_TIMEOUT = 0.5
# Idempotency-Key: what a client may send (a UUID fits).
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    400: "400 Bad Request",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    413: "413 Content Too Large",
    503: "503 Service Unavailable",
}


class TooLarge(ValueError):
    """The request body is over MAX_BODY_BYTES (answered with 413)."""


class Response:
    """A finished response: status code, content type and body."""

    def __init__(self, status: int, body: bytes, content_type: str, headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_response(status: int, payload: Any) -> Response:
    body = (json.dumps(payload, separators=(",", ":")) + "\n").encode("utf-8")
    return Response(status, body, "application/json")


def error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def read_release(code_dir: Path) -> str:
    """The release id written next to the code at deploy time ("dev" when run from a checkout)."""
    marker = code_dir / "RELEASE"
    try:
        return marker.read_text(encoding="utf-8").strip() or "dev"
    except OSError:
        return "dev"


def parse_new_item(environ: Environ, max_text_length: int) -> str:
    """Return the text of a POSTed item or raise ValueError with a message for the client."""
    content_type = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ValueError("send JSON with Content-Type: application/json")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise ValueError("invalid Content-Length") from exc
    if length <= 0:
        raise ValueError("empty body: send {\"text\": \"...\"}")
    if length > MAX_BODY_BYTES:
        raise TooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
    raw = environ["wsgi.input"].read(length)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("body is not valid JSON") from exc
    except RecursionError as exc:
        raise ValueError("body nests too deeply") from exc
    if not isinstance(document, dict) or "text" not in document:
        raise ValueError("missing field: text")
    text = document["text"]
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if len(text) > max_text_length:
        raise ValueError(f"text longer than {max_text_length} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates such as "\ud800" decode from JSON but are no text
        raise ValueError("text is not valid Unicode") from exc
    return text


def idempotency_key(environ: Environ) -> str | None:
    """The request's Idempotency-Key header (None when absent); ValueError when malformed."""
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.match(str(key)):
        raise ValueError("Idempotency-Key must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return str(key)


def render_page(host: str, release: str, items: list[dict[str, Any]]) -> bytes:
    rows = "\n".join(
        f"<li><span class=\"id\">#{int(item['id'])}</span> {html.escape(item['text'])}"
        f" <time>{html.escape(item['created_at'])}</time></li>"
        for item in items
    )
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>www.foobar.com</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body>
<h1>www.foobar.com</h1>
<p>Served by <strong id="host">{html.escape(host)}</strong>, release <code>{html.escape(release)}</code>.</p>
<h2>Latest items</h2>
<ul id="items">
{rows or '<li class="empty">no items yet</li>'}
</ul>
</body>
</html>
"""
    return page.encode("utf-8")


class App:
    """Routes requests to handlers; every response carries X-Served-By."""

    def __init__(self, settings: Settings, store: ItemStore, release: str, cache: ItemsCache | None = None) -> None:
        self.settings = settings
        self.store = store
        self.release = release
        self.cache = cache

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        response = self.dispatch(environ)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("X-Served-By", self.settings.host_name),
            ("Cache-Control", "no-store"),
            *response.headers,
        ]
        start_response(STATUS_TEXT.get(response.status, f"{response.status} Error"), headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [response.body]

    def dispatch(self, environ: Environ) -> Response:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "/")) or "/"
        routes: dict[str, dict[str, Callable[[Environ], Response]]] = {
            "/": {"GET": self.index},
            "/api/items": {"GET": self.list_items, "POST": self.add_item},
            "/healthz": {"GET": self.health},
            "/version": {"GET": self.version},
        }
        handlers = routes.get(path)
        if handlers is None:
            return error(404, f"no such path: {path}")
        if method == "HEAD":
            method = "GET"
        handler = handlers.get(method)
        if handler is None:
            allowed = ", ".join(sorted(handlers))
            return Response(405, b'{"error":"method not allowed"}\n', "application/json", [("Allow", allowed)])
        return handler(environ)

    def _items(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """The latest items, from the cache where it has them, and the X-Cache header that says so."""
        limit = self.settings.items_limit
        if self.cache is None:
            return [item.as_dict() for item in self.store.latest(limit)], []
        items, state = self.cache.get(limit)
        if items is None:
            items = [item.as_dict() for item in self.store.latest(limit)]
            self.cache.put(limit, items)
        return items, [("X-Cache", state)]

    def _refresh_cache(self) -> None:
        """After a write: the cache gets the list as the primary has it now, else loses its list."""
        if self.cache is None:
            return
        limit = self.settings.items_limit
        try:
            self.cache.put(limit, [item.as_dict() for item in self.store.latest(limit, fresh=True)], from_write=True)
        except StoreError:
            self.cache.forget(limit)

    def index(self, _environ: Environ) -> Response:
        try:
            items, headers = self._items()
        except StoreError:
            return Response(503, b"<!doctype html><p>database unavailable</p>\n", "text/html; charset=utf-8")
        page = render_page(self.settings.host_name, self.release, items)
        return Response(200, page, "text/html; charset=utf-8", headers)

    def list_items(self, _environ: Environ) -> Response:
        try:
            items, headers = self._items()
        except StoreError:
            return error(503, "read database unavailable")
        response = json_response(200, {"host": self.settings.host_name, "items": items})
        response.headers.extend(headers)
        return response

    def add_item(self, environ: Environ) -> Response:
        """Create an item. With an Idempotency-Key, a repeat of the same request gets the same row (200)."""
        try:
            key = idempotency_key(environ)
            text = parse_new_item(environ, self.settings.max_text_length)
        except TooLarge as exc:
            return error(413, str(exc))
        except ValueError as exc:
            return error(400, str(exc))
        try:
            item, created = self.store.add(text, key)
        except StoreError:
            return error(503, "write database unavailable")
        if created:
            self._refresh_cache()
            return json_response(201, item.as_dict())
        if item.text != text:
            return error(409, "Idempotency-Key already used for a different item")
        response = json_response(200, item.as_dict())
        response.headers.append(("Idempotent-Replayed", "true"))
        return response

    def health(self, _environ: Environ) -> Response:
        """Healthy = pages can be served: the read path answers within HEALTH_TIMEOUT.

        The write database is not consulted: a lost primary disables writes (POST answers 503) but must
        not take the readable site out of the load balancer.
        """
        try:
            self.store.ping_read(HEALTH_TIMEOUT)
        except StoreError:
            return json_response(503, {"host": self.settings.host_name, "read_db": "down"})
        return json_response(200, {"host": self.settings.host_name, "read_db": "ok"})

    def version(self, _environ: Environ) -> Response:
        return Response(200, (self.release + "\n").encode("utf-8"), "text/plain; charset=utf-8")
