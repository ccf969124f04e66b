"""Drives the gateway's web page in headless Chromium as a person would; shared by the test and by hand.

``python -m tests.browser.page_driver URL KEY`` runs it against a stack you started yourself.
"""

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.stacks import ARTIFACTS, ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NEEDS_CHROMIUM = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium: apt-get install -y chromium"
)


@dataclass
class PageRun:
    """What the run saw."""

    price_label: str = ""
    picker_opened: bool = False
    percents: list[int] = field(default_factory=list)
    video_duration: float = 0.0
    played_to: float = 0.0
    cards_after_reload: int = 0
    console_errors: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)


def launch(playwright_browser_type: object) -> Browser:
    browser: Browser = playwright_browser_type.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )
    return browser


@contextlib.contextmanager
def logged_in_page(url: str, api_key: str, console_errors: list[str]) -> Iterator[Page]:
    """The page at ``url`` in a desktop-sized window, logged in with ``api_key``; the console's errors and
    the page's uncaught ones are added to ``console_errors``. The browser closes on the way out."""
    with sync_playwright() as p:
        browser = launch(p.chromium)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(url)
            _log_in(page, api_key)
            yield page
        finally:
            browser.close()


def generate_through_page(url: str, api_key: str, image: Path, timeout_s: float = 150.0) -> PageRun:
    """Log in, upload, generate a short clip with 4 steps, watch it to 100%, play the result."""
    run = PageRun()
    ARTIFACTS.mkdir(exist_ok=True)
    with logged_in_page(url, api_key, run.console_errors) as page:
        _fill_form(page, image, run)
        page.click("#generate")
        _watch_progress(page, run, timeout_s)
        _check_video(page, run)
        shot = ARTIFACTS / "gateway-page.png"
        page.screenshot(path=str(shot), full_page=True)
        run.screenshots.append(shot)

        page.reload()
        page.wait_for_selector(".item:first-child video", timeout=15_000)
        run.cards_after_reload = page.locator(".item").count()

        page.set_viewport_size({"width": 390, "height": 844})
        narrow = ARTIFACTS / "gateway-page-narrow.png"
        page.screenshot(path=str(narrow), full_page=True)
        run.screenshots.append(narrow)
    return run


@dataclass
class ReplayRun:
    """What a cancel and a "Run again" on the page saw."""

    cancelled_title: str = ""
    percents: list[int] = field(default_factory=list)
    status_after: str = ""
    video_duration: float = 0.0
    console_errors: list[str] = field(default_factory=list)


def cancel_then_run_again(url: str, api_key: str, image: Path, timeout_s: float = 150.0) -> ReplayRun:
    """Generate, cancel at once, then "Run again" on the card and follow the replay to its video."""
    run = ReplayRun()
    with logged_in_page(url, api_key, run.console_errors) as page:
        _fill_form(page, image, PageRun())
        page.click("#generate")
        page.wait_for_selector("#cancel:not([hidden])")
        page.click("#cancel")
        page.wait_for_function(
            "() => document.querySelector('#progress-title').textContent === 'Cancelled'", timeout=timeout_s * 1000
        )
        run.cancelled_title = page.inner_text("#progress-title")
        page.click(".item:first-child .replay-job")
        page.wait_for_function("() => document.querySelector('#progress-title').textContent === 'Working on it'")
        _watch_progress(page, run, timeout_s)
        page.wait_for_selector(".item:first-child video", timeout=20_000)
        run.status_after = page.inner_text(".item:first-child .status")
        run.video_duration = _video_duration(page)
    return run


@dataclass
class FormatRun:
    """What a run with the page's video options saw: the card's picture, its camera line, the dialog."""

    media_tag: str = ""
    natural_width: int = 0
    camera_line: str = ""
    facts: str = ""
    dialog_shows_image: bool = False
    console_errors: list[str] = field(default_factory=list)


