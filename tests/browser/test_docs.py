"""/docs in real Chromium: Swagger UI, served by the gateway itself, renders the API document under the
gateway's Content-Security-Policy with no console error and no request leaving the gateway's origin, and
"Try it out" with the API key under "Authorize" reaches the API."""

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Request, async_playwright

from tests.browser.page_driver import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM
from tests.services.gateway.conftest import RunningGateway
from tests.stacks import ARTIFACTS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    NEEDS_CHROMIUM,
]

SUBMIT = '.opblock.opblock-post:has(.opblock-summary-path[data-path="/v1/jobs"])'
ACCOUNT = '.opblock.opblock-get:has(.opblock-summary-path[data-path="/v1/account"])'
VIOLATIONS = (
    "document.addEventListener('securitypolicyviolation', (e) =>"
    " window.__violations = [...(window.__violations || []), e.violatedDirective + ' ' + e.blockedURI]);"
)


async def test_swagger_ui_renders_the_document_from_the_gateway_alone(gateway: RunningGateway) -> None:
    name, key = gateway.account(1000)
    async with gateway.client() as client:
        document = (await client.get("/openapi.json")).json()
    operations = sum(1 for item in document["paths"].values() for method in item if method != "parameters")
    errors: list[str] = []
    failed: list[str] = []
    requested: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requested.append(r.url))
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            await page.add_init_script(VIOLATIONS)
            await page.goto(f"{gateway.url}/docs")
            await page.wait_for_selector(SUBMIT, timeout=30_000)
            assert await page.locator(".opblock").count() == operations
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "gateway-docs.png"))
            await _open_submit_and_read_its_examples(page)
            await _try_the_account_with_the_key(page, key, name)
            violations: list[str] = await page.evaluate("window.__violations || []")
        finally:
            await browser.close()
    assert violations == []
    assert errors == []
    assert failed == []
    origin = urlsplit(gateway.url).netloc
    elsewhere = [
        url for url in requested if urlsplit(url).scheme not in {"data", "blob"} and urlsplit(url).netloc != origin
    ]
    assert elsewhere == [], elsewhere
    assert any(url.endswith("/docs/swagger-ui-bundle.js") for url in requested)


async def _open_submit_and_read_its_examples(page: Page) -> None:
    """Open POST /v1/jobs: its statuses are listed and the queued job's example is shown."""
    await page.click(f"{SUBMIT} .opblock-summary")
    block = page.locator(SUBMIT)
    await block.locator(".responses-table").first.wait_for()
    statuses = await block.locator(".responses-table > tbody > tr.response > td.response-col_status").all_inner_texts()
    assert {"200", "202", "401", "402", "413", "415", "422", "429"} <= {s.split()[0] for s in statuses}, statuses
    assert '"status": "queued"' in await block.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await block.screenshot(path=str(ARTIFACTS / "gateway-docs-submit.png"))


async def _try_the_account_with_the_key(page: Page, key: str, account: str) -> None:
    """Authorize with the API key, then "Try it out" on GET /v1/account: the answer names the account."""
    await page.click(".auth-wrapper .authorize")
    schemes = await page.inner_text(".dialog-ux .modal-ux-content")
    assert "Bearer" in schemes and "i2v_session" in schemes and "token" in schemes, schemes
    await page.fill(".auth-container:has-text('apiKey') input", key)
    await page.click(".auth-container:has-text('apiKey') button.authorize")
    await page.click(".dialog-ux button.close-modal")
    await page.click(f"{ACCOUNT} .opblock-summary")
    await page.click(f"{ACCOUNT} .try-out__btn")
    async with page.expect_request(lambda r: _asks_with_the_key(r, key)):
        await page.click(f"{ACCOUNT} .execute")
    answer = page.locator(f"{ACCOUNT} .live-responses-table .response-col_description pre")
    await answer.first.wait_for()
    assert f'"name": "{account}"' in await answer.first.inner_text()


def _asks_with_the_key(request: Request, key: str) -> bool:
    return request.url.endswith("/v1/account") and request.headers.get("authorization") == f"Bearer {key}"
