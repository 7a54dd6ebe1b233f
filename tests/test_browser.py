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

import httpx
import pytest

from app.browser.graphiql import GraphiQL
from app.browser.spa import Spa
from app.main import create_app
from app.settings import Settings
from tests import helpers
from tests.helpers import gql
from tests.servers import eventually
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


# --- The SPA's billing page -------------------------------------------------------------------

WEBHOOK_SECRET = "whsec_spa_billing"
# What the page's amounts and dates look like in this browser (its locale decides).
FORMAT_AMOUNT = (
    "([amount, currency]) => new Intl.NumberFormat(undefined, "
    "{ style: 'currency', currency }).format(amount)"
)
FORMAT_DAY = "(seconds) => new Date(seconds * 1000).toLocaleDateString()"


async def deliver(api: str, event: dict[str, Any]) -> None:
    """Posts a Stripe event to the API's webhook as Stripe would (signed)."""
    async with httpx.AsyncClient(base_url=api) as client:
        await helpers.deliver(client, event, WEBHOOK_SECRET)


async def processed(api: str, bearer: str, query: str, done: Any) -> None:
    """Waits until the API's worker has processed what was delivered: `done(data)` holds."""
    async with httpx.AsyncClient(base_url=api) as client:

        async def check() -> bool:
            return bool(done((await gql(client, query, token=bearer))["data"]))

        await eventually(check, f"processed: {query}", timeout=10)