def generate_with_video_options(url: str, api_key: str, image: Path, timeout_s: float = 150.0) -> FormatRun:
    """Generate an animated WebP, ping-pong loop, stabilized, with a camera move, and look at the card."""
    run = FormatRun()
    with logged_in_page(url, api_key, run.console_errors) as page:
        _fill_form(page, image, PageRun())
        page.fill("#motion-prompt", "slow zoom in, sparkle")
        page.click("label[for=loop-pingpong]")
        page.select_option("#format", "webp")
        page.select_option("#quality", "low")
        page.check("#stabilize")
        page.click("#generate")
        _watch_progress(page, PageRun(), timeout_s)
        card = ".item:first-child"
        final = ".media img:not(.preview)"  # the video, not a live preview of the denoising
        page.wait_for_function(
            f"() => {{ const i = document.querySelector('{card} {final}'); return i && i.naturalWidth > 0; }}",
            timeout=20_000,
        )
        run.media_tag = page.evaluate(f"document.querySelector('{card} .media').firstElementChild.tagName")
        run.natural_width = int(page.evaluate(f"document.querySelector('{card} {final}').naturalWidth"))
        run.camera_line = page.inner_text(f"{card} .camera")
        run.facts = page.inner_text(f"{card} .facts")
        page.click(f"{card} .enlarge")
        page.wait_for_function("() => document.querySelector('#player-img').naturalWidth > 0", timeout=10_000)
        run.dialog_shows_image = page.is_visible("#player-img") and not page.is_visible("#player-video")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "gateway-page-webp.png"), full_page=True)
    return run


@dataclass
class SuggestRun:
    """What the page suggested for a picture, what using it set, and what a reload kept."""

    suggested: str = ""
    reasons: list[str] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    form_after_use: dict[str, str] = field(default_factory=dict)
    form_after_reload: dict[str, str] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)


_FORM_VALUES = """() => ({
    preset: document.querySelector('#preset').value,
    duration: document.querySelector('input[name=duration]:checked').value,
    fps: document.querySelector('input[name=fps]:checked').value,
    loop: document.querySelector('input[name=loop]:checked').value,
    motion_bucket_id: document.querySelector('#motion').value,
    augmentation_level: document.querySelector('#aug').value,
    cfg_scale: document.querySelector('#cfg').value,
    price: document.querySelector('#price').textContent,
})"""


def suggest_use_and_reload(url: str, api_key: str, image: Path) -> SuggestRun:
    """Upload a picture, read the suggestion, use it, then reload: the settings stay."""
    run = SuggestRun()
    with logged_in_page(url, api_key, run.console_errors) as page:
        with page.expect_response("**/v1/suggest") as answer:
            page.set_input_files("#image", str(image))
        run.server = answer.value.json()
        page.wait_for_selector("#suggestion:not([hidden])")
        run.suggested = page.inner_text("#suggestion-title")
        run.reasons = page.locator("#suggestion-reasons li").all_inner_texts()
        page.click("#use-suggestion")
        page.wait_for_function(f"() => document.querySelector('#preset').value === '{run.server['preset']}'")
        run.form_after_use = page.evaluate(_FORM_VALUES)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "gateway-page-suggestion.png"), full_page=True)
        page.reload()
        page.wait_for_selector("#app:not([hidden])")
        page.wait_for_function(f"() => document.querySelector('#preset').value === '{run.server['preset']}'")
        run.form_after_reload = page.evaluate(_FORM_VALUES)
    return run


@dataclass
class ReviewRun:
    """The review's four findings, as the page behaves now."""

    balance_before: int = 0
    balance_while_running: int = 0
    percent_while_running: int = 0
    progress_hidden_for_next_account: bool = False
    next_account_name: str = ""
    error_shown: str = ""
    error_after_correction: str = ""
    login_after_expiry: bool = False
    login_message: str = ""
    console_errors: list[str] = field(default_factory=list)


