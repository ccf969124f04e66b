"""The ETA a job is given when it is submitted against when it really ends: a batch of 8 submitted together to
the embedded stack (tiny model), after one warm-up job so every stage has a measured time.

Not part of the suite yet: on a loaded 2-core machine it passed once (median error 12%) and failed four
times (40-46%) against the 25% goal. Run it by name, on a quiet machine, and read the printed errors:

    .venv/bin/pytest bench/eta_accuracy.py -s
"""

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.billing.ledger import open_ledger
from services.gateway.auth import hash_api_key, new_api_key
from services.stack.embedded import WITH_GATEWAY, EmbeddedStack
from tests.stacks import HARBOR

BATCH = 8
# Steps alternate so the ETA has to scale the measured latent time, not only count the jobs ahead.
STEPS = (3, 6)


async def _submit(client: httpx.AsyncClient, steps: int) -> str:
    files = {"image": ("harbor.png", HARBOR.read_bytes(), "image/png")}
    data = {"duration": "1", "fps": "8", "steps": str(steps), "resolution": "128x128"}
    answer = await client.post("/v1/jobs", files=files, data=data)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


async def _ended(client: httpx.AsyncClient, job_ids: list[str]) -> dict[str, float]:
    """When each job was first seen succeeded (polled every 50 ms)."""
    ended: dict[str, float] = {}
    deadline = time.monotonic() + 100
    while len(ended) < len(job_ids):
        assert time.monotonic() < deadline, f"jobs still running: {set(job_ids) - set(ended)}"
        for job_id in set(job_ids) - set(ended):
            job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
            assert job["status"] not in ("failed", "cancelled", "rejected"), job
            if job["status"] == "succeeded":
                ended[job_id] = time.monotonic()
        await asyncio.sleep(0.05)
    return ended


@pytest.mark.slow
async def test_the_eta_at_submit_is_within_a_quarter_of_the_real_wait_for_most_of_a_batch(tmp_path: Path) -> None:
    extra = {"I2V_GATEWAY_MAX_ACTIVE_JOBS": str(BATCH + 1)}
    with EmbeddedStack(tmp_path / "state", services=WITH_GATEWAY, extra_env=extra) as stack:
        key = new_api_key()
        open_ledger(stack.settings().resolved_ledger_dsn()).create_account("eta-batch", 10_000, hash_api_key(key))
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            # Before any stage has a measured time the ETA says nothing rather than guess.
            warm_up = await _submit(client, STEPS[0])
            assert (await client.get(f"/v1/jobs/{warm_up}")).json()["eta_s"] is None
            await _ended(client, [warm_up])

            job_ids = [await _submit(client, STEPS[n % 2]) for n in range(BATCH)]
            asked: dict[str, tuple[float, float]] = {}
            for job_id in job_ids:
                job = (await client.get(f"/v1/jobs/{job_id}")).json()
                assert job["eta_s"] is not None, job
                asked[job_id] = (time.monotonic(), job["eta_s"])
            ended = await _ended(client, job_ids)

    errors = []
    for job_id in job_ids:
        at, eta = asked[job_id]
        took = ended[job_id] - at
        errors.append(abs(eta - took) / took)
    report = ", ".join(f"{e:.0%}" for e in errors)
    print(f"ETA errors at submit: {report}")
    assert statistics.median(errors) <= 0.25, f"ETA errors: {report}"