class TestTheSpaBillingPage:
    @pytest.fixture
    def team_price(self, fake_stripe: FakeStripe) -> str:
        price_id: str = fake_stripe.add_price(
            unit_amount=4900, currency="usd", interval="month", product_name="Team"
        )["id"]
        return price_id

    @pytest.fixture
    def settings_overrides(
        self,
        stripe_settings: dict[str, Any],
        spa: tuple[Spa, str],
        tmp_path: Path,
        team_price: str,
    ) -> dict[str, Any]:
        plans = tmp_path / "plans.toml"
        plans.write_text(
            f"""
[[plans]]
id = "free"
name = "Free"
features = ["basic"]

[[plans]]
id = "PRO"
name = "Pro"
amount = 1500
currency = "usd"
interval = "month"
features = ["reports", "api"]

[[plans]]
id = "TEAM"
name = "Team"
price_id = "{team_price}"
amount = 4900
currency = "usd"
interval = "month"
features = ["reports", "api", "seats"]
""",
            encoding="utf-8",
        )
        # The worker runs, so that delivered webhooks (invoices) are processed.
        return {
            **stripe_settings,
            "app_url": spa[1],
            "plans_file": plans,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "run_worker": True,
        }

    @staticmethod
    async def sign_in(page: Any, spa_url: str, bearer: str) -> None:
        await page.goto(f"{spa_url}/")
        await page.fill("#token", bearer)
        await page.click("#signin-button")
        await expect(page.locator("#plan-name")).to_have_text("Free")

    @staticmethod
    async def subscribe(page: Any, spa_url: str, fake_stripe: FakeStripe) -> dict[str, Any]:
        """Pays for Pro in the fake Checkout; back on the page, which synced the subscription
        and its first invoice (no webhook needed). Returns the subscription as the fake
        holds it."""
        await page.click("#checkout")
        await page.wait_for_url(f"{fake_stripe.url}/c/pay/**")
        await page.click("#pay")
        await page.wait_for_url(f"{spa_url}/billing**")
        await expect(page.locator("#plan-name")).to_have_text("Pro")
        [subscription] = fake_stripe.subscriptions.values()
        return subscription

    async def test_the_spa_billing_page_manages_the_subscription(
        self,
        browser: Any,
        api: str,
        spa: tuple[Spa, str],
        fake_stripe: FakeStripe,
        tab: Tab,
        pro_price: str,
        team_price: str,
    ) -> None:
        page = tab.page
        features = page.locator("#entitlements li")
        bearer = make_token("billing-user", email="grace@example.com")
        await self.sign_in(page, spa[1], bearer)
        await expect(features).to_have_text(["basic"])
        await expect(page.locator("#invoices-empty")).to_have_text("No invoices yet.")
        await expect(page.locator("#cancel-subscription")).to_be_hidden()
        await expect(page.locator("#plan-options")).to_be_hidden()

        subscription = await self.subscribe(page, spa[1], fake_stripe)
        sub_id = subscription["id"]
        first = fake_stripe.invoices[subscription["latest_invoice"]]
        await expect(page.locator("#plan-name")).to_have_text("Pro")
        await expect(page.locator("#subscription-status")).to_have_text("ACTIVE")
        await expect(features).to_have_text(["api", "basic", "reports"])

        # The invoices: the first one, paid, with Stripe's page and PDF in a new tab.
        row = page.locator("#invoices tbody tr")
        await expect(row).to_have_count(1)
        paid = await page.evaluate(FORMAT_AMOUNT, [15, "USD"])
        created = await page.evaluate(FORMAT_DAY, first["created"])
        await expect(row.locator("td")).to_have_text(
            [first["number"], created, paid, "PAID", "View · PDF"]
        )
        view = row.get_by_role("link", name="View")
        pdf = row.get_by_role("link", name="PDF")
        assert await view.get_attribute("href") == first["hosted_invoice_url"]
        assert await pdf.get_attribute("href") == first["invoice_pdf"]
        for link in (view, pdf):
            assert await link.get_attribute("target") == "_blank"
            assert await link.get_attribute("rel") == "noopener"
        async with page.context.expect_page() as opened:
            await view.click()
        invoice_page = await opened.value
        await expect(invoice_page.locator("#status")).to_have_text("Status: paid")
        await invoice_page.close()
        document = await page.request.get(first["invoice_pdf"])
        assert document.ok
        assert document.headers["content-type"] == "application/pdf"
        assert (await document.body()).startswith(b"%PDF")
        await tab.shot("spa-billing")

        # Cancel at the period's end, after a step in the page; then resume.
        period_end = subscription["items"]["data"][0]["current_period_end"]
        ends = await page.evaluate(FORMAT_DAY, period_end)
        await expect(page.locator("#resume-subscription")).to_be_hidden()
        await page.click("#cancel-subscription")
        await expect(page.locator("#cancel-confirm")).to_be_visible()
        await expect(page.locator("#cancel-confirm-detail")).to_contain_text(
            f"It stays active until {ends}, then ends."
        )
        await page.click("#cancel-back")  # thought better of it: nothing happened
        await expect(page.locator("#cancel-confirm")).to_be_hidden()
        assert fake_stripe.requests_to("POST", f"/v1/subscriptions/{sub_id}") == []
        await page.click("#cancel-subscription")
        await tab.shot("spa-billing-cancel-confirm", full_page=False)
        await page.click("#cancel-confirm-button")
        await expect(page.locator("#plan-detail")).to_contain_text(f"ends on {ends}")
        await expect(page.locator(".message.success").first).to_contain_text(
            f"Your Pro subscription ends on {ends}."
        )
        await expect(page.locator("#resume-subscription")).to_be_visible()
        await expect(page.locator("#cancel-subscription")).to_be_hidden()
        assert fake_stripe.subscriptions[sub_id]["cancel_at_period_end"] is True
        await tab.shot("spa-billing-cancel-scheduled")
        await page.click("#resume-subscription")
        await expect(page.locator("#plan-detail")).to_contain_text(f"renews on {ends}")
        await expect(page.locator("#cancel-subscription")).to_be_visible()
        await expect(page.locator("#resume-subscription")).to_be_hidden()
        assert fake_stripe.subscriptions[sub_id]["cancel_at_period_end"] is False

        # Switch to Team: the preview first, and nothing changes before Confirm.
        switch = page.get_by_role("button", name="Switch to Team")
        await expect(page.locator("#plan-choices li")).to_have_count(1)
        updates = fake_stripe.requests_to("POST", f"/v1/subscriptions/{sub_id}")
        assert len(updates) == 2  # the cancellation and the resumption
        preview = await self.preview(page, switch)
        assert (preview["planId"], preview["currency"]) == ("TEAM", "usd")
        assert 3300 < preview["amountDue"] <= 3400  # most of a month of the difference
        charged = await page.evaluate(FORMAT_AMOUNT, [preview["amountDue"] / 100, "USD"])
        await expect(page.locator("#plan-change-amount")).to_have_text(
            f"You will be charged {charged} now"
        )
        monthly = await page.evaluate(FORMAT_AMOUNT, [49, "USD"])
        await expect(page.locator("#plan-change-detail")).to_contain_text(f"then {monthly} / month")
        await expect(page.locator("#plan-options")).to_be_hidden()
        await expect(page.locator("#plan-name")).to_have_text("Pro")
        assert fake_stripe.requests_to("POST", f"/v1/subscriptions/{sub_id}") == updates
        await tab.shot("spa-billing-preview")
        await page.click("#plan-change-back")
        await expect(page.locator("#plan-change")).to_be_hidden()

        # A declined card: the change is refused, said so, and the plan stays.
        await self.preview(page, switch)
        fake_stripe.decline_next_payment()
        await page.click("#plan-change-confirm")
        error = page.locator(".message.error").first
        await expect(error).to_contain_text("PAYMENT_PROVIDER_ERROR")
        await expect(error).to_contain_text(
            "Your card was declined. Update your payment method and try again."
        )
        await expect(page.locator("#plan-change")).to_be_hidden()
        await expect(page.locator("#plan-name")).to_have_text("Pro")
        await expect(features).to_have_text(["api", "basic", "reports"])
        held = fake_stripe.subscriptions[sub_id]
        assert (held["status"], held["items"]["data"][0]["price"]["id"]) == ("active", pro_price)
        await tab.shot("spa-billing-declined")

        # Confirmed: charged exactly the preview, the new plan and its features at once.
        invoices_before = set(fake_stripe.invoices)
        preview = await self.preview(page, switch)
        await page.click("#plan-change-confirm")
        await expect(page.locator("#plan-name")).to_have_text("Team")
        await expect(features).to_have_text(["api", "basic", "reports", "seats"])
        charged = await page.evaluate(FORMAT_AMOUNT, [preview["amountDue"] / 100, "USD"])
        await expect(page.locator(".message.success").first).to_contain_text(
            f"You are now on the Team plan: {charged} was charged."
        )
        await expect(page.get_by_role("button", name="Switch to Pro")).to_be_visible()
        held = fake_stripe.subscriptions[sub_id]
        assert held["items"]["data"][0]["price"]["id"] == team_price
        [proration] = [fake_stripe.invoices[i] for i in set(fake_stripe.invoices) - invoices_before]
        assert (proration["status"], proration["amount_paid"]) == ("paid", preview["amountDue"])
        # Its invoice is listed at once, newest first.
        await expect(row).to_have_count(2)
        await expect(row.first.locator("td").first).to_have_text(proration["number"])
        await tab.shot("spa-billing-after-change")

        assert tab.csp_violations == []
        assert tab.page_errors == []

    @staticmethod
    async def preview(page: Any, switch: Any) -> dict[str, Any]:
        """Clicks a "Switch to …" button; the preview the API answered, once it is shown."""
        async with page.expect_response(
            lambda r: (
                r.url.endswith("/graphql") and "PreviewPlanChange" in (r.request.post_data or "")
            )
        ) as answered:
            await switch.click()
        body = await (await answered.value).json()
        await expect(page.locator("#plan-change")).to_be_visible()
        preview: dict[str, Any] = body["data"]["previewPlanChange"]
        return preview

    async def test_a_failed_renewal_links_to_the_invoice_to_pay(
        self, browser: Any, api: str, spa: tuple[Spa, str], fake_stripe: FakeStripe, tab: Tab
    ) -> None:
        page = tab.page
        bearer = make_token("late-payer", email="late@example.com")
        await self.sign_in(page, spa[1], bearer)
        subscription = await self.subscribe(page, spa[1], fake_stripe)
        renewal = fake_stripe.fail_payment(subscription["id"])
        await deliver(api, fake_stripe.event("invoice.payment_failed", renewal))
        await processed(
            api,
            bearer,
            "{ me { notifications { kind } } }",
            lambda data: data["me"]["notifications"],
        )
        await page.reload()
        notice = page.locator("#notifications li").first
        await expect(notice).to_contain_text("payment_failed")
        pay = notice.get_by_role("link", name="Pay the invoice")
        assert await pay.get_attribute("href") == renewal["hosted_invoice_url"]
        assert await pay.get_attribute("rel") == "noopener"
        rows = page.locator("#invoices tbody tr")
        await expect(rows).to_have_count(2)  # newest first: the open renewal, then the paid one
        await expect(rows.nth(0).locator("td").nth(0)).to_have_text(renewal["number"])
        await expect(rows.nth(0).locator("td").nth(3)).to_have_text("OPEN")
        await expect(rows.nth(1).locator("td").nth(3)).to_have_text("PAID")
        await tab.shot("spa-billing-payment-failed")
        assert tab.csp_violations == []
        assert tab.page_errors == []

    async def test_amounts_are_shown_in_each_currencys_own_unit(
        self, browser: Any, api: str, spa: tuple[Spa, str], tab: Tab
    ) -> None:
        page = tab.page
        await page.goto(f"{spa[1]}/")
        await expect(page.locator("#signin")).to_be_visible()
        cases = [(1500, "usd", 15), (1500, "jpy", 1500), (1500, "krw", 1500), (1500, "kwd", 1.5)]
        for amount, currency, units in cases:
            shown = await page.evaluate("([a, c]) => formatAmount(a, c)", [amount, currency])
            assert shown == await page.evaluate(FORMAT_AMOUNT, [units, currency.upper()])
