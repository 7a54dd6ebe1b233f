"""GraphiQL at `GET /graphql`, its scripts and styles served by this service.

The browser assets are the UMD builds of the exact npm packages pinned in `package.json` /
`package-lock.json` (`graphiql` 4, `react` and `react-dom` 18), which the set-up installs into
`node_modules/` with `npm ci`. They are served under versioned paths such as
`/graphiql/graphiql@4.1.2/graphiql.min.js` with `Cache-Control: public, max-age=31536000,
immutable`, and the page's Content-Security-Policy lets it load scripts and styles from this
origin only. Why these versions: React 19 ships no UMD build and React's npm packages are
CommonJS, which a browser cannot import without a bundler or a converting CDN; graphiql 4.1
is the newest GraphiQL that still ships a UMD build (graphiql 5 is ESM-only on Monaco and
needs a bundler or an ESM CDN), and it runs on React 18.

Where `node_modules/` lacks them (no npm on the machine), the page loads the same pinned
files from unpkg.com with Subresource Integrity instead, and the service logs that at start.

Headers typed into GraphiQL (a bearer token) never reach the URL, and GraphiQL's storage is
wrapped so that tabs and history are kept without them (see `BOOT_JS`).

Share links: the page keeps the address bar at `/graphql?query=…&variables=…` for the tab
being edited, and a browser opening such a link gets GraphiQL with that query
loaded in a tab (not run: running it is the user's click, with their own token), while an API
client sending the same GET gets the answer (`wants_page`).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
PREFIX = "/graphiql"
CDN = "https://unpkg.com"

# The versions `package.json` pins; the CDN fallback loads exactly these (tests keep them equal).
PINNED = {"graphiql": "4.1.2", "react": "18.3.1", "react-dom": "18.3.1"}

# GraphiQL's dialogs (settings, shortcuts) lock the page's scroll with one <style> element
# (react-remove-scroll-bar); its text is fixed while the page has no scroll bar, as here.
# Allowing that text by its hash is the page's only exception to "styles from this origin".
SCROLL_LOCK_STYLE = "sha256-nzTgYzXYDNe6BAHiiI7NNlfK8n/auuOAhh2t92YvuXo="

IMMUTABLE = "public, max-age=31536000, immutable"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
JSON_MEDIA = "application/json"


@dataclass(frozen=True)
class Vendor:
    """One file of an npm package that the page needs."""

    package: str
    path: str  # inside the package
    media_type: str
    integrity: str | None  # SRI of the pinned version's file, for the CDN; None: not on the page


VENDOR = (
    Vendor(
        "react",
        "umd/react.production.min.js",
        JS,
        "sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z",
    ),
    Vendor(
        "react-dom",
        "umd/react-dom.production.min.js",
        JS,
        "sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1",
    ),
    Vendor(
        "graphiql",
        "graphiql.min.js",
        JS,
        "sha384-9XdHu7ajgGJziD4J1zNBKQ842Q/+zZfDv+ib1eMhZWBH6hPAs806x+Jbcf0yNO6B",
    ),
    Vendor(
        "graphiql",
        "graphiql.min.css",
        CSS,
        "sha384-1el1QShFBnnXTx9x/Cprg82hZWKt0ry29OAYIXt05swbi0KcZDFoj0CWguMpopJr",
    ),
)
# graphiql.min.js names its source map `index.umd.js.map`; served when present, for devtools.
SOURCE_MAP = Vendor("graphiql", "graphiql.min.js.map", JSON_MEDIA, None)
SOURCE_MAP_NAME = "index.umd.js.map"

DEFAULT_QUERY = """\
# Billing API in GraphiQL
#
# `plans` is public; the rest needs a token.
# 1. Mint a development token:
#      .venv/bin/python -m app token
# 2. Put it in the Headers pane (below):
#      {"Authorization": "Bearer <token>"}
# Headers are never put in the URL nor
# saved in this browser.
#
# Run: Ctrl-Enter, or the run button.

