"""`i2v interpolate` as a user runs it: a process of its own, real pictures, no stack."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.interpolate import interpolate_to_count
from pipeline.rife import WEIGHTS_FILE, load_rife, rife_to_count
from pipeline.video import encode_video, probe_video
from tests.pipeline.test_rife import published_shapes, random_state

ROOT = Path(__file__).resolve().parents[2]
HARBOR = ROOT / "examples" / "harbor.png"


def i2v(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """Two real 160x96 views of the harbor, the second 6 px further right: (first, second, both)."""
    picture = np.asarray(Image.open(HARBOR).convert("RGB"))
    frames = np.stack([picture[256:352, 192:352], picture[256:352, 198:358]])
    folder = tmp_path_factory.mktemp("pair")
    paths = (folder / "a.png", folder / "b.png")
    for path, frame in zip(paths, frames, strict=True):
        Image.fromarray(frame).save(path)
    return paths[0], paths[1], frames


def pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]


def test_count_3_on_two_images_gives_the_middle_png_at_half_time(
    pair: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    first, second, frames = pair
    out = tmp_path / "frames"
    result = i2v("interpolate", str(first), str(second), "-o", f"{out}/", "--count", "3")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    got = pngs(out)
    assert np.array_equal(got[0], frames[0]) and np.array_equal(got[2], frames[1])
    assert np.array_equal(got[1], interpolate_to_count(frames, 3)[1])
    # Half-way: a flow warp, not either input and not a blend of them.
    blend = (frames[0].astype(int) + frames[1].astype(int)) / 2
    assert np.abs(got[1] - blend).mean() > 1.0
    assert not np.array_equal(got[1], frames[0]) and not np.array_equal(got[1], frames[1])


def test_rife_with_a_path_uses_those_weights(pair: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    first, second, frames = pair
    torch.save(random_state(published_shapes()), tmp_path / WEIGHTS_FILE)
    out = tmp_path / "rife"
    result = i2v(
        "interpolate", str(first), str(second), "-o", f"{out}/", "--count", "3", "--interpolator", f"rife:{tmp_path}"
    )

    assert result.returncode == 0, result.stderr
    assert np.array_equal(pngs(out)[1], rife_to_count(frames, 3, load_rife(tmp_path, "cpu"))[1])


def test_a_video_to_a_higher_rate_keeps_its_duration(pair: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    _, _, frames = pair
    clip = interpolate_to_count(frames, 8)
    source = tmp_path / "in.mp4"
    source.write_bytes(encode_video(clip, 8))
    out = tmp_path / "out.gif"

    result = i2v("interpolate", str(source), "-o", str(out), "--fps", "16")

    assert result.returncode == 0, result.stderr
    info = probe_video(out.read_bytes())
    assert (info.format.value, info.frame_count) == ("gif", 16)
    assert "16 frames at 16 fps" in result.stdout


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["{a}", "-o", "{tmp}/x/"], "one image"),
        (["{a}", "{b}", "-o", "{tmp}/out.mov"], "end it in .mp4"),
        (["{a}", "{b}", "-o", "{tmp}/x/", "--interpolator", "rife"], "I2V_RIFE_WEIGHTS"),
        (["{a}", "{b}", "-o", "{tmp}/x/", "--interpolator", "rife:{tmp}/none.pkl"], "none.pkl"),
        (["{a}", "{b}", "-o", "{tmp}/x/", "--interpolator", "farneback"], "--interpolator"),
        (["{a}", "{tmp}/missing.png", "-o", "{tmp}/x/"], "no such file"),
        (["{a}", "{b}", "-o", "{tmp}/x/", "--count", "3", "--fps", "4"], "not allowed with"),
    ],
)
def test_bad_invocations_get_one_line(
    args: list[str], expect: str, pair: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    first, second, _ = pair
    env = {k: v for k, v in __import__("os").environ.items() if k != "I2V_RIFE_WEIGHTS"}
    filled = [a.format(a=first, b=second, tmp=tmp_path) for a in args]
    result = i2v("interpolate", *filled, env=env)

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0], lines
