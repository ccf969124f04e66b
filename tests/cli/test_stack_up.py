"""`i2v stack up` in the foreground in a folder of its own; the other commands find it from ./.i2v with no
exported variable; `i2v generate --nats --s3` against it with a checkpoint *folder* (the real loading code:
the tiny model saved with save_pretrained); then Ctrl-C stops everything and the stack's file is gone."""

import stat
import subprocess
from pathlib import Path

import av
import pytest

from pipeline.models import build_tiny_svd
from services.stack.state_file import read_stack_file, stack_file
from tests.stacks import I2V, clean_env, run_generate, stack_up

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_stack_up_serves_the_other_commands_and_generate_then_stops_cleanly(tmp_path: Path) -> None:
    checkpoint = tmp_path / "svd-tiny-folder"
    build_tiny_svd().save_pretrained(checkpoint)
    clean = clean_env()

    def i2v(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(I2V), *argv], cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=120)

    state = tmp_path / ".i2v"
    with stack_up(tmp_path, env=clean) as lines:
        settings = read_stack_file(state)
        assert settings is not None, lines
        assert {"I2V_NATS_URL", "I2V_S3_ENDPOINT", "I2V_S3_ACCESS_KEY", "I2V_S3_SECRET_KEY"} <= settings.keys()
        # The commands connect to NATS as the client user, never anonymously.
        assert settings["I2V_NATS_USER"] == "client" and settings["I2V_NATS_PASSWORD"]
        assert stat.S_IMODE(stack_file(state).stat().st_mode) == 0o600

        listed = i2v("dlq", "list")
        assert (listed.returncode, listed.stdout.strip()) == (0, "no dead letters"), listed.stderr
        shown = i2v("accounts", "show", "local")
        assert shown.returncode == 0, shown.stderr
        assert "account local: balance 1000 points" in shown.stdout

        out = tmp_path / "folder.mp4"
        run_generate(
            out,
            "--nats",
            settings["I2V_NATS_URL"],
            "--s3",
            settings["I2V_S3_ENDPOINT"],
            "--model",
            str(checkpoint),
            "--resolution",
            "256x192",
            "--steps",
            "3",
            "--duration",
            "1",
            "--fps",
            "8",
            "--seed",
            "9",
            env={**clean, **settings},  # as `set -a; . .i2v/stack.env` gives a shell
        )
        with av.open(str(out)) as container:
            assert len(list(container.decode(video=0))) == 8
    assert not stack_file(state).exists()
    # Secrets stay in the owner-only file: not on the console (a stack.log), not in any log of the state folder.
    secrets = {settings["I2V_S3_SECRET_KEY"], settings["I2V_NATS_PASSWORD"]}
    assert not [line for line in lines if any(secret in line for secret in secrets)]
    assert any(line.startswith("export I2V_NATS_URL=") for line in lines), lines
    logs = list(state.rglob("*.log"))
    assert logs
    assert not [log for log in logs if any(secret in log.read_text(errors="replace") for secret in secrets)]
    # Every service, the gateway and the commands did their work within their NATS permissions.
    refused = [line for line in (state / "nats" / "nats-server.log").read_text().splitlines() if "Violation" in line]
    assert not refused, refused[:5]
    assert stat.S_IMODE((state / "credentials" / "nats.json").stat().st_mode) == 0o600
