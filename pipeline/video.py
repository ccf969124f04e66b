"""Muxing: frames to a browser-playable H.264 MP4, a JPEG poster, and a probe to check the result."""

import io
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from numpy.typing import NDArray
from PIL import Image

Frames = NDArray[np.uint8]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file really holds; ``frame_count`` is decoded, not read from the header."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration_s: float
    faststart: bool


def encode_mp4(frames: Frames, fps: int, *, crf: int = 18) -> bytes:
    """Encode RGB frames (N, H, W, 3) as H.264 yuv420p MP4 at a constant ``fps``, moov atom first."""
    _check_frames(frames)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 240:
        raise ValueError(f"fps must be an int from 1 to 240, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int from 0 to 51, got {crf!r}")
    _, height, width, _ = frames.shape
    time_base = Fraction(1, fps)
    # +faststart rewrites the file after the last frame by reopening it by name; an in-memory
    # buffer cannot be reopened, so the muxer writes a real temporary file.
    with tempfile.TemporaryDirectory(prefix="i2v-mux-") as folder:
        path = os.path.join(folder, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            # Tag BT.709 limited range, the matrix the frames are converted with, so players agree.
            stream.codec_context.colorspace = Colorspace.ITU709
            stream.codec_context.color_primaries = ColorPrimaries.BT709
            stream.codec_context.color_trc = ColorTrc.BT709
            stream.codec_context.color_range = ColorRange.MPEG
            stream.codec_context.options = {"crf": str(crf), "preset": "medium", "profile": "high"}
            for index, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
                frame.pts, frame.duration, frame.time_base = index, 1, time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as written:
            return written.read()


def make_poster(frame: Frames, *, quality: int = 90) -> bytes:
    """Encode one RGB frame (H, W, 3) as a JPEG."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise ValueError(f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame).__name__)}")
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must have shape (H, W, 3), got {frame.shape}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int from 1 to 100, got {quality!r}")
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def probe_video(data: bytes) -> VideoInfo:
    """Decode ``data`` fully and report its first video stream; raises ValueError if unreadable."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            frame_count = sum(1 for _ in container.decode(stream))
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            duration_s = container.duration / av.time_base if container.duration is not None else 0.0
            return VideoInfo(
                codec=stream.codec_context.name,
                pix_fmt=stream.codec_context.pix_fmt or "",
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=Fraction(rate),
                frame_count=frame_count,
                duration_s=float(duration_s),
                faststart=_moov_before_mdat(data),
            )
    except av.FFmpegError as exc:
        raise ValueError(f"not a readable video: {exc}") from exc


def _moov_before_mdat(data: bytes) -> bool:
    """True when the top-level ``moov`` box comes before ``mdat``, so playback can start early."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"moov":
            return True
        if kind == b"mdat":
            return False
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            return False
        if size < 8:
            return False
        pos += size
    return False


def _check_frames(frames: Frames) -> None:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3), got shape {frames.shape}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {width}x{height}")
