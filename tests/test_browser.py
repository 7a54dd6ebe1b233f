"""GraphiQL and the example SPA in a real, headless Chromium driven by Playwright.

The real app (lifespan on: pool, Stripe gateway) is served on a loopback port against a
per-test database and the fake Stripe; the SPA (`app/spa.py`) on a second loopback port, so
the browser really goes cross-origin and CORS is exercised. Playwright never downloads a
browser: it drives the system's Chromium (`CHROMIUM_PATH`, else `chromium` on PATH). Without
one the tests are reported as skipped, with the reason. Screenshots of the key screens go to
`test-artifacts/browser/`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from app.browser.graphiql import GraphiQL
from app.browser.spa import Spa
from app.main import create_app
from app.settings import Settings
from tests.support.loopback import LoopbackServer
from tests.support.stripe import FakeStripe
from tests.support.tokens import make_token

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (dev dependency group)"
)
Browser = playwright_api.Browser
Page = playwright_api.Page
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


def find_chromium() -> tuple[str | None, str]:
    """The browser to drive, or None and why not."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured, ""
        return None, f"CHROMIUM_PATH={configured} is not an executable file"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found, ""
    return None, "no chromium on PATH (Debian: `apt-get install chromium`; or set CHROMIUM_PATH)"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    executable, why = find_chromium()
    if executable is None:
        pytest.skip(f"Chromium not available, browser tests skipped: {why}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with playwright_api.async_playwright() as playwright:
        # `launch` gives every run a fresh, throwaway profile (user-data dir).
        chromium = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Tab:
    page: Any
    requests: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    async def shot(self, name: str, *, full_page: bool = True) -> None:
        path = str(ARTIFACTS / f"{name}.png")
        await self.page.screenshot(path=path, full_page=full_page)


@pytest.fixture
async def tab(browser: Any) -> AsyncIterator[Tab]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, accept_downloads=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    found = Tab(page)
    page.on("request", lambda request: found.requests.append(request.url))
    page.on(
        "console",
        lambda message: (
            found.csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: found.page_errors.append(str(error)))
    try:
        yield found
    finally:
        await context.close()


@pytest.fixture(scope="session")
def spa() -> Iterator[tuple[Spa, str]]:
    """The SPA on its own loopback origin; each test points it at its own API."""
    app = Spa("http://127.0.0.1:9")
    with LoopbackServer(app) as server:
        yield app, server.url


@pytest.fixture
def settings_overrides(stripe_settings: dict[str, Any], spa: tuple[Spa, str]) -> dict[str, Any]:
    # The SPA's origin is APP_URL: CORS allows it and Checkout returns to it.
    return {**stripe_settings, "app_url": spa[1]}


@pytest.fixture
async def api(settings: Settings, spa: tuple[Spa, str]) -> AsyncIterator[str]:
    server = LoopbackServer(create_app(settings), lifespan="on")
    await asyncio.to_thread(server.start)
    spa[0].api_url = server.url
    try:
        yield server.url
    finally:
        await asyncio.to_thread(server.stop)


async def set_editor(page: Any, container: str, text: str) -> None:
    """Sets a GraphiQL (CodeMirror) editor's text, as typing would."""
    await page.locator(f"{container} .CodeMirror").first.wait_for()
    await page.evaluate(
        "([sel, text]) => document.querySelector(sel + ' .CodeMirror').CodeMirror.setValue(text)",
        [container, text],
    )


async def response_json(page: Any, containing: str) -> Any:
    """The response pane's JSON once it contains `containing`."""
    script = """(needle) => {
        const cm = document.querySelector('.graphiql-response .CodeMirror');
        return cm && cm.CodeMirror.getValue().includes(needle);
    }"""
    await page.wait_for_function(script, arg=containing)
    text = await page.evaluate(
        "() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
    )
    return json.loads(text)


async def test_graphiql_runs_from_this_service_alone(browser: Any, api: str, tab: Tab) -> None:
    if GraphiQL().mode != "self-hosted":
        pytest.skip("node_modules lacks GraphiQL, so it is served from the CDN: run `npm ci`")
    page = tab.page
    response = await page.goto(f"{api}/graphql")
    assert response is not None
    assert "script-src 'self';" in response.headers["content-security-policy"]
    await set_editor(page, ".graphiql-query-editor", "{ plans { id name } }")
    await page.click(".graphiql-execute-button")
    body = await response_json(page, '"Pro"')
    assert body == {
        "data": {"plans": [{"id": "free", "name": "Free"}, {"id": "PRO", "name": "Pro"}]}
    }
    await tab.shot("graphiql-plans")

    # A token in the Headers pane reaches the API, and neither the URL nor storage.
    token = make_token("graphiql-user")
    await page.get_by_text("Headers", exact=True).click()
    await set_editor(
        page,
        ".graphiql-editor-tool .graphiql-editor:not(.hidden)",
        json.dumps({"Authorization": f"Bearer {token}"}),
    )
    await set_editor(page, ".graphiql-query-editor", "query Me { me { id email } }")
    await page.click(".graphiql-execute-button")
    body = await response_json(page, "graphiql-user@example.com")
    assert body["data"]["me"]["id"] == "graphiql-user"
    stored = await page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert "graphiql:queries" in stored  # history was saved, without the headers
    assert token not in stored
    assert all(token not in url for url in tab.requests)
    assert token not in page.url

    # A dialog locks scrolling with the one inline style the CSP allows by hash.
    await page.click('[aria-label="Open settings dialog"]')
    await expect(page.get_by_role("dialog")).to_be_visible()
    await tab.shot("graphiql-settings")
    await page.keyboard.press("Escape")

    leaving = [url for url in tab.requests if not url.startswith((f"{api}/", "data:"))]
    assert leaving == []
    assert any("/graphiql/graphiql@" in url for url in tab.requests)
    assert tab.csp_violations == []
    assert tab.page_errors == []


async def test_a_graphiql_share_link_opens_its_query_and_the_address_follows_edits(
    browser: Any, api: str, tab: Tab
) -> None:
    if GraphiQL().mode != "self-hosted":
        pytest.skip("node_modules lacks GraphiQL, so it is served from the CDN: run `npm ci`")
    page = tab.page
    query = "query Plans($named: Boolean!) { plans { id name @include(if: $named) } }"
    variables = '{"named": true}'
    link = f"{api}/graphql?" + urlencode({"query": query, "variables": variables})
    response = await page.goto(link)
    assert response is not None
    assert response.headers["content-type"].startswith("text/html")
    await expect(page.locator(".graphiql-query-editor .CodeMirror")).to_be_visible()
    shown = await page.evaluate(
        "() => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()"
    )
    assert shown == query
    await page.get_by_text("Variables", exact=True).click()
    shown_variables = await page.evaluate(
        "() => document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) "
        ".CodeMirror').CodeMirror.getValue()"
    )
    assert shown_variables == variables
    assert all("/graphql?" not in url or url == link for url in tab.requests)  # nothing ran
    await page.click(".graphiql-execute-button")
    body = await response_json(page, '"Pro"')
    assert body["data"]["plans"][1] == {"id": "PRO", "name": "Pro"}
    await tab.shot("graphiql-share-link")

    # Edited, the address is the new link (no headers in it); opened again, it shows the edit.
    edited = "{ plans { id interval } }"
    await set_editor(page, ".graphiql-query-editor", edited)
    await page.wait_for_function(
        "(q) => new URLSearchParams(location.search).get('query') === q", arg=edited
    )
    again = await browser.new_page()
    try:
        await again.goto(page.url)
        await expect(again.locator(".graphiql-query-editor .CodeMirror")).to_be_visible()
        assert (
            await again.evaluate(
                "() => document.querySelector('.graphiql-query-editor .CodeMirror')"
                ".CodeMirror.getValue()"
            )
            == edited
        )
    finally:
        await again.close()
    assert tab.csp_violations == []
    assert tab.page_errors == []


async def test_the_spa_signs_in_edits_subscribes_and_deletes(
    browser: Any, api: str, spa: tuple[Spa, str], fake_stripe: FakeStripe, tab: Tab
) -> None:
    page = tab.page
    spa_url = spa[1]
    await page.goto(f"{spa_url}/")
    await expect(page.locator("#signin")).to_be_visible()
    token = make_token("spa-user", email="ada@example.com", given_name="Ada")
    await page.fill("#token", token)
    await page.click("#signin-button")
    await expect(page.locator("#account")).to_be_visible()
    await expect(page.locator("#profile-email")).to_have_text("ada@example.com")
    await expect(page.locator("#plan-name")).to_have_text("Free")
    await expect(page.locator("#first-name")).to_have_value("Ada")
    assert token not in page.url

    # Profile: a bad phone is explained; a good edit is saved and survives a reload.
    await page.fill("#phone", "not a phone")
    await page.click("#save-profile")
    await expect(page.locator(".message.error").first).to_contain_text("BAD_USER_INPUT")
    await page.fill("#last-name", "Lovelace")
    await page.fill("#phone", "+14155550100")
    await page.click("#save-profile")
    await expect(page.locator(".message.success").first).to_contain_text("Profile saved")
    await page.reload()  # the token is in this tab's sessionStorage
    await expect(page.locator("#last-name")).to_have_value("Lovelace")
    await expect(page.locator("#phone")).to_have_value("+14155550100")
    await tab.shot("spa-profile")

    # The export is downloaded as a file, with the bearer header.
    async with page.expect_download() as download_info:
        await page.click("#export")
    download = await download_info.value
    assert download.suggested_filename == "customer-data-spa-user.json"
    saved = ARTIFACTS / "spa-export.json"
    await download.save_as(str(saved))
    assert json.loads(saved.read_text())["userProfile"]["lastName"] == "Lovelace"

    # Checkout: off to (fake) Stripe, pay, back at APP_URL/billing, where the SPA syncs.
    await page.click("#checkout")
    await page.wait_for_url(f"{fake_stripe.url}/c/pay/**")
    assert await page.title() == "Fake Stripe Checkout"
    await tab.shot("stripe-checkout")
    await page.click("#pay")
    await page.wait_for_url(f"{spa_url}/billing**")
    await expect(page.locator("#subscription-status")).to_have_text("ACTIVE")
    await expect(page.locator("#plan-name")).to_have_text("Pro")
    await expect(page.locator(".message.success").first).to_contain_text("Your plan is now Pro")
    assert page.url == f"{spa_url}/billing"  # the session_id is dropped from the address
    await tab.shot("spa-after-checkout")

    # The Billing Portal: cancel at the period's end there, and back: "ends on …".
    await page.click("#portal")
    await page.wait_for_url(f"{fake_stripe.url}/p/session/**")
    assert await page.title() == "Fake Stripe Billing Portal"
    [subscription] = fake_stripe.subscriptions.values()
    canceled = fake_stripe.portal_cancel(subscription["id"])
    ends = await page.evaluate(
        "(s) => new Date(s * 1000).toLocaleDateString()", canceled["cancel_at"]
    )
    await page.click("#return")
    await page.wait_for_url(f"{spa_url}/billing")
    await expect(page.locator(".message.info").first).to_contain_text("billing portal")
    await expect(page.locator("#plan-detail")).to_contain_text(f"ends on {ends}")
    await expect(page.locator("#subscriptions li")).to_have_count(1)
    await expect(page.locator("#subscriptions li").first).to_contain_text(f"Pro · ends on {ends}")
    await expect(page.locator("#checkout")).to_be_hidden()  # paid until then
    await tab.shot("spa-cancellation-scheduled")

    # Delete, after a typed confirmation.
    await page.click("#delete")
    await expect(page.locator("#delete-confirm-button")).to_be_disabled()
    await page.fill("#delete-confirm", "DELETE")
    await tab.shot("spa-delete-confirm", full_page=False)
    await page.click("#delete-confirm-button")
    await expect(page.locator(".message.success").first).to_contain_text("account was deleted")
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0

    assert tab.csp_violations == []
    assert tab.page_errors == []


async def test_the_spa_explains_a_bad_token_and_every_error_code(
    browser: Any, api: str, spa: tuple[Spa, str], tab: Tab
) -> None:
    page = tab.page
    await page.goto(f"{spa[1]}/billing")
    await page.fill("#token", make_token("someone", secret="not-the-servers-secret-0123456789"))
    await page.click("#signin-button")
    error = page.locator(".message.error").first
    await expect(error).to_contain_text("UNAUTHENTICATED")
    await expect(error).to_contain_text("Paste a fresh token")
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0
    await tab.shot("spa-unauthenticated")

    codes = [
        "UNAUTHENTICATED",
        "BAD_USER_INPUT",
        "EMAIL_NOT_VERIFIED",
        "NOT_FOUND",
        "ALREADY_SUBSCRIBED",
        "STRIPE_NOT_CONFIGURED",
        "PAYMENT_PROVIDER_ERROR",
        "RATE_LIMITED",
        "INTERNAL_SERVER_ERROR",
    ]
    texts = await page.evaluate(
        """(codes) => codes.map((code) =>
            describe(new ApiError(code, "raw server message", { requestId: "req-1" })).text)""",
        codes,
    )
    assert len(set(texts)) == len(codes)
    for code, text in zip(codes, texts, strict=True):
        assert len(text) > 30, (code, text)
        assert code not in text, (code, text)
    assert "req-1" in texts[codes.index("INTERNAL_SERVER_ERROR")]
    assert tab.csp_violations == []
