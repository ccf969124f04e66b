"""MP4 encoding, poster and probe: frame counts, exact rates, faststart, and faithful pixels."""

import io
import struct
from fractions import Fraction

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from pipeline.video import VideoInfo, encode_mp4, make_poster, probe_video

HEIGHT, WIDTH = 144, 256


def smooth_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> NDArray[np.uint8]:
    """Soft colour gradients drifting a little each frame: content H.264 keeps well."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for i in range(count):
        phase = i / max(count, 1) * 2 * np.pi
        red = 128 + 100 * np.sin(x / 40 + phase)
        green = 128 + 100 * np.cos(y / 30 - phase)
        blue = 128 + 60 * np.sin((x + y) / 50 + phase / 2)
        frames.append(np.stack([red, green, blue], axis=-1))
    clipped: NDArray[np.uint8] = np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)
    return clipped


def decoded_frames(data: bytes) -> NDArray[np.uint8]:
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = [np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8) for frame in container.decode(video=0)]
    return np.stack(frames)


def psnr(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def top_level_boxes(data: bytes) -> list[bytes]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        boxes.append(kind)
        pos += size
    return boxes


@pytest.fixture(scope="module")
def eight_fps() -> tuple[NDArray[np.uint8], bytes]:
    frames = smooth_frames(32)
    return frames, encode_mp4(frames, 8)


def test_32_frames_at_8_fps_probe_as_asked(eight_fps: tuple[NDArray[np.uint8], bytes]) -> None:
    info = probe_video(eight_fps[1])
    assert info == VideoInfo(
        codec="h264",
        pix_fmt="yuv420p",
        width=WIDTH,
        height=HEIGHT,
        fps=info.fps,
        frame_count=32,
        duration_s=info.duration_s,
        faststart=True,
    )
    assert info.fps == 8
    assert abs(info.duration_s - 4.0) <= 1 / 8


def test_moov_precedes_mdat(eight_fps: tuple[NDArray[np.uint8], bytes]) -> None:
    boxes = top_level_boxes(eight_fps[1])
    assert boxes[0] == b"ftyp"
    assert boxes.index(b"moov") < boxes.index(b"mdat")


def test_decoded_frames_resemble_the_input(eight_fps: tuple[NDArray[np.uint8], bytes]) -> None:
    frames, data = eight_fps
    decoded = decoded_frames(data)
    assert decoded.shape == frames.shape
    assert min(psnr(a, b) for a, b in zip(frames, decoded, strict=True)) > 30


def test_stream_is_tagged_bt709_constant_rate(eight_fps: tuple[NDArray[np.uint8], bytes]) -> None:
    with av.open(io.BytesIO(eight_fps[1]), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.colorspace == av.video.reformatter.Colorspace.ITU709
        packets = [p for p in container.demux(stream) if p.size]
    assert len(packets) == 32
    assert {Fraction(p.duration or 0) * (p.time_base or 0) for p in packets} == {Fraction(1, 8)}


@pytest.mark.parametrize(("count", "fps"), [(96, 24), (33, 8), (7, 12), (1, 8)])
def test_other_rates_and_counts(count: int, fps: int) -> None:
    info = probe_video(encode_mp4(smooth_frames(count, 64, 96), fps))
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 96, 64)
    assert info.frame_count == count
    assert info.fps == fps
    assert abs(info.duration_s - count / fps) <= 1 / fps
    assert info.faststart


def test_lower_crf_means_bigger_file() -> None:
    frames = smooth_frames(8, 64, 96)
    assert len(encode_mp4(frames, 8, crf=10)) > len(encode_mp4(frames, 8, crf=35))


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((2, 16, 16, 3), dtype=np.float32), "uint8, got dtype float32"),
        (np.zeros((16, 16, 3), dtype=np.uint8), r"shape \(16, 16, 3\)"),
        (np.zeros((2, 16, 16, 4), dtype=np.uint8), r"shape \(2, 16, 16, 4\)"),
        (np.zeros((0, 16, 16, 3), dtype=np.uint8), "at least one frame"),
        (np.zeros((2, 15, 16, 3), dtype=np.uint8), "even for yuv420p, got 16x15"),
    ],
)
def test_bad_frames_are_named(frames: NDArray[np.uint8], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_mp4(frames, 8)


@pytest.mark.parametrize(("fps", "crf"), [(0, 18), (8, 60), (8, -1)])
def test_bad_rate_or_quality_is_named(fps: int, crf: int) -> None:
    with pytest.raises(ValueError, match="fps" if fps == 0 else "crf"):
        encode_mp4(smooth_frames(1, 16, 16), fps, crf=crf)


def test_poster_is_a_jpeg_of_the_frame() -> None:
    frame = smooth_frames(1)[0]
    data = make_poster(frame)
    poster = Image.open(io.BytesIO(data))
    assert poster.format == "JPEG" and poster.size == (WIDTH, HEIGHT)
    assert psnr(np.asarray(poster.convert("RGB")), frame) > 30
    assert len(make_poster(frame, quality=30)) < len(data)


@pytest.mark.parametrize(
    ("frame", "quality", "message"),
    [
        (np.zeros((8, 8), dtype=np.uint8), 90, r"shape \(H, W, 3\), got \(8, 8\)"),
        (np.zeros((8, 8, 3), dtype=np.int64), 90, "uint8"),
        (np.zeros((8, 8, 3), dtype=np.uint8), 0, "quality must be an int from 1 to 100, got 0"),
    ],
)
def test_bad_poster_inputs_are_named(frame: NDArray[np.uint8], quality: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_poster(frame, quality=quality)


def test_probe_rejects_what_is_not_a_video() -> None:
    with pytest.raises(ValueError, match="not a readable video"):
        probe_video(b"definitely not an mp4 file" * 10)


def test_probe_reports_a_file_without_faststart() -> None:
    # Written by PyAV directly, without +faststart: the muxer leaves moov at the end.
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for rgb in smooth_frames(3, 32, 32):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    data = buffer.getvalue()
    assert top_level_boxes(data).index(b"mdat") < top_level_boxes(data).index(b"moov")
    info = probe_video(data)
    assert not info.faststart
    assert info.frame_count == 3
