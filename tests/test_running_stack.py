"""One `i2v stack up`-like stack (every service and the gateway) in ``<tmp>/.i2v``, used as people use a warm
stack: `i2v generate --stack DIR` and plain `i2v generate` next to it submit to it instead of starting their
own; `i2v jobs show` and `i2v jobs download` read its jobs; `POST /v1/jobs` with `Prefer: wait=N` answers a
short job finished, in one round trip."""

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from contracts.messages import JobCompleted
from services.billing.ledger import open_ledger
from services.gateway.auth import hash_api_key, new_api_key
from services.jobclient import JobHistory
from services.stack.embedded import LOCAL_ACCOUNT, WITH_GATEWAY, EmbeddedStack
from tests.cli.test_operate import HARBOR, i2v, one_error
from tests.stacks import job_client

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SHORT = ("--duration", "1", "--fps", "8", "--steps", "2")


@dataclass(frozen=True)
class Running:
    stack: EmbeddedStack
    home: Path
    """The folder commands run in: the stack's state folder is ``home/.i2v``, the default one."""

    @property
    def state(self) -> Path:
        return self.stack.state_dir


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    home = tmp_path_factory.mktemp("home")
    with EmbeddedStack(home / ".i2v", services=WITH_GATEWAY) as stack:
        yield Running(stack, home)


def history(stack: EmbeddedStack, job_id: str) -> JobHistory:
    async def read() -> JobHistory:
        async with job_client(stack) as client:
            return await client.history(job_id)

    return asyncio.run(read())


def report(stdout: str) -> dict[str, str]:
    """`i2v generate`'s report: its first word per line is the key."""
    return dict(line.split(None, 1) for line in stdout.splitlines() if line.strip())


@pytest.fixture(scope="module")
def finished(running: Running) -> tuple[str, Path]:
    """A job made by `i2v generate --stack DIR` from another folder, with no I2V_* variable: (job id, video)."""
    elsewhere = running.home / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "stack.mp4"
    code, lines, stdout = i2v(
        "generate", str(HARBOR), "-o", str(out), *SHORT, "--seed", "11", "--stack", str(running.state), cwd=elsewhere
    )
    assert code == 0, lines
    assert not any("embedded stack" in line for line in lines), lines
    return report(stdout)["job"].strip(), out


def test_generate_with_stack_submits_to_the_running_stack(running: Running, finished: tuple[str, Path]) -> None:
    job_id, out = finished

    # The job ran on this stack's bus: its history there ends with the video generate wrote.
    ended = history(running.stack, job_id).terminal
    assert isinstance(ended, JobCompleted)
    assert ended.job.params.seed == 11
    assert out.stat().st_size == ended.video.size


def test_generate_uses_a_stack_running_from_the_default_state_folder(running: Running) -> None:
    out = running.home / "default.mp4"

    code, lines, stdout = i2v("generate", str(HARBOR), "-o", str(out), *SHORT, cwd=running.home)

    assert code == 0, lines
    assert any(line.startswith("using the stack running from .i2v") for line in lines), lines
    assert not any("embedded stack" in line for line in lines), lines
    assert isinstance(history(running.stack, report(stdout)["job"].strip()).terminal, JobCompleted)


def test_generate_with_a_folder_holding_no_stack_is_one_line(running: Running, tmp_path: Path) -> None:
    code, lines, _ = i2v("generate", str(HARBOR), "--stack", str(tmp_path), cwd=running.home)

    one_error(code, lines, f"--stack {tmp_path}: no running stack there", f"i2v stack up --state-dir {tmp_path}")


def test_jobs_show_reads_as_key_value_lines(running: Running, finished: tuple[str, Path]) -> None:
    job_id, _ = finished

    code, lines, stdout = i2v("jobs", "show", job_id, cwd=running.home)

    assert code == 0, lines
    shown = {key: value.strip() for key, _, value in (line.partition(":") for line in stdout.splitlines())}
    assert shown["job"] == job_id
    assert shown["status"] == "succeeded"
    assert shown["stage"] == "mux"
    assert shown["progress"] == "100%"
    assert shown["params"].startswith("1 s at 8 fps, 2 steps, cfg 1-2.5, motion 127, model tiny")
    assert shown["seed"] == "11"
    assert shown["price"] == "9 points, charged"  # 8 + ceil(256·192 · 8 frames · 2 steps / 2,457,600)
    assert shown["output"].startswith("8 frames, 8 fps, 1 s, 256x192, mp4, ")
    assert shown["submitted"].endswith("UTC")
    assert [part.split()[0] for part in shown["stages"].split("  ")][:5] == [
        "ingest",
        "billing",
        "latent",
        "decode",
        "mux",
    ]
    assert "error" not in shown
    # Aligned: every value starts in the same column.
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in stdout.splitlines()}) == 1


