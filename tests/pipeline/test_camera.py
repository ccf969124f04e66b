"""Camera motion from the motion prompt: parsing (English and Chinese), the eased path, and the warp
measured on real pictures (zoom, pan, roll), with no border ever showing."""

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from pipeline.camera import (
    CameraMove,
    CameraPath,
    Move,
    apply_camera,
    camera_path,
    crop_zoom,
    parse_motion_prompt,
    view_matrices,
)
from tests.pipeline.pictures import MAGENTA, Frames, harbor, warped_with_magenta_border

FRAMES = 25
COMMA = "\uff0c"  # the full-width comma Chinese text uses


def still_clip(image: Frames, count: int = FRAMES) -> Frames:
    return np.repeat(image[None], count, axis=0)


def grey(frame: Frames) -> NDArray[np.float32]:
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), dtype=np.float32)


def measured_similarity(first: Frames, last: Frames) -> NDArray[np.float64]:
    """2x3 map from ``first``'s pixels to ``last``'s: SIFT + RANSAC, refined by ECC on the whole image."""
    sift = cv2.SIFT.create()
    points_a, features_a = sift.detectAndCompute(cv2.cvtColor(first, cv2.COLOR_RGB2GRAY), None)
    points_b, features_b = sift.detectAndCompute(cv2.cvtColor(last, cv2.COLOR_RGB2GRAY), None)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(features_a, features_b, k=2)
    good = [m for m, second in pairs if m.distance < 0.75 * second.distance]
    source = np.array([points_a[m.queryIdx].pt for m in good], dtype=np.float32)
    target = np.array([points_b[m.trainIdx].pt for m in good], dtype=np.float32)
    rough, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=2.0)
    assert rough is not None, "no feature match between the first and the last frame"
    # ECC's warp takes the template's pixels (first) to the input's (last), as the rough fit does.
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-7)
    start = rough.astype(np.float32)
    _, refined = cv2.findTransformECC(grey(first), grey(last), start, cv2.MOTION_AFFINE, criteria, None)
    return np.asarray(refined, dtype=np.float64)


def scale_of(matrix: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.linalg.det(matrix[:, :2])))


# --- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "described"),
    [
        ("slow zoom in", "slow zoom in"),
        ("Zoom out", "medium zoom out"),
        ("fast pan left", "fast pan left"),
        ("pan to the right", "medium pan right"),
        ("tilt up", "medium tilt up"),
        ("gently tilt down", "slow tilt down"),
        ("roll clockwise", "medium roll clockwise"),
        ("quick counter-clockwise roll", "fast roll counterclockwise"),
        ("dolly in", "medium dolly in"),
        ("slow push in", "slow dolly in"),
        ("pull back", "medium dolly out"),
        ("orbit left", "medium orbit left"),
        ("arc right slowly", "slow orbit right"),
        ("rotate around the subject to the left", "medium orbit left"),
        ("pan from left to right", "medium pan right"),
        ("zoom", "medium zoom in"),
        ("slow zoom in, pan left", "slow zoom in, slow pan left"),
        ("slow zoom in then fast pan right", "slow zoom in, fast pan right"),
        ("zoom-in and tilting upward", "medium zoom in, medium tilt up"),
        ("camera drifts left", "medium pan left"),
    ],
)
def test_english_prompts_parse_to_moves(prompt: str, described: str) -> None:
    move = parse_motion_prompt(prompt)
    assert move.describe() == described
    assert move.unknown == ()


@pytest.mark.parametrize(
    ("chinese", "english"),
    [
        ("缓慢推进", "slow push in"),
        ("向左平移", "pan left"),
        ("镜头拉远", "zoom out"),
        ("推近", "dolly in"),
        ("拉近", "zoom in"),
        ("上摇", "tilt up"),
        ("下摇", "tilt down"),
        ("环绕", "orbit"),
        ("向左环绕", "orbit left"),
        ("旋转", "roll"),
        ("顺时针旋转", "roll clockwise"),
        ("逆时针旋转", "roll counterclockwise"),
        ("静止", "static"),
        ("快速向右平移", "fast pan right"),
        (f"镜头缓慢拉近{COMMA}向左平移", "slow zoom in, pan left"),
        ("缓缓地向上摇镜头", "slow tilt up"),
        ("从左向右平移", "pan from left to right"),
    ],
)
def test_chinese_prompts_parse_like_english(chinese: str, english: str) -> None:
    parsed = parse_motion_prompt(chinese)
    assert parsed == parse_motion_prompt(english)
    assert parsed.unknown == ()


