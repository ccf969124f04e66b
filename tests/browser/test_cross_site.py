"""The browser protections in real Chromium: a page on another port of the same host (same site, so the
SameSite=Strict cookie goes along) can neither submit a job with the visitor's session nor frame the
gateway's page; the gateway's own pages run under their Content-Security-Policy without a violation."""

import http.server
from collections.abc import Iterator

import pytest
from playwright.async_api import async_playwright

from infra.ports import LOOPBACK, free_port
from tests.browser.page_driver import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM
from tests.http_serving import serving
from tests.services.gateway.conftest import RunningGateway

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    NEEDS_CHROMIUM,
]

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAAAwCAIAAAAuKetIAAAAU0lEQVR4nO3PQQ3AIADAQEADYpGIrIngcVnSU9DOfe74s6UDXjWg"
    "NaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaA1oDWgNaB9/L4BtOZGSnMAAAAASUVORK5CYII="
)
"""A 64x48 PNG, base64."""

SUBMIT_JS = """async ([base, png]) => {
    const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
    const form = new FormData();
    form.append("image", new Blob([bytes], { type: "image/png" }), "pic.png");
    form.append("duration", "1");
    form.append("steps", "1");
    const response = await fetch(base + "/v1/jobs", {
        method: "POST", body: form, credentials: "include", mode: base ? "no-cors" : "same-origin",
    });
    return response.status;
}"""
"""Submit a job with the browser's cookie: to ``base`` from another origin, or to this page's own origin."""


def evil_page(gateway_url: str) -> bytes:
    return f"""<!doctype html><html><body>
<iframe id="framed" src="{gateway_url}/"></iframe>
</body></html>""".encode()


@pytest.fixture
def other_site(gateway: RunningGateway) -> Iterator[str]:
    """A page served from another port of the gateway's host: another origin, the same site."""
    body = evil_page(gateway.url)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer((LOOPBACK, free_port()), Handler)) as server:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"


async def test_another_origin_of_the_same_site_cannot_use_the_session(gateway: RunningGateway, other_site: str) -> None:
    _, key = gateway.account(1000)
    console: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            page.on("console", lambda m: console.append(m.text))
            await page.goto(gateway.url)
            await page.fill("#api-key", key)
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#app:not([hidden])")

            await page.goto(other_site)
            await page.evaluate(SUBMIT_JS, [gateway.url, PNG])  # opaque: what it did is read from the API below
            framed = await page.wait_for_selector("#framed")
            assert framed is not None
            frame = await framed.content_frame()
            assert frame is not None and await frame.query_selector("#app") is None, "the page was framed"

            async with gateway.client(key) as client:
                assert (await client.get("/v1/jobs")).json()["items"] == [], "the other origin submitted a job"
                # The same request from the gateway's own page goes through: the session was there all along.
                await page.goto(gateway.url)
                await page.wait_for_selector("#app:not([hidden])")
                assert await page.evaluate(SUBMIT_JS, ["", PNG]) == 202
                assert len((await client.get("/v1/jobs")).json()["items"]) == 1
        finally:
            await browser.close()
    assert any("frame-ancestors" in line or "X-Frame-Options" in line for line in console), console


async def test_the_pages_run_under_their_content_security_policy(gateway: RunningGateway) -> None:
    violations: list[str] = []
    errors: list[str] = []
    failed: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: failed.append(r.url.split("/", 3)[3]) if r.status >= 400 else None)
            await page.add_init_script(
                "document.addEventListener('securitypolicyviolation', (e) =>"
                " window.__violations = [...(window.__violations || []), e.violatedDirective + ' ' + e.blockedURI]);"
            )
            await page.goto(f"{gateway.url}/docs")
            await page.wait_for_selector(".opblock")  # Swagger UI's operations
            assert await page.locator(".opblock").count() >= 10
            violations += await page.evaluate("window.__violations || []")
            await page.goto(gateway.url)
            await page.wait_for_selector("#login:not([hidden])")
            violations += await page.evaluate("window.__violations || []")
        finally:
            await browser.close()
    assert violations == []
    # Only the page's account check before logging in, and the browser's guess at an icon for the page.
    assert set(failed) <= {"v1/account", "favicon.ico"}, failed
    assert all(e.startswith("Failed to load resource") for e in errors), errors