{
  plans {
    id
    name
  }
}

# With the Authorization header set:
# query Me {
#   me {
#     id
#     email
#     firstName
#     lastName
#     subscription { planId status }
#   }
# }
"""

# The page's own script and style: files, never inline, so that the CSP needs no exception.
BOOT_JS = """\
/* Starts GraphiQL on this page; the API is the page's own path (POST, JSON body). */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("graphiql-config").textContent);

  // GraphiQL keeps tabs, history and settings in localStorage, and its history plugin keeps
  // each run's headers. A bearer token must never land there, so every value is stored
  // without its `headers`; `shouldPersistHeaders` stays off and its switch is hidden.
  function memoryStore() {
    var items = {};
    return {
      getItem: function (k) {
        return Object.prototype.hasOwnProperty.call(items, k) ? items[k] : null;
      },
      setItem: function (k, v) { items[k] = String(v); },
      removeItem: function (k) { delete items[k]; },
      keys: function () { return Object.keys(items); }
    };
  }
  function browserStore() {
    try {
      var ls = window.localStorage;
      ls.setItem("graphiql:probe", "1");
      ls.removeItem("graphiql:probe");
      return {
        getItem: function (k) { return ls.getItem(k); },
        setItem: function (k, v) { ls.setItem(k, v); },
        removeItem: function (k) { ls.removeItem(k); },
        keys: function () { return Object.keys(ls); }
      };
    } catch (e) {
      return memoryStore();
    }
  }
  function stripHeaders(value) {
    if (Array.isArray(value)) { return value.map(stripHeaders); }
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).forEach(function (k) {
        if (k.toLowerCase() !== "headers") { out[k] = stripHeaders(value[k]); }
      });
      return out;
    }
    return value;
  }
  var base = browserStore();
  var NAMESPACE = "graphiql:";
  var storage = {
    getItem: function (key) { return base.getItem(key); },
    setItem: function (key, value) {
      if (/headers/i.test(key.slice(NAMESPACE.length))) { base.removeItem(key); return; }
      var parsed;
      try { parsed = JSON.parse(value); } catch (e) { base.setItem(key, value); return; }
      base.setItem(key, JSON.stringify(stripHeaders(parsed)));
    },
    removeItem: function (key) { base.removeItem(key); },
    clear: function () {
      base.keys().forEach(function (k) { if (k.indexOf(NAMESPACE) === 0) { base.removeItem(k); } });
    },
    get length() {
      return base.keys().filter(function (k) { return k.indexOf(NAMESPACE) === 0; }).length;
    }
  };
  // Scrub what an older page (or another tool on this origin) may have left behind.
  base.keys().forEach(function (k) {
    if (k.indexOf(NAMESPACE) === 0) {
      var v = base.getItem(k);
      if (v !== null) { storage.setItem(k, v); }
    }
  });

  // Share links: a link's query and variables open in a tab, and the address
  // bar follows the tab being edited (never its headers), so it can be copied and shared.
  var shared = new URLSearchParams(window.location.search);
  function sharedValue(name) {
    var value = shared.get(name);
    return value === null || value === "" ? undefined : value;
  }
  var lastLink = null;
  function followTab(tabState) {
    var tab = tabState.tabs[tabState.activeTabIndex];
    if (!tab) { return; }
    var params = new URLSearchParams();
    if (tab.query && tab.query !== config.defaultQuery) { params.set("query", tab.query); }
    if (tab.variables && tab.variables.trim()) { params.set("variables", tab.variables); }
    var search = params.toString();
    var link = window.location.pathname + (search ? "?" + search : "") + window.location.hash;
    if (link !== lastLink) {
      lastLink = link;
      window.history.replaceState(null, "", link);
    }
  }

  var fetcher = GraphiQL.createFetcher({ url: config.endpoint });
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: config.defaultQuery,
      query: sharedValue("query"),
      variables: sharedValue("variables"),
      onTabChange: followTab,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      showPersistHeadersSettings: false,
      inputValueDeprecation: true,
      storage: storage
    })
  );
})();
"""

PAGE_CSS = """\
html, body { height: 100%; margin: 0; }
#graphiql { height: 100vh; }
.graphiql-loading { font: 16px system-ui, sans-serif; padding: 2rem; color: #555; }
"""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class Asset:
    """One file served under `/graphiql/…`, read on first request and kept in memory."""

    def __init__(self, media_type: str, source: Path | bytes) -> None:
        self.media_type = media_type
        self._source = source
        self._body: bytes | None = None
        self._gzipped: bytes | None = None
        self._etag = ""

    def body(self) -> bytes:
        if self._body is None:
            source = self._source
            self._body = source.read_bytes() if isinstance(source, Path) else source
            self._etag = f'"{_digest(self._body)}"'
        return self._body

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body(), compresslevel=6, mtime=0)
        return self._gzipped

    @property
    def etag(self) -> str:
        self.body()
        return self._etag


def _installed_version(node_modules: Path, package: str) -> str | None:
    try:
        manifest = json.loads((node_modules / package / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


class GraphiQL:
    """The page, its assets and the decision between self-hosting and the CDN."""

    def __init__(self, node_modules: Path = NODE_MODULES) -> None:
        self.assets: dict[str, Asset] = {}
        self.scripts: list[tuple[str, str | None]] = []  # (src, integrity)
        self.styles: list[tuple[str, str | None]] = []
        self.mode: Literal["self-hosted", "cdn"]
        self.reason = ""
        versions = {pkg: _installed_version(node_modules, pkg) for pkg in PINNED}
        missing = [
            f"{v.package}/{v.path}"
            for v in VENDOR
            if versions[v.package] is None or not (node_modules / v.package / v.path).is_file()
        ]
        if missing:
            self.mode = "cdn"
            self.reason = (
                f"{node_modules} does not exist"
                if not node_modules.is_dir()
                else f"missing from {node_modules}: {', '.join(missing)}"
            )
            for vendor in VENDOR:
                url = f"{CDN}/{vendor.package}@{PINNED[vendor.package]}/{vendor.path}"
                self._link(vendor.media_type, url, vendor.integrity)
        else:
            self.mode = "self-hosted"
            stale = [
                f"{pkg} {versions[pkg]} (package.json pins {pinned})"
                for pkg, pinned in PINNED.items()
                if versions[pkg] != pinned
            ]
            if stale:
                self.reason = "node_modules is out of date, run `npm ci`: " + "; ".join(stale)
            for vendor in VENDOR:
                name = f"{vendor.package}@{versions[vendor.package]}/{vendor.path}"
                self.assets[name] = Asset(
                    vendor.media_type, node_modules / vendor.package / vendor.path
                )
                self._link(vendor.media_type, f"{PREFIX}/{name}", None)
            source_map = node_modules / SOURCE_MAP.package / SOURCE_MAP.path
            if source_map.is_file():
                name = f"graphiql@{versions['graphiql']}/{SOURCE_MAP_NAME}"
                self.assets[name] = Asset(SOURCE_MAP.media_type, source_map)
        for media_type, text, stem in ((CSS, PAGE_CSS, "page"), (JS, BOOT_JS, "boot")):
            data = text.encode()
            extension = "css" if media_type == CSS else "js"
            name = f"{stem}.{_digest(data)}.{extension}"
            self.assets[name] = Asset(media_type, data)
            self._link(media_type, f"{PREFIX}/{name}", None)

    def _link(self, media_type: str, url: str, integrity: str | None) -> None:
        (self.styles if media_type == CSS else self.scripts).append((url, integrity))

    def log_mode(self) -> None:
        """Says at start where GraphiQL's scripts come from."""
        if self.mode == "cdn":
            log.warning(
                "GraphiQL at GET /graphql loads its scripts and styles from %s (%s); it needs "
                "internet access and breaks offline. Install Node.js/npm and run `npm ci` "
                "(`make run` does when npm exists) to serve them from this service.",
                CDN,
                self.reason,
            )
            return
        versions = ", ".join(f"{pkg} {version}" for pkg, version in PINNED.items())
        log.info("GraphiQL at GET /graphql: assets served by this service (%s)", versions)
        if self.reason:
            log.warning("GraphiQL: %s", self.reason)

    @property
    def content_security_policy(self) -> str:
        sources = "'self'" + (f" {CDN}" if self.mode == "cdn" else "")
        return "; ".join(
            [
                "default-src 'none'",
                f"script-src {sources}",
                f"style-src {sources} '{SCROLL_LOCK_STYLE}'",
                "img-src 'self' data:",
                "font-src 'self' data:",
                "connect-src 'self'",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            ]
        )

    def routes(self) -> list[BaseRoute]:
        return [Route(PREFIX + "/{name:path}", self.asset, methods=["GET"])]

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app` (the GraphQL endpoint), but a browser's plain `GET` gets this page."""
        return _PageOr(self, app)

    def render(self, request: Request) -> Response:
        root_path = str(request.scope.get("root_path", "")).rstrip("/")  # behind a proxy prefix

        def tag(src: str, integrity: str | None, template: str) -> str:
            src = root_path + src if src.startswith("/") else src
            extra = (
                f' integrity="{html.escape(integrity)}" crossorigin="anonymous"'
                if integrity
                else ""
            )
            return template.format(url=html.escape(src), extra=extra)

        styles = "\n".join(
            tag(url, sri, '    <link rel="stylesheet" href="{url}"{extra}>')
            for url, sri in self.styles
        )
        scripts = "\n".join(
            tag(url, sri, '    <script src="{url}"{extra}></script>') for url, sri in self.scripts
        )
        config = json.dumps({"endpoint": request.url.path, "defaultQuery": DEFAULT_QUERY})
        # In a <script> element nothing may close the element or open a comment.
        config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        page = f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="graphiql-assets" content="{self.mode}">
    <title>GraphiQL · Billing API</title>
    <link rel="icon" href="data:,">
{styles}
  </head>
  <body>
    <div id="graphiql"><p class="graphiql-loading">Loading GraphiQL…</p></div>
    <noscript>GraphiQL needs JavaScript.</noscript>
    <script type="application/json" id="graphiql-config">{config}</script>
{scripts}
  </body>
</html>
"""
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": self.content_security_policy,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
            },
        )

    async def asset(self, request: Request) -> Response:
        found = self.assets.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("Not Found", 404, headers={"Cache-Control": "no-store"})
        headers = {
            "Cache-Control": IMMUTABLE,
            "ETag": found.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(found.gzipped(), media_type=found.media_type, headers=headers)
        return Response(found.body(), media_type=found.media_type, headers=headers)


def wants_page(scope: Scope) -> bool:
    """Whether a request gets GraphiQL's page rather than the endpoint's answer.

    A GET without `query` that accepts HTML gets it (as Strawberry decides to render its IDE).
    A GET with `query` is a share link when a browser navigates to it: the Fetch Metadata
    header `Sec-Fetch-Dest: document`, which every current browser sends on navigation and
    no script can set; any other GET with `query` (`fetch`, curl, a GraphQL client, whatever
    its Accept) is a query and gets the answer."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    headers = Headers(scope=scope)
    query_string = scope.get("query_string", b"").decode("latin-1")
    if "query" in parse_qs(query_string, keep_blank_values=True):
        return headers.get("sec-fetch-dest") == "document"
    accept = headers.get("accept", "")
    return "text/html" in accept or "*/*" in accept


class _PageOr:
    def __init__(self, graphiql: GraphiQL, app: ASGIApp) -> None:
        self.graphiql = graphiql
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if wants_page(scope):
            response = self.graphiql.render(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
