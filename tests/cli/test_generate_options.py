"""`i2v generate` with issue 9's options, as a user runs it: a process of its own, the embedded stack."""

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.camera import apply_camera, camera_path, parse_motion_prompt
from pipeline.video import probe_video
from tests.stacks import HARBOR, run_generate


def test_the_still_model_moves_the_real_picture_into_a_webm_named_by_the_output(tmp_path: Path) -> None:
    out = tmp_path / "harbor.webm"
    prompt = "slow zoom in, pan left, wobble"
    env = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    options = ["--model", "still", "--motion-prompt", prompt, "--duration", "2", "--fps", "8", "--seed", "5"]
    state = ["--quality", "medium", "--state-dir", str(tmp_path / "state")]
    result = run_generate(out, *options, *state, env=env)
    assert "camera    slow zoom in, slow pan left  (not understood: wobble)" in result.stdout
    assert "price     12 points" in result.stdout  # one step per frame: 8 + ceil(960 x 640 x 16 / 2,457,600)

    info = probe_video(out.read_bytes())
    assert (info.format.value, info.codec, info.frame_count, info.fps) == ("webm", "vp9", 16, Fraction(8))
    assert info.metadata["seed"] == "5" and '"model":"still"' in info.metadata["params"]
    # The real picture, moved by the recorded camera path: frames match it up to VP9's loss.
    picture = np.asarray(Image.open(HARBOR).convert("RGB").resize((info.width, info.height), Image.Resampling.LANCZOS))
    expected = apply_camera(np.repeat(picture[None], 16, axis=0), camera_path(parse_motion_prompt(prompt), 16))
    first, last = info_frames(out)[[0, -1]]
    for got, want in ((first, expected[0]), (last, expected[-1])):
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 6  # the camera did move


def info_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
