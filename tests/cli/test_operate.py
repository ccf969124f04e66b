"""The real `i2v` command in a process of its own: one line and a non-zero exit for every problem a user can
fix, and a running stack found from its state folder without exported variables."""

import os
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest

from contracts.messages import JobSpec, StageStarted
from contracts.params import GenerationParams
from contracts.stages import Stage
from infra.nats_server import NatsServer
from infra.seaweed import SeaweedS3
from services.billing.ledger import open_ledger
from services.bus.publishing import route
from services.bus.streams import ensure_streams
from services.stack.state_file import write_stack_file
from tests.services.job_messages import completed

ROOT = Path(__file__).resolve().parents[2]
HARBOR = ROOT / "examples" / "harbor.png"
I2V = Path(sys.executable).parent / "i2v"


def i2v(*argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, list[str], str]:
    """Run `i2v` with no I2V_* variable but ``env``; returns the exit code, stderr's lines and stdout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    result = subprocess.run(
        [str(I2V), *argv], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()], result.stdout


def one_error(code: int, lines: list[str], *expected: str, exit_code: int = 1) -> str:
    assert code == exit_code, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("i2v: error: "), lines
    for text in expected:
        assert text in lines[0], lines
    return lines[0]


# --- no stack, no ledger --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["dlq", "list"], ["dlq", "show", "1"], ["jobs", "show", "j1"], ["jobs", "cancel", "j1"], ["jobs", "replay", "j1"]],
)
def test_without_a_stack_commands_say_how_to_find_one(argv: list[str], tmp_path: Path) -> None:
    code, lines, _ = i2v(*argv, cwd=tmp_path)

    one_error(code, lines, "no running stack found", ".i2v/stack.env", "i2v stack up", "--state-dir")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["show", "local"], ["credit", "local", "5"], ["create", "alice"], ["key", "local"]])
def test_accounts_without_a_ledger_create_nothing(argv: list[str], tmp_path: Path) -> None:
    code, lines, _ = i2v("accounts", *argv, cwd=tmp_path)

    one_error(code, lines, "no ledger found at .i2v/ledger.sqlite3", "--state-dir", "I2V_LEDGER_DSN")
    assert list(tmp_path.iterdir()) == []


def test_a_stack_that_is_gone_is_named(tmp_path: Path) -> None:
    write_stack_file(tmp_path, {"I2V_NATS_URL": "nats://127.0.0.1:9", "I2V_S3_ENDPOINT": "http://127.0.0.1:9"})

    code, lines, _ = i2v("dlq", "list", "--state-dir", str(tmp_path), cwd=tmp_path)

    one_error(code, lines, "cannot reach NATS at nats://127.0.0.1:9 (connection refused)", "i2v stack up")


# --- generate -------------------------------------------------------------------------------------


def test_unreachable_servers_are_named_in_one_line_within_ten_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    code, lines, _ = i2v(
        "generate", str(HARBOR), "--nats", "nats://127.0.0.1:9", "--s3", "http://127.0.0.1:9", cwd=tmp_path, timeout=30
    )
    took = time.monotonic() - started

    one_error(code, lines, "cannot reach NATS at nats://127.0.0.1:9", "cannot reach S3 at http://127.0.0.1:9")
    assert took < 10, f"{took:.1f}s"


@pytest.mark.integration
def test_generate_without_s3_keys_names_them(tmp_path: Path, nats_server: NatsServer, seaweed: SeaweedS3) -> None:
    code, lines, _ = i2v("generate", str(HARBOR), "--nats", nats_server.url, "--s3", seaweed.endpoint, cwd=tmp_path)

    one_error(code, lines, f"S3 at {seaweed.endpoint} refused access", "I2V_S3_ACCESS_KEY", "I2V_S3_SECRET_KEY")
    assert not (tmp_path / "out.mp4").exists()


def test_generate_help_names_the_s3_keys(tmp_path: Path) -> None:
    code, _, out = i2v("generate", "--help", cwd=tmp_path)

    assert code == 0
    assert "I2V_S3_ACCESS_KEY" in out and "I2V_S3_SECRET_KEY" in out


@pytest.mark.parametrize(
    ("size", "nearest"), [("300x200", "320x192"), ("1000x500", "1024x512"), ("10x4000", "64x2048")]
)
def test_a_bad_resolution_suggests_the_nearest_valid_one(size: str, nearest: str, tmp_path: Path) -> None:
    code, lines, _ = i2v("generate", str(HARBOR), "--resolution", size, cwd=tmp_path)

    one_error(code, lines, "multiples of 64", f"nearest valid size is {nearest}", exit_code=2)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("a_folder", "is a folder"),
        ("missing/out.mp4", "does not exist"),
        ("notes.txt/out.mp4", "is not a folder"),
        ("/sys/out.mp4", "cannot write there"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_stack_starts(
    output: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "notes.txt").write_text("eggs")

    code, lines, _ = i2v("generate", str(HARBOR), "-o", output, cwd=tmp_path)

    one_error(code, lines, f"-o {output}", expected, exit_code=2)  # the only line: the stack never started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "notes.txt"]


# --- a running stack, found from its state folder -------------------------------------------------


async def _publish_history(url: str, finished: JobSpec, running: JobSpec) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        for event in (completed(finished, 16), StageStarted(job_id=running.job_id, stage=Stage.LATENT)):
            where = route(event)
            await js.publish(where.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": where.msg_id})
    finally:
        await nc.close()


@pytest.mark.integration
async def test_commands_find_the_running_stack_from_its_state_folder(
    tmp_path: Path, nats_server: NatsServer, seaweed: SeaweedS3
) -> None:
    """What `i2v stack up` leaves in .i2v is enough: no exported variable, no flag. The ledger is the one
    the stack's services use (here a DSN of its own, as I2V_LEDGER_DSN in the stack's shell would give)."""
    state = tmp_path / ".i2v"
    state.mkdir()
    books = tmp_path / "books" / "ledger.sqlite3"
    open_ledger(str(books)).create_account("local", 1000)
    write_stack_file(
        state,
        {
            "I2V_NATS_URL": nats_server.url,
            "I2V_S3_ENDPOINT": seaweed.endpoint,
            "I2V_S3_ACCESS_KEY": seaweed.access_key,
            "I2V_S3_SECRET_KEY": seaweed.secret_key,
            "I2V_STATE_DIR": str(state),
            "I2V_LEDGER_DSN": str(books),
        },
    )
    params = GenerationParams(duration=2, fps=8, seed=1)
    finished = JobSpec(job_id=f"jdone{time.time_ns()}", account="local", params=params)
    running = JobSpec(job_id=f"jrun{time.time_ns()}", account="local", params=params)
    await _publish_history(nats_server.url, finished, running)

    code, lines, out = i2v("jobs", "show", finished.job_id, cwd=tmp_path)
    assert code == 0, lines
    assert "status:    succeeded" in out.splitlines()

    code, lines, _ = i2v("jobs", "cancel", finished.job_id, cwd=tmp_path)
    one_error(code, lines, f"job {finished.job_id} already ended (completed)")

    code, lines, out = i2v("jobs", "cancel", running.job_id, cwd=tmp_path)
    assert code == 0, lines
    assert f"cancel requested for job {running.job_id}" in out

    code, lines, _ = i2v("dlq", "list", cwd=tmp_path)
    assert code == 0, lines

    code, lines, out = i2v("accounts", "show", "local", cwd=tmp_path)
    assert code == 0, lines
    assert "account local: balance 1000 points" in out

    # A flag still wins over the folder: another state folder has no stack.
    code, lines, _ = i2v("jobs", "show", finished.job_id, "--state-dir", str(tmp_path / "other"), cwd=tmp_path)
    one_error(code, lines, "no running stack found")
