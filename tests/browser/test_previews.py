"""Live previews on the web page: the card shows the denoising's preview, then the video replaces it
(`i2v stack up`'s stack with the gateway, headless Chromium)."""

import pytest

from services.stack.embedded import EmbeddedStack
from tests.browser.page_driver import NEEDS_CHROMIUM, PageRun, _fill_form, logged_in_page
from tests.browser.test_page import api_key
from tests.stacks import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    NEEDS_CHROMIUM,
]


def test_the_card_shows_a_live_preview_until_the_video_replaces_it(stack: EmbeddedStack) -> None:
    errors: list[str] = []
    with logged_in_page(stack.gateway_url, api_key(stack, 100), errors) as page:
        _fill_form(page, ROOT / "examples" / "harbor.png", PageRun())
        page.click("#generate")
        # Watched from inside the page: the preview may be on screen for a few seconds only.
        handle = page.wait_for_function(
            """() => {
                const media = document.querySelector('.item:first-child .media');
                const img = media && media.querySelector('img.preview');
                if (img && img.complete && img.naturalWidth > 0) {
                    window.__previews = window.__previews || new Set();
                    window.__previews.add(`${img.getAttribute('src')} ${img.naturalWidth}x${img.naturalHeight}`);
                }
                return media && media.querySelector('video') ? [...(window.__previews || [])] : false;
            }""",
            polling=50,
            timeout=150_000,
        )
        seen = handle.json_value()
        assert page.locator(".item:first-child .media img.preview").count() == 0  # the video took its place
        assert page.locator(".item:first-child .media video").count() == 1
    assert seen, "no preview was shown before the video"
    for shown in seen:
        src, size = shown.split(" ")
        assert "/previews/" in src and "generation=0" in src, src
        width, height = (int(n) for n in size.split("x"))
        assert (width, height) == (256 // 8, 192 // 8)  # the tiny model's latents, 1/8 of 256x192
    assert all("401" in e for e in errors), errors