def review_findings(url: str, first_key: str, second_key: str, image: Path, timeout_s: float = 150.0) -> ReviewRun:
    """Reserved points leave the balance at once; another account sees no progress panel of the first;
    a corrected form error goes; an ended session brings back the login form."""
    run = ReviewRun()
    with logged_in_page(url, first_key, run.console_errors) as page:
        run.balance_before = int(page.inner_text("#balance"))
        page.set_input_files("#image", str(image))
        page.wait_for_selector("#preview:not([hidden])")
        page.click(".advanced summary")
        page.fill("#steps", "20")
        page.click("#generate")
        page.wait_for_function(
            f"() => parseInt(document.querySelector('#balance').textContent, 10) < {run.balance_before}",
            timeout=timeout_s * 1000,
        )
        run.balance_while_running = int(page.inner_text("#balance"))
        run.percent_while_running = int(page.inner_text("#progress-pct").rstrip("%"))

        page.click("#logout")
        _log_in(page, second_key)
        run.next_account_name = page.inner_text("#account-name")
        run.progress_hidden_for_next_account = page.is_hidden("#progress")

        page.fill("#steps", "99")  # over the bound: the server names the field
        page.set_input_files("#image", str(image))
        page.wait_for_selector("#preview:not([hidden])")
        page.click("#generate")
        page.wait_for_function("() => document.querySelector('#form-error').textContent !== ''")
        run.error_shown = page.inner_text("#form-error")
        page.fill("#steps", "4")
        run.error_after_correction = page.inner_text("#form-error")

        page.context.clear_cookies()  # the session is gone, as when it expires
        page.click("#generate")  # the server now answers 401
        page.wait_for_selector("#login:not([hidden])", timeout=10_000)
        run.login_after_expiry = page.is_hidden("#app")
        run.login_message = page.inner_text("#login-error")
    return run


def _log_in(page: Page, api_key: str) -> None:
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#api-key", api_key)
    page.keyboard.press("Enter")
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_function("() => document.querySelector('#account-name').textContent !== ''")


def _fill_form(page: Page, image: Path, run: PageRun) -> None:
    # The drop zone opens the file picker from the keyboard, or a click. Headless Chromium now and
    # then drops a picker request, so each way gets a short wait before the next is tried.
    opened = False

    def press_enter() -> None:
        page.keyboard.press("Enter")

    def click() -> None:
        page.click("#drop")

    for open_picker in (press_enter, click):
        page.focus("#drop")
        try:
            with page.expect_file_chooser(timeout=3_000) as chooser:
                open_picker()
        except PlaywrightTimeoutError:
            continue
        chooser.value.set_files(str(image))
        opened = True
        break
    if not opened:
        page.set_input_files("#image", str(image))
    run.picker_opened = opened
    page.wait_for_selector("#preview:not([hidden])")
    page.click("label[for=d2]")
    page.click("label[for=f8]")
    page.fill("#motion-prompt", "the water ripples")
    page.click(".advanced summary")
    page.fill("#steps", "4")
    page.click("#random-seed")
    # 8 + ceil(256·192 · 16 frames · 4 steps / 2,457,600): the quote follows the steps field too
    page.wait_for_function("() => document.querySelector('#price').textContent === '10'")
    run.price_label = page.inner_text("#generate")


def _watch_progress(page: Page, run: PageRun | ReplayRun, timeout_s: float) -> None:
    page.wait_for_selector("#progress:not([hidden])")
    handle = page.wait_for_function(
        """() => {
            window.__seen = window.__seen || [];
            const pct = parseInt(document.querySelector('#progress-pct').textContent, 10);
            if (window.__seen[window.__seen.length - 1] !== pct) window.__seen.push(pct);
            return pct === 100 ? window.__seen : false;
        }""",
        polling=50,
        timeout=timeout_s * 1000,
    )
    run.percents = [int(v) for v in handle.json_value()]


def _check_video(page: Page, run: PageRun) -> None:
    page.wait_for_selector(".item:first-child video")
    run.video_duration = _video_duration(page)
    page.evaluate("document.querySelector('.item:first-child video').play()")
    page.wait_for_function("() => document.querySelector('.item:first-child video').currentTime > 0.2", timeout=20_000)
    run.played_to = float(page.evaluate("document.querySelector('.item:first-child video').currentTime"))
    page.evaluate("document.querySelector('.item:first-child video').pause()")


def _video_duration(page: Page) -> float:
    """The duration of the first card's video, once its metadata has loaded."""
    page.wait_for_function(
        "() => { const v = document.querySelector('.item:first-child video');"
        " return v.readyState >= 1 && v.duration > 0; }",
        timeout=20_000,
    )
    return float(page.evaluate("document.querySelector('.item:first-child video').duration"))


if __name__ == "__main__":
    result = generate_through_page(sys.argv[1], sys.argv[2], ROOT / "examples" / "harbor.png")
    print(result)