def test_jobs_show_json_is_the_raw_history(running: Running, finished: tuple[str, Path]) -> None:
    job_id, _ = finished

    code, lines, stdout = i2v("jobs", "show", job_id, "--json", cwd=running.home)

    assert code == 0, lines
    document = json.loads(stdout)
    assert document["job_id"] == job_id
    sequences = [item["sequence"] for item in document["events"]]
    assert sequences == sorted(sequences)
    assert document["events"][-1]["event"]["type"] == "JobCompleted"
    assert document["events"][-1]["event"]["job"]["params"]["seed"] == 11


def test_jobs_download_writes_the_video(running: Running, finished: tuple[str, Path]) -> None:
    job_id, made = finished
    out = running.home / "downloaded.mp4"

    code, lines, _ = i2v("jobs", "download", job_id, "-o", str(out), cwd=running.home)

    assert code == 0, lines
    assert out.read_bytes() == made.read_bytes()
    with av.open(str(out)) as container:
        assert len(list(container.decode(video=0))) == 8
    assert [p.name for p in running.home.iterdir() if p.name.endswith(".part")] == []


def test_jobs_download_refuses_another_format_s_extension(running: Running, finished: tuple[str, Path]) -> None:
    job_id, _ = finished

    code, lines, _ = i2v("jobs", "download", job_id, "-o", "clip.webm", cwd=running.home)

    one_error(code, lines, "-o clip.webm: the job's video is mp4; name a .mp4 file", exit_code=2)
    assert not (running.home / "clip.webm").exists()


def api_key(stack: EmbeddedStack, points: int) -> str:
    key = new_api_key()
    ledger = open_ledger(stack.settings().resolved_ledger_dsn())
    ledger.create_account(f"waiter-{hash_api_key(key)[:8]}", points, hash_api_key(key))
    return key


def submit(stack: EmbeddedStack, key: str, prefer: str, **params: object) -> httpx.Response:
    body = {"image_base64": base64.b64encode(HARBOR.read_bytes()).decode(), **params}
    headers = {"Authorization": f"Bearer {key}", "Prefer": prefer}
    return httpx.post(f"{stack.gateway_url}/v1/jobs", json=body, headers=headers, timeout=90)


def test_prefer_wait_answers_a_short_job_finished(running: Running) -> None:
    key = api_key(running.stack, 100)

    answer = submit(running.stack, key, "wait=60", duration=1, fps=8, steps=2, seed=3)

    assert answer.status_code == 200, answer.text
    assert answer.headers["Preference-Applied"] == "wait=60"
    job = answer.json()
    assert job["status"] == "succeeded"
    assert job["progress"] == 100
    assert job["output"]["frame_count"] == 8
    # The same shape and content GET /v1/jobs/{id} answers.
    again = httpx.get(f"{running.stack.gateway_url}{job['links']['self']}", headers={"Authorization": f"Bearer {key}"})
    assert again.json() == job


def test_prefer_wait_past_the_limit_is_held_to_sixty(running: Running) -> None:
    key = api_key(running.stack, 100)

    answer = submit(running.stack, key, 'respond-async, wait="600"', duration=1, fps=8, steps=1, seed=4)

    assert answer.status_code == 200, answer.text
    assert answer.headers["Preference-Applied"] == "wait=60"


def test_prefer_wait_on_a_long_job_answers_202_after_the_wait(running: Running) -> None:
    key = api_key(running.stack, 1000)
    headers = {"Authorization": f"Bearer {key}"}

    answer = submit(running.stack, key, "wait=1", duration=4, fps=24, steps=50, seed=5)

    assert answer.status_code == 202, answer.text
    assert answer.headers["Preference-Applied"] == "wait=1"
    job = answer.json()
    assert job["status"] not in {"succeeded", "failed", "cancelled", "rejected"}
    # Meanwhile the CLI refuses to download what is not there yet, and writes nothing.
    code, lines, _ = i2v("jobs", "download", job["id"], "-o", "early.mp4", cwd=running.home)
    one_error(code, lines, f"job {job['id']} has no video yet")
    assert not (running.home / "early.mp4").exists()
    cancelled = httpx.post(f"{running.stack.gateway_url}{job['links']['cancel']}", headers=headers)
    assert cancelled.status_code == 202, cancelled.text


def test_a_malformed_wait_is_ignored(running: Running) -> None:
    key = api_key(running.stack, 100)

    answer = submit(running.stack, key, "wait=soon", duration=1, fps=8, steps=1, seed=6)

    assert answer.status_code == 202, answer.text
    assert "Preference-Applied" not in answer.headers