def test_parsed_move_is_recorded_in_english_words() -> None:
    move = parse_motion_prompt(f"缓慢拉近{COMMA}向左平移")
    assert move.moves == (Move("zoom", "in", "slow"), Move("pan", "left", "slow"))
    assert move.words == ("slow", "zoom", "in", "slow", "pan", "left")


def test_each_clause_keeps_its_own_speed_and_the_first_speed_is_the_default() -> None:
    move = parse_motion_prompt("fast pan left, zoom in, slow roll clockwise")
    assert [m.speed for m in move.moves] == ["fast", "fast", "slow"]


def test_words_not_understood_are_reported_in_order() -> None:
    move = parse_motion_prompt("slow zoom in on the boat, waves crashing")
    assert move.describe() == "slow zoom in"
    assert move.unknown == ("boat", "waves", "crashing")
    chinese = parse_motion_prompt(f"海浪翻涌{COMMA}镜头缓慢推进{COMMA}树枝摇曳")
    assert chinese.describe() == "slow dolly in"
    assert chinese.unknown == ("海浪翻涌", "树枝", "摇曳")
    # A direction the move cannot take is reported, not guessed.
    assert parse_motion_prompt("tilt left").unknown == ("left",)
    assert parse_motion_prompt("waves").unknown == ("waves",)


@pytest.mark.parametrize("prompt", ["", "   ", "static", "still camera", "no camera movement", "静止", "镜头固定不动"])
def test_static_and_empty_prompts_give_no_move(prompt: str) -> None:
    move = parse_motion_prompt(prompt)
    assert move.is_static and move.words == ("static",) and move.unknown == ()


def test_a_move_that_cannot_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="pan cannot go 'in'"):
        Move("pan", "in")


# --- path ----------------------------------------------------------------------------------------


def test_static_path_is_identity_and_leaves_frames_bit_exact() -> None:
    frames = still_clip(harbor(), 5)
    path = camera_path(CameraMove(), 5)
    assert path.is_identity and crop_zoom(path, 768, 512) == 1.0
    out = apply_camera(frames, path)
    assert np.array_equal(out, frames) and not np.shares_memory(out, frames)
    assert camera_path(parse_motion_prompt("zoom in"), 1).is_identity


def test_path_eases_in_and_out_and_is_centred() -> None:
    path = camera_path(parse_motion_prompt("pan left, zoom in"), 48)
    for values in (np.log(path.scale), -path.dx):
        steps = np.diff(values)
        assert np.all(steps >= 0), "each move goes one way"
        assert max(abs(steps[0]), abs(steps[-1])) < 0.1 * steps.max(), "slow at both ends"
        assert np.argmax(steps) in range(18, 30), "fastest mid-clip"
    assert path.scale.min() == pytest.approx(1.0) and path.scale[-1] == pytest.approx(1.25, rel=2e-3)
    assert path.dx[0] == pytest.approx(-path.dx[-1]) and path.dx[0] - path.dx[-1] == pytest.approx(0.12, rel=2e-3)
    assert not path.dy.any() and not path.rotation.any()
    zoom_out = camera_path(parse_motion_prompt("zoom out"), 48)
    assert zoom_out.scale[0] == pytest.approx(1.25, rel=2e-3) and zoom_out.scale[-1] == pytest.approx(1.0)


def test_path_and_frame_count_are_checked() -> None:
    with pytest.raises(ValueError, match="frame_count"):
        camera_path(CameraMove(), 0)
    with pytest.raises(ValueError, match="one length"):
        CameraPath(np.ones(3), np.zeros(2), np.zeros(3), np.zeros(3))
    path = camera_path(parse_motion_prompt("zoom in"), 4)
    with pytest.raises(ValueError, match="5 frames but the camera path has 4"):
        apply_camera(still_clip(harbor(), 5), path)
    with pytest.raises(ValueError, match="uint8"):
        apply_camera(still_clip(harbor(), 4).astype(np.float32), path)


# --- warp, measured on real pictures ------------------------------------------------------------


