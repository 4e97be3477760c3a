"""The dashboard's routes, shared by a server and the router: /ui (the page), /ui/data, /ui/reports/NAME.

The page (ui.html, next to this module) is one self-contained file: inline CSS, JS and SVG, no CDN, so
it works offline and behind any proxy. It holds no data itself; it polls /ui/data every `ui.refresh_s`.

Auth is the /fleet/status check (the `read` scope). A browser cannot put an Authorization header on a
page load, so these routes also take the key from the `modelfleet_key` cookie, which the page's key
form sets (SameSite=Strict, so no other site's page can make the browser send it). A refused /ui still
answers the page, with 401 or 403: it shows the key form, and no data, since all data is behind /ui/data.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

from modelfleet.errors import ModelfleetError, NotFound
from modelfleet.observe.ui_data import ServerFigures, report_file, server_figures

COOKIE = "modelfleet_key"
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
# The page runs only its own inline code and talks only to its own origin.
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; "
     b"style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'none'"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]  # fmt: skip

# (status, headers, body): what a route answers, for the server's ASGI app and the router alike.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class ParsedFigures:
    """A server's figures for /ui/data, parsed from its exposition in a worker thread and reused for as
    long as the parse took, as ServerMetrics.render reuses its text: polls back to back keep a thread
    busy half the time at most (3,000 models took 2.5 s to parse), and a small server's page is fresh."""

    def __init__(self, exposition: Callable[[], Awaitable[bytes]]) -> None:
        self._exposition = exposition
        self._parsed: tuple[float, float, ServerFigures] | None = None  # (finished at, took s, figures)

    async def get(self) -> ServerFigures:
        if self._parsed is not None:
            finished_at, took_s, figures = self._parsed
            if time.monotonic() - finished_at < took_s:
                return figures
        text = (await self._exposition()).decode()
        started = time.monotonic()
        figures = await asyncio.to_thread(server_figures, text)
        finished = time.monotonic()
        self._parsed = (finished, finished - started, figures)
        return figures


@functools.cache
def page() -> bytes:
    """ui.html, read once from the package."""
    return resources.files("modelfleet.observe").joinpath("ui.html").read_bytes()


def cookie_key(cookie_header: str | None) -> str | None:
    """The API key in the `modelfleet_key` cookie of a Cookie header, if any."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return unquote(value)
    return None


def ui_credentials(authorization: str | None, api_key: str | None, cookie_header: str | None) -> str | None:
    """A request's credential for the /ui routes: the Authorization header, X-API-Key, else the cookie."""
    return authorization or api_key or cookie_key(cookie_header)


def is_ui_path(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def refused_page(exc: ModelfleetError) -> Answer:
    """/ui without a (good) key: the page (it asks for one) with the refusal's status."""
    headers = [(b"content-type", _HTML), *_PAGE_HEADERS]
    if exc.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="modelfleet"'))
    return exc.http_status, headers, page()


async def ui_answer(
    path: str, data: Callable[[], Awaitable[dict[str, Any]]], reports_dir: Path | None
) -> Answer:
    """What GET ``path`` (under /ui) answers for a caller already allowed the `read` scope."""
    if path in ("/ui", "/ui/"):
        return 200, [(b"content-type", _HTML), *_PAGE_HEADERS], page()
    if path == "/ui/data":
        return 200, [(b"content-type", _JSON), (b"cache-control", b"no-store")], orjson.dumps(await data())
    if path.startswith("/ui/reports/"):
        name = path[len("/ui/reports/") :]
        found = report_file(reports_dir, name) if "/" not in name else None
        if found is not None:
            body = await asyncio.to_thread(found.read_bytes)  # a report with charts runs to megabytes
            return 200, [(b"content-type", _HTML), (b"x-content-type-options", b"nosniff")], body
        raise NotFound(f"no report {name!r}: /ui/reports/ serves the latest bench, tune and review reports")
    raise NotFound(f"no route GET {path}; the dashboard is /ui, its data /ui/data")