def decoded(video: bytes) -> np.ndarray:
    """Every frame of a video as uint8 RGB (F, H, W, 3)."""
    with av.open(io.BytesIO(video), mode="r") as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_extending_a_clip_twice_continues_its_frames(running: Running, finished: tuple[str, Path]) -> None:
    parent, made = finished  # 1 s at 8 fps in 2 steps, of the demo account

    # Through the CLI: one more second from the parent's last frame, the parent's settings otherwise.
    out = running.home / "extended.mp4"
    code, lines, stdout = i2v(
        "jobs", "extend", parent, "--duration", "1", "--seed", "22", "-o", str(out), cwd=running.home
    )

    assert code == 0, lines
    first = report(stdout)
    assert first["output"].startswith("16 frames, 8 fps, 2 s, 256x192, mp4"), stdout
    assert first["price"] == "9 points"  # the new second's price alone, as the parent's
    # Through the API, extending the extension: a chain.
    key = new_api_key()
    open_ledger(running.stack.settings().resolved_ledger_dsn()).set_api_key_hash(LOCAL_ACCOUNT, hash_api_key(key))
    url, auth = running.stack.gateway_url, {"Authorization": f"Bearer {key}"}
    answer = httpx.post(
        f"{url}/v1/jobs/{first['job'].strip()}/extend",
        json={"duration": 1, "fps": 8},  # the parent's fps may be named; another would be refused
        headers={**auth, "Prefer": "wait=60"},
        timeout=90,
    )

    assert answer.status_code == 200, answer.text
    second = answer.json()
    assert second["status"] == "succeeded", second
    assert second["extends"] == first["job"].strip()
    assert (second["parameters"]["duration"], second["parameters"]["steps"]) == (1, 2)
    assert second["parameters"]["resolution"] == {"width": 256, "height": 192}
    assert second["output"]["frame_count"] == 24 and second["output"]["duration_s"] == 3.0
    assert second["price"] == 9
    chain = httpx.get(f"{url}{second['links']['video']}", headers=auth).content
    one, two, three = (decoded(video) for video in (made.read_bytes(), out.read_bytes(), chain))
    assert (len(one), len(two), len(three)) == (8, 8 + 9 - 1, 16 + 9 - 1)  # parent + new - 1: the shared frame once
    # Each video begins with its parent's frames, within what H.264 at CRF 18 changes of the same pixels.
    assert np.abs(two[:8].astype(int) - one.astype(int)).mean() < 2.0
    assert np.abs(three[:16].astype(int) - two.astype(int)).mean() < 2.0
    assert np.abs(two[8:].astype(int) - one[-1].astype(int)).mean() > 2.0  # and then moves on


def test_an_extension_sent_again_with_its_idempotency_key_is_the_same_job(
    running: Running, finished: tuple[str, Path]
) -> None:
    parent, _ = finished
    key = new_api_key()
    open_ledger(running.stack.settings().resolved_ledger_dsn()).set_api_key_hash(LOCAL_ACCOUNT, hash_api_key(key))
    url, auth = running.stack.gateway_url, {"Authorization": f"Bearer {key}"}

    def extensions() -> set[str]:
        page = httpx.get(f"{url}/v1/jobs", params={"limit": 100}, headers=auth).json()
        return {job["id"] for job in page["items"] if job["extends"] == parent}

    before = extensions()
    sent = {**auth, "Idempotency-Key": "extend-1"}
    first = httpx.post(f"{url}/v1/jobs/{parent}/extend", json={"duration": 1, "steps": 2}, headers=sent)
    # The same fields in another order: the same request, so the same extension, made once.
    again = httpx.post(f"{url}/v1/jobs/{parent}/extend", json={"steps": 2, "duration": 1}, headers=sent)
    changed = httpx.post(f"{url}/v1/jobs/{parent}/extend", json={"duration": 2}, headers=sent)
    made = extensions() - before
    httpx.post(f"{url}/v1/jobs/{first.json()['id']}/cancel", headers=auth)

    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert made == {first.json()["id"]}
    assert changed.status_code == 422, changed.text
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert changed.json()["error"]["details"] == {"job_id": first.json()["id"]}


def test_extending_is_refused_in_one_line(running: Running, finished: tuple[str, Path]) -> None:
    demo_job, _ = finished
    key = api_key(running.stack, 1000)
    url, auth = running.stack.gateway_url, {"Authorization": f"Bearer {key}"}
    queued = submit(running.stack, key, "wait=0", duration=4, fps=24, steps=50, seed=23).json()

    early = httpx.post(f"{url}/v1/jobs/{queued['id']}/extend", headers=auth)
    others = httpx.post(f"{url}/v1/jobs/{demo_job}/extend", headers=auth)
    code, lines, _ = i2v("jobs", "extend", demo_job, "--fps-conditioning", "99", cwd=running.home)

    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "cannot_extend"
    assert "only a completed job can be extended" in early.json()["error"]["message"]
    assert others.status_code == 404, others.text  # another account's job is not there for this one
    one_error(code, lines, "--fps-conditioning: input should be less than or equal to 30", exit_code=2)
    code, lines, _ = i2v("jobs", "extend", demo_job, "--account", "someone", cwd=running.home)
    one_error(code, lines, f"job {demo_job} is another account's")
    httpx.post(f"{url}/v1/jobs/{queued['id']}/cancel", headers=auth)