def test_slow_zoom_in_measures_as_recorded(picture: Frames) -> None:
    path = camera_path(parse_motion_prompt("slow zoom in"), FRAMES)
    out = apply_camera(still_clip(picture), path)
    assert out.shape == (FRAMES, *picture.shape) and out.dtype == np.uint8
    recorded = path.scale[-1] / path.scale[0]
    assert recorded == pytest.approx(1.12, rel=2e-3)
    measured = scale_of(measured_similarity(out[0], out[-1]))
    assert measured == pytest.approx(recorded, rel=1e-3)


def test_pan_left_moves_the_content_right_and_tilt_up_moves_it_down(picture: Frames) -> None:
    height, width = picture.shape[:2]
    for prompt, axis, sign in (("pan left", 0, 1.0), ("tilt up", 1, 1.0), ("pan right", 0, -1.0)):
        path = camera_path(parse_motion_prompt(prompt), 9)
        out = apply_camera(still_clip(picture, 9), path)
        matrix = measured_similarity(out[0], out[-1])
        assert scale_of(matrix) == pytest.approx(1.0, abs=1e-3), prompt
        shift_x, shift_y = matrix[:, 2]
        along, across = (shift_x, shift_y) if axis == 0 else (shift_y, shift_x)
        offsets = path.dx if axis == 0 else path.dy
        side = width if axis == 0 else height
        expected = -(offsets[-1] - offsets[0]) * side * crop_zoom(path, width, height)
        assert sign * along > 0, f"{prompt}: content moved the wrong way"
        assert along == pytest.approx(expected, abs=0.3), prompt
        assert abs(across) < 0.5, prompt


def test_roll_clockwise_turns_the_content_counter_clockwise_by_the_recorded_angle() -> None:
    path = camera_path(parse_motion_prompt("roll clockwise"), 9)
    out = apply_camera(still_clip(harbor(), 9), path)
    matrix = measured_similarity(out[0], out[-1])
    # y points down: a negative angle here is a counter-clockwise turn on screen.
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    assert angle == pytest.approx(-(path.rotation[-1] - path.rotation[0]), abs=0.02)
    assert angle < 0


BORDER_PROMPTS = [
    "fast zoom out",
    "fast pan left",
    "fast tilt down",
    "fast roll counterclockwise",
    "fast orbit right",
    "fast zoom out, fast pan right, fast tilt up, fast roll clockwise",
    "slow dolly out, orbit left",
]


@pytest.mark.parametrize("prompt", BORDER_PROMPTS)
def test_every_output_pixel_is_sampled_from_inside_its_frame(prompt: str) -> None:
    # Each pixel of this picture spells its own coordinates, so the output shows where it was sampled:
    # a reflected or padded border would break the exact linear map below.
    width, height, count = 240, 160, 13
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    coordinates = np.stack([xs, ys, np.full_like(xs, 255)], axis=-1).astype(np.uint8)
    path = camera_path(parse_motion_prompt(prompt), count)
    out = apply_camera(still_clip(coordinates, count), path)
    matrices = view_matrices(path, width, height)
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    for k in range(count):
        source = matrices[k] @ pixels
        assert source[0].min() >= 0 and source[0].max() <= width - 1, f"frame {k} samples outside in x"
        assert source[1].min() >= 0 and source[1].max() <= height - 1, f"frame {k} samples outside in y"
        assert np.abs(out[k, :, :, 0].ravel() - source[0]).max() <= 1.0, f"frame {k}: x is not the planned map"
        assert np.abs(out[k, :, :, 1].ravel() - source[1]).max() <= 1.0, f"frame {k}: y is not the planned map"


@pytest.mark.parametrize("prompt", BORDER_PROMPTS)
def test_no_border_colour_shows_on_the_real_picture(prompt: str) -> None:
    # The same warp with a magenta border instead of the reflecting safety net gives the same bytes:
    # no output pixel took anything from outside the frame.
    frames = still_clip(harbor(), 9)
    height, width = frames.shape[1:3]
    path = camera_path(parse_motion_prompt(prompt), 9)
    out = apply_camera(frames, path)
    for k, matrix in enumerate(view_matrices(path, width, height)):
        assert np.array_equal(out[k], warped_with_magenta_border(frames[k], matrix)), f"frame {k}"
        assert not np.any(np.all(out[k] == MAGENTA, axis=-1))


def test_camera_warp_is_deterministic() -> None:
    frames = still_clip(harbor(), 6)
    path = camera_path(parse_motion_prompt("slow zoom in, pan left"), 6)
    assert np.array_equal(apply_camera(frames, path), apply_camera(frames, path))
