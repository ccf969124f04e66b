"""RIFE 4.25: strict loading of a file in the published flownet.pkl layout, shapes, time, exact counts.

The state dict here is written from an explicit list of the published keys and shapes (not from our
modules), filled with seeded random values, so these tests catch a module or parameter that drifts
from the published file.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from pipeline.rife import (
    WEIGHTS_FILE,
    RifeModel,
    RifeWeightsError,
    default_rife_dtype,
    find_rife_weights,
    load_rife,
    rife_from_state_dict,
    rife_to_count,
)
from pipeline.rife_net import backward_warp, pixel_grid

State = dict[str, torch.Tensor]

BLOCK_WIDTHS = (192, 128, 96, 64, 32)
ENCODED = 4  # feature channels per frame from the encoder
FIRST_BLOCK_IN = 3 + 3 + 2 * ENCODED + 1  # both frames, both feature maps, the time plane
LATER_BLOCK_IN = 3 + 3 + 2 * ENCODED + 1 + 1 + 8 + 4  # warped ones, time, blend logit, 8 features, flow
BLOCK_OUT = 4 * 13  # 13 channels (4 flow, 1 logit, 8 features) before a 2x pixel shuffle


def flow_block_shapes(prefix: str, inputs: int, width: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {
        f"{prefix}.conv0.0.0.weight": (width // 2, inputs, 3, 3),
        f"{prefix}.conv0.0.0.bias": (width // 2,),
        f"{prefix}.conv0.1.0.weight": (width, width // 2, 3, 3),
        f"{prefix}.conv0.1.0.bias": (width,),
    }
    for r in range(8):
        shapes[f"{prefix}.convblock.{r}.beta"] = (1, width, 1, 1)
        shapes[f"{prefix}.convblock.{r}.conv.weight"] = (width, width, 3, 3)
        shapes[f"{prefix}.convblock.{r}.conv.bias"] = (width,)
    shapes[f"{prefix}.lastconv.0.weight"] = (width, BLOCK_OUT, 4, 4)  # ConvTranspose2d: (in, out, k, k)
    shapes[f"{prefix}.lastconv.0.bias"] = (BLOCK_OUT,)
    return shapes


def published_shapes(training_heads: bool = True) -> dict[str, tuple[int, ...]]:
    """Every key of Practical-RIFE 4.25's flownet.pkl and its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, width in enumerate(BLOCK_WIDTHS):
        shapes |= flow_block_shapes(f"module.block{i}", FIRST_BLOCK_IN if i == 0 else LATER_BLOCK_IN, width)
    shapes |= {
        "module.encode.cnn0.weight": (16, 3, 3, 3),
        "module.encode.cnn0.bias": (16,),
        "module.encode.cnn1.weight": (16, 16, 3, 3),
        "module.encode.cnn1.bias": (16,),
        "module.encode.cnn2.weight": (16, 16, 3, 3),
        "module.encode.cnn2.bias": (16,),
        "module.encode.cnn3.weight": (16, ENCODED, 4, 4),
        "module.encode.cnn3.bias": (ENCODED,),
    }
    if training_heads:
        # The published file still holds the training-time distillation teacher and time estimator.
        shapes |= flow_block_shapes("module.teacher", LATER_BLOCK_IN + 3, 64)  # also sees the ground truth
        for index, (out, inputs) in zip(
            (0, 2, 4, 6, 8), ((32, 17), (64, 32), (64, 64), (64, 64), (1, 64)), strict=True
        ):
            shapes[f"module.caltime.{index}.weight"] = (out, inputs, 3, 3)
            shapes[f"module.caltime.{index}.bias"] = (out,)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 425) -> State:
    """Seeded values at about PyTorch's default init scale, so activations stay in a sane range."""
    generator = torch.Generator().manual_seed(seed)
    state: State = {}
    for key, shape in shapes.items():
        scale = float(np.prod(shape[1:])) ** -0.5 if len(shape) > 1 else 0.1
        state[key] = torch.randn(shape, generator=generator) * scale
    return state


@pytest.fixture(scope="module")
def published() -> State:
    return random_state(published_shapes())


