"""`i2v stack up` in the foreground, then `i2v generate --nats --s3` against it with a checkpoint *folder*
(the real loading code: the tiny model saved with save_pretrained), then Ctrl-C stops everything."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from pipeline.models import build_tiny_svd
from tests.stacks import ROOT, run_generate

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_stack_up_serves_generate_from_a_checkpoint_folder_and_stops_cleanly(tmp_path: Path) -> None:
    checkpoint = tmp_path / "svd-tiny-folder"
    build_tiny_svd().save_pretrained(checkpoint)
    state = tmp_path / "state"
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "stack", "up", "--state-dir", str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env = dict(os.environ)
    lines: list[str] = []
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 180
        for line in up.stdout:
            lines.append(line.rstrip())
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                env[key] = value
            if line.startswith("stack up"):
                break
            assert time.monotonic() < deadline, lines
        assert {"I2V_NATS_URL", "I2V_S3_ENDPOINT", "I2V_S3_ACCESS_KEY", "I2V_S3_SECRET_KEY"} <= env.keys(), lines

        out = tmp_path / "folder.mp4"
        run_generate(
            out,
            "--nats",
            env["I2V_NATS_URL"],
            "--s3",
            env["I2V_S3_ENDPOINT"],
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
            env=env,
        )
        with av.open(str(out)) as container:
            assert len(list(container.decode(video=0))) == 8
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
        lines += rest.splitlines()
    assert up.returncode == 0, lines[-20:]
    assert "stopped" in lines
