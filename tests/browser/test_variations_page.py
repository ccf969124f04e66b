"""The page's Variations control in real headless Chromium on `i2v stack up`'s stack: the price shown is the
quote times the count, one submit makes that many cards, each a job of consecutive seed. And on the same
stack, a card's settings line with its "Use these settings" and "Extend" buttons, and the size presets."""

import base64

import httpx
import pytest

from contracts.params import MAX_SEED
from services.stack.embedded import EmbeddedStack
from tests.browser.page_driver import NEEDS_CHROMIUM, PageRun, _fill_form, logged_in_page
from tests.browser.test_page import api_key
from tests.stacks import ARTIFACTS, ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    NEEDS_CHROMIUM,
]


def test_two_variations_from_the_page_make_two_cards_of_consecutive_seeds(stack: EmbeddedStack) -> None:
    key = api_key(stack, 100)
    errors: list[str] = []
    with logged_in_page(stack.gateway_url, key, errors) as page:
        _fill_form(page, ROOT / "examples" / "harbor.png", PageRun())  # one job of 10 points
        page.fill("#variations", "2")
        page.wait_for_function("() => document.querySelector('#price').textContent === '20'")
        page.click("#generate")
        page.wait_for_function("() => document.querySelectorAll('#grid .item video').length === 2", timeout=150_000)
        cards = page.eval_on_selector_all("#grid .item", "cards => cards.map(c => c.dataset.id)")
    jobs = httpx.get(f"{stack.gateway_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}).json()["items"]
    by_id = {job["id"]: job for job in jobs}
    assert sorted(cards) == sorted(by_id) and len(cards) == 2
    first, second = (by_id[card] for card in cards)  # the page shows the first seed first
    assert (
        second["seed"] == (first["seed"] + 1) % (MAX_SEED + 1) and first["batch_id"] == second["batch_id"] is not None
    )
    assert all(job["status"] == "succeeded" and job["price"] == 10 for job in jobs)
    assert all("401" in e for e in errors), errors


def test_a_card_shows_its_settings_reuses_them_and_extends_its_video(stack: EmbeddedStack) -> None:
    key = api_key(stack, 100)
    auth = {"Authorization": f"Bearer {key}"}
    body = {
        "image_base64": base64.b64encode((ROOT / "examples" / "harbor.png").read_bytes()).decode(),
        **{"duration": 1, "fps": 8, "steps": 2, "seed": 31, "motion_bucket_id": 90, "resolution": "192x256"},
    }
    parent = httpx.post(
        f"{stack.gateway_url}/v1/jobs", json=body, headers={**auth, "Prefer": "wait=60"}, timeout=90
    ).json()
    assert parent["status"] == "succeeded", parent
    errors: list[str] = []
    with logged_in_page(stack.gateway_url, key, errors) as page:
        page.wait_for_selector(".item:first-child video")
        params_line = page.inner_text(".item:first-child .params")
        sizes = page.eval_on_selector_all("#resolution option", "options => options.map(o => o.value)")

        page.click(".item:first-child .reuse")
        form = page.evaluate(
            """() => ({
                seed: document.querySelector('#seed').value,
                steps: document.querySelector('#steps').value,
                motion: document.querySelector('#motion').value,
                size: document.querySelector('#resolution').value,
                duration: document.querySelector('input[name=duration]:checked').value,
            })"""
        )
        # 8 + ceil(192·256 · 8 frames · 2 steps / 2,457,600): the quote follows the size the settings chose
        page.wait_for_function("() => document.querySelector('#price').textContent === '9'")

        page.click(".item:first-child .extend-job")  # by the form's duration, 1 s
        page.wait_for_function("() => document.querySelectorAll('#grid .item video').length === 2", timeout=150_000)
        first_card = page.eval_on_selector(".item:first-child", "card => card.dataset.id")
        extended_facts = page.inner_text(".item:first-child .facts")
        extended_params = page.inner_text(".item:first-child .params")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "gateway-page-cards.png"), full_page=True)

    assert params_line.startswith("seed 31 · 2 steps · cfg 1\u20132.5 · motion 90 · 192\u00d7256"), params_line
    assert sizes == ["", "256x192", "192x256", "192x192"]  # auto, then the tiny model's sizes
    assert form == {"seed": "31", "steps": "2", "motion": "90", "size": "192x256", "duration": "1"}
    extension = httpx.get(f"{stack.gateway_url}/v1/jobs/{first_card}", headers=auth).json()
    assert extension["extends"] == parent["id"] and extension["status"] == "succeeded"
    assert extension["output"]["frame_count"] == 16 and extension["price"] == parent["price"]
    assert extended_facts.startswith("2 s · 8 fps · mp4"), extended_facts  # the whole video's length
    assert extended_params.endswith(f"+1 s after {parent['id']}"), extended_params
    assert all("401" in e for e in errors), errors
