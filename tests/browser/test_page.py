"""The whole product as people use it: `i2v stack up`'s stack with the gateway, the API over HTTP, and
the web page in real headless Chromium (Debian's `chromium`)."""

import asyncio
import base64
import json

import httpx
import pytest

from services.billing.ledger import open_ledger
from services.gateway.auth import hash_api_key, new_api_key
from services.stack.embedded import EmbeddedStack
from tests.browser.page_driver import (
    NEEDS_CHROMIUM,
    cancel_then_run_again,
    generate_through_page,
    generate_with_video_options,
    review_findings,
    suggest_use_and_reload,
)
from tests.stacks import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HARBOR = ROOT / "examples" / "harbor.png"


def api_key(stack: EmbeddedStack, points: int) -> str:
    key = new_api_key()
    ledger = open_ledger(stack.settings().resolved_ledger_dsn())
    ledger.create_account(f"user-{key[-8:].lower().replace('-', 'x').replace('_', 'y')}", points, hash_api_key(key))
    return key


def test_api_end_to_end_with_the_tiny_model(stack: EmbeddedStack) -> None:
    key = api_key(stack, 100)

    async def run() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=60) as client:
            body = {"image_base64": base64.b64encode(HARBOR.read_bytes()).decode(), "duration": 2, "fps": 12}
            response = await client.post("/v1/jobs", json={**body, "steps": 3, "seed": 5})
            assert response.status_code == 202, response.text
            job = response.json()
            types = []
            async with client.stream("GET", job["links"]["events"]) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: "):
                        types.append(line.removeprefix("event: "))
            assert types[0] == "StageStarted" and types[-1] == "JobCompleted", types
            for _ in range(100):
                status = (await client.get(job["links"]["self"])).json()
                if status["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
            assert status["progress"] == 100 and status["price"] == 10  # 256x192, 24 frames, 3 steps
            assert set(status["timings"]) == {"ingest", "billing", "latent", "decode", "mux"}
            assert status["output"]["frame_count"] == 24
            video = await client.get(job["links"]["video"], headers={"Range": "bytes=0-15"})
            assert video.status_code == 206 and video.content[4:8] == b"ftyp"
            account = (await client.get("/v1/account")).json()
            assert account["balance"] == 100 - 10

    asyncio.run(run())


@NEEDS_CHROMIUM
def test_the_page_generates_and_plays_a_video(stack: EmbeddedStack) -> None:
    run = generate_through_page(stack.gateway_url, api_key(stack, 100), HARBOR)
    assert run.price_label == "Generate · 10 points"
    assert run.percents[-1] == 100 and len(run.percents) >= 3, run.percents  # live, not one jump
    assert run.percents == sorted(run.percents)
    assert run.video_duration == pytest.approx(2.0, abs=0.2)
    assert run.played_to > 0
    assert run.cards_after_reload >= 1  # the history survives a reload
    # The only console error allowed is the 401 of the first visit before logging in.
    assert all("401" in e for e in run.console_errors), run.console_errors
    for shot in run.screenshots:
        assert shot.stat().st_size > 10_000
    print(json.dumps({"screenshots": [str(s) for s in run.screenshots], "percents": run.percents}))


@NEEDS_CHROMIUM
def test_the_page_follows_a_cancelled_job_run_again_to_its_video(stack: EmbeddedStack) -> None:
    run = cancel_then_run_again(stack.gateway_url, api_key(stack, 100), HARBOR)
    assert run.cancelled_title == "Cancelled"
    # The replay's own progress and end reach the page: the first generation's end does not stop it.
    assert run.percents[-1] == 100 and run.percents == sorted(run.percents), run.percents
    assert run.status_after.lower() == "succeeded"
    assert run.video_duration == pytest.approx(2.0, abs=0.2)
    assert all("401" in e for e in run.console_errors), run.console_errors


@NEEDS_CHROMIUM
def test_the_page_makes_an_animated_webp_and_shows_the_camera_it_read(stack: EmbeddedStack) -> None:
    run = generate_with_video_options(stack.gateway_url, api_key(stack, 100), HARBOR)
    assert run.media_tag == "IMG" and run.natural_width == 256  # an animated WebP plays in an <img>
    assert run.camera_line == "camera: slow zoom in · not understood: sparkle"
    assert "webp" in run.facts
    assert run.dialog_shows_image
    assert all("401" in e for e in run.console_errors), run.console_errors


@NEEDS_CHROMIUM
def test_the_page_suggests_a_preset_after_upload_and_keeps_settings_across_reloads(stack: EmbeddedStack) -> None:
    run = suggest_use_and_reload(stack.gateway_url, api_key(stack, 100), HARBOR)
    preset, params = run.server["preset"], run.server["params"]
    assert run.suggested == f"Suggested: {preset}"
    assert len(run.reasons) == len(run.server["reasons"]) >= 2
    form = run.form_after_use
    assert form["preset"] == preset
    for name in ("duration", "fps", "loop", "motion_bucket_id"):
        if name in params:
            assert form[name] == str(params[name]), (name, form, params)
    assert {k: v for k, v in run.form_after_reload.items() if k != "price"} == {
        k: v for k, v in form.items() if k != "price"
    }
    assert all("401" in e for e in run.console_errors), run.console_errors


@NEEDS_CHROMIUM
def test_the_page_fixes_what_the_review_found(stack: EmbeddedStack) -> None:
    run = review_findings(stack.gateway_url, api_key(stack, 100), api_key(stack, 50), HARBOR)
    assert run.balance_while_running < run.balance_before and run.percent_while_running < 100
    assert run.next_account_name and run.progress_hidden_for_next_account
    assert "steps" in run.error_shown and run.error_after_correction == ""
    assert run.login_after_expiry and "log in again" in run.login_message
    # The browser logs each refused request: the first visit's 401, the 422 of steps 99, the ended session's 401.
    assert all("401" in e or "422" in e for e in run.console_errors), run.console_errors
