"""The page's Variations control in real headless Chromium on `i2v stack up`'s stack: the price shown is the
quote times the count, one submit makes that many cards, each a job of consecutive seed."""

import httpx
import pytest

from contracts.params import MAX_SEED
from services.stack.embedded import EmbeddedStack
from tests.browser.page_driver import NEEDS_CHROMIUM, ROOT, PageRun, _fill_form, logged_in_page
from tests.browser.test_page import api_key

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
