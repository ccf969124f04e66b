"""``i2v interpolate``: in-between frames for a video or a run of images, locally, without a stack.

INPUT is one video (MP4, WebM, GIF, WebP) or two or more images of one size; OUTPUT is a video whose
format its extension names, or a folder (ending in ``/``) that receives ``000000.png``, ``000001.png``, ...
Output frame ``k`` of ``N`` sits at input time ``k * (n - 1) / (N - 1)``, so ``--count 3`` on two images
gives them with the frame at t = 0.5 between.
"""

import io
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from services.cli.errors import CliError

if TYPE_CHECKING:
    from pipeline.render import Resample

Frames = NDArray[np.uint8]
DEFAULT_IMAGE_FPS = 8
"""Rate of a video made from images when --fps is not given."""


@dataclass(frozen=True)
class Source:
    frames: Frames
    fps: Fraction | None  # None for images: they have no rate


def read_source(inputs: list[Path]) -> Source:
    """The frames of one video, or of two or more images of one size, as uint8 RGB (n, H, W, 3)."""
    for path in inputs:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    if len(inputs) == 1:
        return _read_video(inputs[0])
    return Source(_read_images(inputs), None)


def _read_images(paths: list[Path]) -> Frames:
    from PIL import Image, UnidentifiedImageError

    frames: list[Frames] = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise CliError(f"{path}: not a readable image ({exc})") from None
        if frames[-1].shape != frames[0].shape:
            h0, w0 = frames[0].shape[:2]
            h, w = frames[-1].shape[:2]
            raise CliError(f"{path}: is {w}x{h} but {paths[0]} is {w0}x{h0}; the images must be one size")
    return np.stack(frames)


def _read_video(path: Path) -> Source:
    from PIL import Image, ImageSequence

    data = path.read_bytes()
    if data[:6] in (b"GIF87a", b"GIF89a") or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        with Image.open(io.BytesIO(data)) as image:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
            durations = [frame.info.get("duration", 0) for frame in ImageSequence.Iterator(image)]
        if len(frames) < 2:
            raise CliError(f"{path}: is a single image; give two or more images, or a video")
        mean_ms = sum(durations) / len(durations)
        fps = Fraction(round(1000 / mean_ms)) if mean_ms > 0 else None
        return Source(np.stack(frames), fps)
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise CliError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.FFmpegError:
        raise CliError(f"{path}: not a readable video; give a video, or two or more images") from None
    if len(frames) < 2:
        raise CliError(f"{path}: holds {len(frames)} frame(s); it takes at least two to interpolate")
    return Source(np.stack(frames), Fraction(rate) if rate else None)


def plan(source: Source, count: int | None, fps: int | None) -> tuple[int, int]:
    """(frames out, video rate): --count as given; --fps on a video keeps its duration; images double by default."""
    n = source.frames.shape[0]
    if count is not None and count < 1:
        raise CliError(f"--count: must be at least 1 (got {count})")
    if fps is not None and fps < 1:
        raise CliError(f"--fps: must be at least 1 (got {fps})")
    if source.fps is None:
        return (count if count is not None else 2 * n - 1), (fps or DEFAULT_IMAGE_FPS)
    if count is not None:
        # The clip keeps its duration: the rate grows with the count.
        return count, fps or max(1, round(source.fps * count / n))
    if fps is not None:
        return max(2, round(n * fps / source.fps)), fps
    raise CliError("give --count N or --fps N: how many frames, or at what rate")


def resample_with(interpolator: str, weights_env: str | None) -> "Resample":
    """The resampler --interpolator names: dis, rife (I2V_RIFE_WEIGHTS) or rife:PATH."""
    from pipeline.render import resampler

    if interpolator == "dis":
        return resampler("dis")
    name, _, path = interpolator.partition(":")
    if name != "rife":
        raise CliError(f"--interpolator: must be dis, rife or rife:PATH (got {interpolator!r})")
    weights = path or weights_env
    if not weights:
        raise CliError("--interpolator rife: no weights; give rife:PATH to flownet.pkl or set I2V_RIFE_WEIGHTS")
    from pipeline.models import pick_device
    from pipeline.rife import RifeWeightsError, load_rife

    try:
        model = load_rife(weights, pick_device(None)[0])
    except RifeWeightsError as exc:
        raise CliError(f"--interpolator rife: {exc}") from None
    return resampler("rife", model)


def run_interpolate(inputs: list[Path], output: str, *, count: int | None, fps: int | None, interpolator: str) -> int:
    from pipeline.video import encode_video, format_from_extension

    to_folder = output.endswith(("/", os.sep))
    video_format = None
    if not to_folder:
        try:
            video_format = format_from_extension(output)
        except ValueError:
            raise CliError(
                f"-o {output}: end it in .mp4, .webm, .gif or .webp for a video, or in / for a folder of PNGs"
            ) from None
        if not Path(output).parent.is_dir():
            raise CliError(f"-o {output}: folder {Path(output).parent} does not exist")
    if len(inputs) == 1 and inputs[0].suffix.lower() in (".png", ".jpg", ".jpeg"):
        raise CliError(f"{inputs[0]}: one image; give two or more images, or a video")
    source = read_source(inputs)
    frames_out, rate = plan(source, count, fps)
    resample = resample_with(interpolator, os.environ.get("I2V_RIFE_WEIGHTS"))
    frames = resample(source.frames, frames_out)
    if to_folder:
        _write_pngs(Path(output), frames)
        where = f"{frames_out} PNGs in {Path(output).resolve()}/"
    else:
        assert video_format is not None
        try:
            data = encode_video(frames, rate, format=video_format, metadata={"software": "i2v interpolate"})
        except ValueError as exc:
            raise CliError(f"-o {output}: {exc}") from None
        Path(output).write_bytes(data)
        where = f"{frames_out} frames at {rate} fps in {Path(output).resolve()}"
    seconds = f" ({frames_out / rate:.3g} s)" if not to_folder else ""
    print(f"wrote {where}{seconds} from {source.frames.shape[0]} frames with {interpolator.partition(':')[0]}")
    return 0


def _write_pngs(folder: Path, frames: Frames) -> None:
    from PIL import Image

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"-o {folder}/: cannot create the folder ({exc.strerror})") from None
    digits = max(6, math.ceil(math.log10(len(frames) + 1)))
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:0{digits}d}.png")
