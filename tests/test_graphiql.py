"""GraphiQL's page and assets over HTTP (the browser tests drive it for real)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.browser.graphiql import CDN, IMMUTABLE, NODE_MODULES, PINNED, VENDOR, GraphiQL

ROOT = Path(__file__).resolve().parents[1]
HTML = {"Accept": "text/html"}
SELF_HOSTED = GraphiQL().mode == "self-hosted"
needs_node_modules = pytest.mark.skipif(
    not SELF_HOSTED, reason="node_modules lacks GraphiQL (no npm here?): run `npm ci`"
)


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page)


def test_package_json_pins_exact_versions_the_module_knows() -> None:
    manifest = json.loads((ROOT / "package.json").read_text())
    assert manifest["dependencies"] == PINNED
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for package, version in PINNED.items():
        assert lock["packages"][f"node_modules/{package}"]["version"] == version


@needs_node_modules
def test_the_cdn_integrity_hashes_are_those_of_the_installed_files() -> None:
    for vendor in VENDOR:
        data = (NODE_MODULES / vendor.package / vendor.path).read_bytes()
        digest = base64.b64encode(hashlib.sha384(data).digest()).decode()
        assert vendor.integrity == f"sha384-{digest}", f"update the SRI of {vendor.path}"


@needs_node_modules
async def test_the_page_loads_only_this_services_assets(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "style-src 'self' 'sha256-" in csp
    assert "default-src 'none'" in csp
    assert "unpkg" not in response.text
    assert "https://" not in csp
    assert response.headers["cache-control"] == "no-store"
    urls = asset_urls(response.text)
    assert "/graphiql/graphiql@4.1.2/graphiql.min.js" in urls
    assert "/graphiql/react@18.3.1/umd/react.production.min.js" in urls
    assert "<script>" not in response.text  # no inline script; only the JSON config block
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == IMMUTABLE
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.headers["content-type"].startswith(
            "text/javascript" if url.endswith(".js") else "text/css"
        )


@needs_node_modules
async def test_assets_are_compressed_and_revalidate(client: httpx.AsyncClient) -> None:
    url = "/graphiql/graphiql@4.1.2/graphiql.min.js"
    raw = await client.get(url, headers={"Accept-Encoding": "identity"})
    zipped = await client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(raw.content) / 2
    assert zipped.content == raw.content  # httpx decoded it
    again = await client.get(url, headers={"If-None-Match": raw.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/react@18.3.1/package.json",
        "/graphiql/react@0.0.1/umd/react.production.min.js",
        "/graphiql/graphiql@4.1.2/../../app/main.py",
        "/graphiql/%2e%2e/%2e%2e/pyproject.toml",
        "/graphiql/boot.js",
    ],
)
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404


# What Chromium sends when the address bar opens a link, and when a script fetches one.
NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Mode": "navigate",
}
FETCH = {"Accept": "*/*", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"}


@pytest.mark.parametrize(
    "headers",
    [HTML, {"Accept": "*/*"}, {"Accept": "application/json"}, FETCH, {}],
    ids=["html", "curl", "json", "fetch", "none"],
)
async def test_queries_over_get_still_answer_json(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/graphql", params={"query": "{ plans { id } }"}, headers=headers)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["data"]["plans"][0]["id"] == "free"


async def test_a_browser_opening_a_query_link_gets_graphiql(client: httpx.AsyncClient) -> None:
    """A share link: the page, which loads the query from its own address (not run)."""
    query = "query Plans { plans { id } }"
    response = await client.get(
        "/graphql", params={"query": query, "variables": "{}"}, headers=NAVIGATION
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="graphiql-config"' in response.text
    assert "Content-Security-Policy" in response.headers
    # A mutation in a link is only shown too: nothing runs until the user clicks.
    mutation = "mutation { deleteAccount { success } }"
    shown = await client.get("/graphql", params={"query": mutation}, headers=NAVIGATION)
    assert shown.status_code == 200
    assert shown.headers["content-type"].startswith("text/html")


async def test_the_page_says_how_to_authenticate(client: httpx.AsyncClient) -> None:
    page = (await client.get("/graphql", headers=HTML)).text
    found = re.search(r'id="graphiql-config">(.*?)</script>', page, re.S)
    assert found is not None
    config = json.loads(found[1])
    assert config["endpoint"] == "/graphql"
    assert "{ plans { id name } }" in " ".join(config["defaultQuery"].split())
    assert '{"Authorization": "Bearer <token>"}' in config["defaultQuery"]
    assert "# query Me {" in config["defaultQuery"]


class TestProduction:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"app_env": "production"}

    async def test_no_page_and_no_assets(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/graphql", headers=HTML)).status_code == 404
        link = await client.get(
            "/graphql", params={"query": "{ plans { id } }"}, headers=NAVIGATION
        )
        assert link.headers["content-type"].startswith("application/json")  # an answer, no page
        asset = await client.get("/graphiql/graphiql@4.1.2/graphiql.min.js")
        assert asset.status_code == 404


class TestWithoutNodeModules:
    """Where the set-up could not install the packages: the same pinned files from a CDN."""

    @pytest.fixture
    async def cdn_client(self, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
        ide = GraphiQL(tmp_path / "node_modules")

        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            await PlainTextResponse("graphql endpoint")(scope, receive, send)

        app = Starlette(
            routes=[Route("/graphql", ide.wrap(endpoint), methods=["GET", "POST"]), *ide.routes()]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client

    def test_it_says_so_at_start(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        ide = GraphiQL(tmp_path / "node_modules")
        assert ide.mode == "cdn"
        with caplog.at_level(logging.INFO, logger="app.browser.graphiql"):
            ide.log_mode()
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        assert "unpkg.com" in record.getMessage()
        assert "npm ci" in record.getMessage()

    async def test_the_page_loads_pinned_files_with_integrity(
        self, cdn_client: httpx.AsyncClient
    ) -> None:
        response = await cdn_client.get("/graphql", headers=HTML)
        csp = response.headers["content-security-policy"]
        assert f"script-src 'self' {CDN};" in csp
        for vendor in VENDOR:
            url = f"{CDN}/{vendor.package}@{PINNED[vendor.package]}/{vendor.path}"
            assert (
                f'"{url}" integrity="{vendor.integrity}" crossorigin="anonymous"' in response.text
            )
        # The page's own boot script and style still come from the service.
        own = [url for url in asset_urls(response.text) if url.startswith("/graphiql/")]
        assert len(own) == 2
        for url in own:
            assert (await cdn_client.get(url)).status_code == 200

    async def test_other_requests_reach_the_endpoint(self, cdn_client: httpx.AsyncClient) -> None:
        assert (await cdn_client.post("/graphql")).text == "graphql endpoint"
        assert (await cdn_client.get("/graphql?query={x}", headers=HTML)).text == (
            "graphql endpoint"
        )
        assert (await cdn_client.get("/graphql", headers={"Accept": "application/json"})).text == (
            "graphql endpoint"
        )
