"""`python -m app spa`: the example SPA (`examples/spa/`) on its own origin, beside the API.

A tiny static server: the files of `examples/spa/` as they are, `index.html` for any other
path without a dot (the SPA handles `/billing`, where Checkout and the portal return to),
and `/config.js` saying where the API is. Served from a second origin so that the browser
really exercises the API's CORS, as a production SPA would. Development only.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

SPA_DIR = Path(__file__).resolve().parents[2] / "examples" / "spa"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".graphql": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".md": "text/plain; charset=utf-8",
}


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an http(s) URL; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


class Spa:
    """The ASGI app. `api_url` is read on every request, so a test may set it after start."""

    def __init__(self, api_url: str, directory: Path = SPA_DIR) -> None:
        self.api_url = api_url
        self.directory = directory
        self._app = Starlette(routes=[Route("/{path:path}", self._serve, methods=["GET"])])

    @property
    def api_url(self) -> str:
        return self._api_url

    @api_url.setter
    def api_url(self, value: str) -> None:
        origin_of(value)
        self._api_url = value.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def _headers(self) -> dict[str, str]:
        api = origin_of(self.api_url)
        return {
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "; ".join(
                [
                    "default-src 'none'",
                    "script-src 'self'",
                    "style-src 'self'",
                    "img-src 'self' data:",
                    f"connect-src 'self' {api}",
                    "base-uri 'none'",
                    "form-action 'self'",
                    "frame-ancestors 'none'",
                ]
            ),
        }

    async def _serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        if path == "config.js":
            config = json.dumps({"apiUrl": self.api_url}).replace("<", "\\u003c")
            return Response(
                f"window.SPA_CONFIG = {config};\n",
                media_type=MEDIA_TYPES[".js"],
                headers=self._headers(),
            )
        files = {p.name: p for p in self.directory.iterdir() if p.is_file()}
        if path in files:  # top-level files only: nothing else is reachable
            file = files[path]
        elif "." not in path.rsplit("/", 1)[-1]:  # /, /billing, …: the SPA's own routes
            file = files["index.html"]
        else:
            return PlainTextResponse("Not Found", 404, headers=self._headers())
        media_type = MEDIA_TYPES.get(file.suffix, "application/octet-stream")
        return FileResponse(file, media_type=media_type, headers=self._headers())
