"""Bad input through the CLI: one line naming the problem, a non-zero exit, no traceback, no stack started."""

import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.main import main
from tests.pipeline.bad_images import bad_image_corpus

ROOT = Path(__file__).resolve().parents[2]
HARBOR = ROOT / "examples" / "harbor.png"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals (a non-number for an int option)
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("text_file", "not an image"),
        ("truncated_jpeg", "truncated"),
        ("png_30000", "30000x30000"),
        ("still_gif", "GIF"),
        ("animated_gif", "GIF"),
        ("zero_bytes", "empty"),
    ],
)
def test_bad_images_get_one_line(case: str, expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, code = bad_image_corpus()[case]
    assert code is not None
    image = _write(tmp_path, "photo.png", data)
    status, lines = _run(["generate", str(image), "-o", str(tmp_path / "out.mp4")], capsys)
    assert status != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("i2v: error:")
    assert expect.lower() in lines[0].lower()
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--fps", "0"], "--fps"),
        (["--duration", "99"], "--duration"),
        (["--motion-bucket-id", "300"], "--motion-bucket-id"),
        (["--cfg-scale", "9"], "--cfg-scale"),
        (["--resolution", "1000x500"], "--resolution"),
        (["--model", "/nowhere/svd-xt"], "I2V_MODEL"),
        (["--fps", "many"], "--fps"),
        (["--interpolator", "flowframes"], "--interpolator"),
        (["--loop", "boomerang"], "--loop"),
        (["--format", "mov"], "--format"),
        (["--format", "webm"], "writes a .webm file"),
        (["--quality", "ultra"], "--quality"),
        (["--min-cfg", "3", "--cfg-scale", "2"], "--min-cfg"),
        (["--fps-conditioning", "0"], "--fps-conditioning"),
    ],
)
def test_bad_options_get_one_line(
    args: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = _run(["generate", str(HARBOR), "-o", str(tmp_path / "out.mp4"), *args], capsys)
    assert status != 0
    assert len(lines) == 1, lines
    assert expect in lines[0]


def test_rife_without_weights_is_refused_before_the_stack_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("I2V_RIFE_WEIGHTS", raising=False)
    status, lines = _run(["generate", str(HARBOR), "-o", str(tmp_path / "out.mp4"), "--interpolator", "rife"], capsys)
    assert status == 2
    assert lines == ["i2v: error: --interpolator rife: set I2V_RIFE_WEIGHTS to RIFE's flownet.pkl (or its folder)"]


def test_an_output_without_a_video_extension_asks_for_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _run(["generate", str(HARBOR), "-o", str(tmp_path / "out.mov")], capsys)
    assert status == 2
    assert len(lines) == 1 and "cannot tell the format" in lines[0] and "--format" in lines[0]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _run(["generate", str(tmp_path / "nope.jpg")], capsys)
    assert status == 2
    assert lines == [f"i2v: error: {tmp_path / 'nope.jpg'}: no such file"]


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    image = _write(tmp_path, "notes.jpg", b"shopping list: eggs, milk\n")
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "generate", str(image), "--fps", "8"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not an image" in lines[0]
