"""`i2v generate --variations N`: N jobs of consecutive seeds through the embedded stack, N videos."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.video import probe_video
from tests.stacks import HARBOR, ROOT, run_generate


@pytest.mark.slow
@pytest.mark.integration
def test_two_variations_write_two_videos_of_consecutive_seeds(tmp_path: Path) -> None:
    out = tmp_path / "harbor.mp4"
    env = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    options = ["--model", "still", "--duration", "1", "--fps", "8", "--seed", "41", "--variations", "2"]
    result = run_generate(out, *options, "--state-dir", str(tmp_path / "state"), env=env)
    second = tmp_path / "harbor-2.mp4"
    seeds = [probe_video(path.read_bytes()).metadata["seed"] for path in (out, second)]
    assert seeds == ["41", "42"]
    assert result.stdout.count("price     ") == 2  # each job charged on its own
    assert f"video     {second.resolve()}" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["harbor-2.mp4", "harbor.mp4"]


def test_a_count_out_of_range_is_one_line(tmp_path: Path) -> None:
    for value in ("0", "5", "x"):
        result = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "generate", str(HARBOR), "--variations", value],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert "--variations" in lines[-1], result.stderr