@pytest.fixture(scope="module")
def weights_dir(published: State, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rife")
    torch.save(published, folder / WEIGHTS_FILE)
    return folder


@pytest.fixture(scope="module")
def model(weights_dir: Path) -> RifeModel:
    return load_rife(weights_dir / WEIGHTS_FILE, "cpu")


def frames_pair(height: int = 48, width: int = 64, shift: int = 4) -> NDArray[np.uint8]:
    first = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.stack([first, np.roll(first, shift, axis=1)])


def mean_difference(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def saved(tmp_path: Path, state: object) -> Path:
    path = tmp_path / WEIGHTS_FILE
    torch.save(state, path)
    return path


def assert_one_line_error(call: Callable[[], object], *needles: str) -> None:
    with pytest.raises(RifeWeightsError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


# Loading


def test_published_layout_loads_from_the_file_or_its_folder(weights_dir: Path, published: State) -> None:
    from_file = load_rife(weights_dir / WEIGHTS_FILE, "cpu")
    from_folder = load_rife(weights_dir, torch.device("cpu"), torch.float32)
    for loaded in (from_file, from_folder):
        assert loaded.layout.name == "4.25" and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
        params = loaded.net.state_dict()
        assert len(params) == 158  # the file's keys less the 40 of the training-only heads
        for key, value in params.items():
            assert torch.equal(value, published[f"module.{key}"]), key
    assert find_rife_weights(weights_dir) == weights_dir / WEIGHTS_FILE


def test_a_file_without_the_training_heads_loads_too(tmp_path: Path) -> None:
    loaded = load_rife(saved(tmp_path, random_state(published_shapes(training_heads=False))), "cpu")
    assert loaded.layout.name == "4.25"


def test_weights_are_cast_to_the_asked_dtype(tmp_path: Path, published: State) -> None:
    halves = {key: value.half() for key, value in published.items()}
    loaded = load_rife(saved(tmp_path, halves), "cpu", torch.float32)
    assert {p.dtype for p in loaded.net.parameters()} == {torch.float32}
    assert default_rife_dtype("cuda") == torch.float16 and default_rife_dtype("cpu") == torch.float32


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (lambda s: s.pop("module.block4.lastconv.0.bias"), ("missing key module.block4.lastconv.0.bias",)),
        (
            lambda s: s.update({"module.block5.conv0.0.0.weight": torch.zeros(16, 28, 3, 3)}),
            ("unexpected key module.block5.conv0.0.0.weight",),
        ),
        (
            lambda s: s.update({"module.block2.convblock.3.conv.weight": torch.zeros(96, 96, 3, 1)}),
            ("module.block2.convblock.3.conv.weight", "(96, 96, 3, 1)", "(96, 96, 3, 3)"),
        ),
        (
            lambda s: s.update({"module.encode.cnn0.bias": torch.zeros(16, dtype=torch.int64)}),
            ("module.encode.cnn0.bias", "torch.int64"),
        ),
        (lambda s: s.update({"module.encode.cnn1.bias": [0.0] * 16}), ("module.encode.cnn1.bias", "list")),
    ],
    ids=["missing", "unexpected", "misshapen", "integer", "not-a-tensor"],
)
def test_strict_loading_names_the_offending_key(
    tmp_path: Path, published: State, change: Callable[[dict[str, object]], object], needles: tuple[str, ...]
) -> None:
    state: dict[str, object] = dict(published)
    change(state)
    path = saved(tmp_path, state)
    assert_one_line_error(lambda: load_rife(path, "cpu"), str(path), "layout 4.25", *needles)


def test_keys_without_the_module_prefix_are_refused_with_a_hint(tmp_path: Path, published: State) -> None:
    bare = {key.removeprefix("module."): value for key, value in published.items()}
    path = saved(tmp_path, bare)
    assert_one_line_error(lambda: load_rife(path, "cpu"), "unexpected key block0.conv0.0.0.weight", "'module.'")


def test_a_file_of_another_layout_says_which_it_fits(weights_dir: Path) -> None:
    assert_one_line_error(
        lambda: load_rife(weights_dir, "cpu", layout="4.25.heavy"),
        "do not fit layout 4.25.heavy",
        "module.block0.conv0.0.0.weight",
        "(the file fits layout 4.25 / 4.26)",
    )
    with pytest.raises(ValueError, match=r"layout must be one of 4\.25, 4\.26"):
        load_rife(weights_dir, "cpu", layout="4.24")


def test_absent_or_unreadable_weights_are_one_line_errors(tmp_path: Path) -> None:
    assert issubclass(RifeWeightsError, ValueError)
    assert_one_line_error(lambda: load_rife(tmp_path / "nowhere.pkl", "cpu"), "not found", "nowhere.pkl")
    assert_one_line_error(lambda: load_rife(tmp_path, "cpu"), "has no flownet.pkl")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a torch file\n" * 10)
    assert_one_line_error(lambda: load_rife(garbage, "cpu"), "garbage.pkl", "not a readable torch file")
    listed = tmp_path / "list.pkl"
    torch.save([torch.zeros(1)], listed)
    assert_one_line_error(lambda: load_rife(listed, "cpu"), "hold a list, not a state dict")


# Inference


def test_flow_points_from_each_output_pixel_to_where_it_samples() -> None:
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    flow = torch.zeros(2, 2, 4, 5)
    flow[0, 0] = 1.0  # one pixel right
    flow[1, 1] = -1.0  # one pixel up
    warped = backward_warp(image, flow, pixel_grid(4, 5, torch.device("cpu")))
    torch.testing.assert_close(warped[0, :, :, :-1], image[0, :, :, 1:])
    torch.testing.assert_close(warped[0, :, :, -1], image[0, :, :, -1])  # edges repeat
    torch.testing.assert_close(warped[1, :, 1:], image[1, :, :-1])


def test_odd_sizes_are_padded_to_64_and_cropped_back(model: RifeModel) -> None:
    for height, width in ((75, 100), (9, 17)):
        pair = frames_pair(height, width)
        middle = model.interpolate(pair[0], pair[1], 0.5)
        assert middle.shape == (height, width, 3) and middle.dtype == np.uint8
        assert model._canvas(height, width).grid.shape == (1, 2, -(-height // 64) * 64, -(-width // 64) * 64)
    assert rife_to_count(frames_pair(75, 100), 3, model).shape == (3, 75, 100, 3)


def test_time_is_an_input_with_no_special_case_at_the_ends(model: RifeModel) -> None:
    """What the architecture gives at t=0 and t=1: with untrained weights, not the native frames.

    The time plane is one more input channel to every flow block, so t=0 and t=1 give different
    frames, but nothing in the network returns frame0 at t=0; only training teaches that.
    """
    first, second = frames_pair()
    at_start, at_end = model.interpolate(first, second, 0), model.interpolate(first, second, 1.0)
    assert not np.array_equal(at_start, at_end)
    assert mean_difference(at_start, first) > 10 and mean_difference(at_end, second) > 10


def test_with_no_flow_and_an_even_logit_every_time_is_the_average(published: State) -> None:
    """Zero the blocks' last convolutions: flows stay 0 and the blend logit 0, so any t gives the mean."""
    still = {key: torch.zeros_like(v) if ".lastconv." in key else v for key, v in published.items()}
    neutral = rife_from_state_dict(still, "cpu", torch.float32)
    first, second = frames_pair()
    mean = (first.astype(np.float64) + second) / 2
    for t in (0.0, 0.3, 1.0):
        assert np.abs(neutral.interpolate(first, second, t) - mean).max() <= 0.5 + 1e-6


def test_a_still_uniform_frame_comes_back_unchanged(model: RifeModel) -> None:
    # 128x64 needs no padding: warps clamp to the border, so any flow samples the same colour.
    grey = np.full((64, 128, 3), (77, 140, 201), dtype=np.uint8)
    for t in (0.0, 0.5, 1.0):
        assert np.array_equal(model.interpolate(grey, grey, t), grey)


@pytest.mark.parametrize(("n", "count"), [(2, 2), (2, 4), (3, 7), (4, 3), (5, 5), (1, 4), (3, 1)])
def test_exact_count_and_native_frames_at_whole_positions(model: RifeModel, n: int, count: int) -> None:
    frames = np.random.default_rng(n * 10 + count).integers(0, 256, (n, 40, 56, 3), dtype=np.uint8)
    out = rife_to_count(frames, count, model)
    assert out.shape == (count, 40, 56, 3) and out.dtype == np.uint8
    for k in range(count):
        index, remainder = divmod(k * (n - 1), max(count - 1, 1))
        if remainder == 0:
            assert np.array_equal(out[k], frames[index]), f"frame {k} should be native frame {index}"


def test_in_between_frames_sit_at_the_mapped_times(model: RifeModel) -> None:
    frames = np.concatenate([frames_pair(), frames_pair(shift=-3)[1:]])  # 3 frames; output k at time k/2
    out = rife_to_count(frames, 5, model, batch_size=1)
    assert np.array_equal(out[1], model.interpolate(frames[0], frames[1], 0.5))
    assert np.array_equal(out[3], model.interpolate(frames[1], frames[2], 0.5))
    batched = rife_to_count(frames, 5, model, batch_size=3)
    assert np.abs(batched.astype(np.int32) - out).max() <= 1


def test_fp16_runs_and_stays_close_to_fp32(published: State, model: RifeModel) -> None:
    # The CUDA default; CPUs run fp16 convolutions too, slowly, which is enough to check the plumbing.
    half = rife_from_state_dict(published, "cpu", torch.float16)
    assert {p.dtype for p in half.net.parameters()} == {torch.float16}
    first, second = frames_pair()
    assert mean_difference(half.interpolate(first, second, 0.5), model.interpolate(first, second, 0.5)) < 0.5


def test_bad_inputs_are_named(model: RifeModel) -> None:
    first, second = frames_pair()
    with pytest.raises(ValueError, match="timestep must be within"):
        model.interpolate(first, second, 1.5)
    with pytest.raises(TypeError, match="timestep must be a number"):
        model.interpolate(first, second, True)
    with pytest.raises(ValueError, match="same shape"):
        model.interpolate(first, second[:, :32], 0.5)
    with pytest.raises(ValueError, match="frame0 must be uint8"):
        model.interpolate(first.astype(np.float32), second, 0.5)
    with pytest.raises(ValueError, match="count must be at least 1"):
        rife_to_count(frames_pair(), 0, model)
    with pytest.raises(ValueError, match=r"frames must have shape \(n, H, W, 3\)"):
        rife_to_count(first, 3, model)
    with pytest.raises(ValueError, match="batch_size"):
        rife_to_count(frames_pair(), 3, model, batch_size=0)
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        rife_from_state_dict({}, "cpu", torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            rife_from_state_dict({}, "cuda")
