"""Muxing: frames to a browser-playable file in one of five formats, a JPEG poster, and a probe that decodes it.

=======  ======================  =============================  ====  ======  ====
format   codec, container        quality knob                   low   medium  high
=======  ======================  =============================  ====  ======  ====
mp4      H.264 (libx264), MP4    CRF 0-51                       28    23      18
webm     VP9 (libvpx-vp9), WebM  CRF 0-63, constant quality     40    32      24
av1      AV1, MP4                CRF 0-63 (SVT-AV1, libaom)     42    35      27
gif      GIF                     palette colours                64    128     256
webp     animated WebP (VP8)     libwebp quality 0-100          60    80      92
=======  ======================  =============================  ====  ======  ====

``high`` is the default and is what the mux stage always wrote (H.264 at CRF 18). rav1e, the third
AV1 encoder PyAV's FFmpeg may carry, takes a quantizer, not a CRF: it gets ``4 x CRF``.

Every format holds exactly the frames given. Rates: MP4 (H.264 or AV1) is exact. WebM declares the
exact rate but stamps frames in whole milliseconds, GIF in whole centiseconds, WebP in whole
milliseconds: each frame starts at ``k / fps`` rounded to that clock (so within half a tick, with no
drift over the clip), which is exact when the clock's rate is a multiple of ``fps`` (GIF: 1, 2, 4, 5,
10, 20, 25, 50 fps; at 24 fps its delays run 4, 4, 5, 4, 4, 4 cs). Browsers stretch GIF delays under
2 cs and WebP durations of 10 ms or less to 100 ms, so GIF stops at 50 fps and WebP at 90.

Metadata (the job's parameters and seed) goes in as one JSON object: the ``comment`` tag of MP4 and
WebM, GIF's comment extension, and the ``dc:description`` of WebP's XMP. :func:`probe_video` reads it back.
"""

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import PurePath
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc
from numpy.typing import NDArray
from PIL import GifImagePlugin, Image

Frames = NDArray[np.uint8]


class VideoFormat(StrEnum):
    MP4 = "mp4"
    WEBM = "webm"
    GIF = "gif"
    WEBP = "webp"
    AV1 = "av1"


class Quality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


DEFAULT_FORMAT = VideoFormat.MP4
DEFAULT_QUALITY = Quality.HIGH

QUALITY_SETTINGS: Mapping[VideoFormat, Mapping[Quality, int]] = {
    VideoFormat.MP4: {Quality.LOW: 28, Quality.MEDIUM: 23, Quality.HIGH: 18},
    VideoFormat.WEBM: {Quality.LOW: 40, Quality.MEDIUM: 32, Quality.HIGH: 24},
    VideoFormat.AV1: {Quality.LOW: 42, Quality.MEDIUM: 35, Quality.HIGH: 27},
    VideoFormat.GIF: {Quality.LOW: 64, Quality.MEDIUM: 128, Quality.HIGH: 256},
    VideoFormat.WEBP: {Quality.LOW: 60, Quality.MEDIUM: 80, Quality.HIGH: 92},
}
"""The module docstring's table: CRF for mp4/webm/av1, palette colours for gif, libwebp quality for webp."""

AV1_ENCODERS = ("libsvtav1", "libaom-av1", "librav1e")
"""AV1 encoders in order of preference (SVT-AV1 is the fastest at a given quality)."""

_CONTENT_TYPES = {
    VideoFormat.MP4: "video/mp4",
    VideoFormat.WEBM: "video/webm",
    VideoFormat.GIF: "image/gif",
    VideoFormat.WEBP: "image/webp",
    VideoFormat.AV1: "video/mp4",
}
_EXTENSIONS = {
    VideoFormat.MP4: ".mp4",
    VideoFormat.WEBM: ".webm",
    VideoFormat.GIF: ".gif",
    VideoFormat.WEBP: ".webp",
    VideoFormat.AV1: ".mp4",
}
_TICKS_PER_SECOND = {VideoFormat.WEBM: 1000, VideoFormat.GIF: 100, VideoFormat.WEBP: 1000}
"""The clock each format stamps frames with; MP4 gets a timescale that is a multiple of the rate."""
_MAX_FPS = {VideoFormat.GIF: 50, VideoFormat.WEBP: 90}
_MAX_METADATA_BYTES = 65536


class FormatUnavailable(ValueError):
    """The format needs an encoder this build of PyAV's FFmpeg does not carry."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file really holds; ``frame_count`` is decoded, not read from the header.

    ``fps`` is the stream's declared rate for MP4 and WebM, and ``frame_count / duration_s`` for GIF
    and WebP, whose frames carry delays rather than a rate. ``frame_times`` are the decoded frames'
    start times in seconds; ``faststart`` says a player can seek without reading the file's end
    (MP4: moov before mdat; WebM: Cues before the first Cluster; GIF and WebP have no index).
    """

    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration_s: float
    faststart: bool
    format: VideoFormat = VideoFormat.MP4
    frame_times: tuple[Fraction, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


# 1. Formats: names, content types, extensions, what this build can write.


def parse_format(value: VideoFormat | str) -> VideoFormat:
    """``value`` as a :class:`VideoFormat`; a ValueError lists the choices."""
    try:
        return VideoFormat(value)
    except ValueError:
        raise ValueError(f"format must be one of {', '.join(VideoFormat)}; got {value!r}") from None


def parse_quality(value: Quality | str) -> Quality:
    """``value`` as a :class:`Quality`; a ValueError lists the choices."""
    try:
        return Quality(value)
    except ValueError:
        raise ValueError(f"quality must be one of {', '.join(Quality)}; got {value!r}") from None


def content_type_of_format(format: VideoFormat | str) -> str:
    """The MIME type to serve a file of ``format`` with."""
    return _CONTENT_TYPES[parse_format(format)]


def extension_of_format(format: VideoFormat | str) -> str:
    """The file extension, dot included, for ``format`` (AV1 is MP4, ``.mp4``)."""
    return _EXTENSIONS[parse_format(format)]


def format_from_extension(path: str | os.PathLike[str]) -> VideoFormat:
    """The format a file name asks for: ``.mp4`` (H.264; AV1 must be asked by name), ``.webm``, ``.gif``, ``.webp``."""
    suffix = PurePath(path).suffix.lower()
    for candidate in (VideoFormat.MP4, VideoFormat.WEBM, VideoFormat.GIF, VideoFormat.WEBP):
        if _EXTENSIONS[candidate] == suffix:
            return candidate
    known = ", ".join(sorted(set(_EXTENSIONS.values())))
    raise ValueError(f"cannot tell the video format of {os.fspath(path)!r}: the name must end in {known}")


def is_animated_image(format: VideoFormat | str) -> bool:
    """True for GIF and WebP, which a page shows in ``<img>``; the others play in ``<video>``."""
    return parse_format(format) in (VideoFormat.GIF, VideoFormat.WEBP)


def max_fps(format: VideoFormat | str) -> int:
    """The highest rate ``format`` plays at in browsers (see the module docstring)."""
    return _MAX_FPS.get(parse_format(format), 240)


def av1_encoder() -> str:
    """The AV1 encoder to use; :class:`FormatUnavailable` (one line) when PyAV's FFmpeg has none."""
    found = _first_encoder(AV1_ENCODERS)
    if found is None:
        raise FormatUnavailable(
            f"format av1 needs an AV1 encoder ({', '.join(AV1_ENCODERS)}) and this PyAV's FFmpeg has none; "
            "use mp4 or webm"
        )
    return found


def available_formats() -> tuple[VideoFormat, ...]:
    """The formats this installation can write: all but ``av1`` always, ``av1`` when an encoder is present."""
    if _first_encoder(AV1_ENCODERS) is None:
        return tuple(f for f in VideoFormat if f is not VideoFormat.AV1)
    return tuple(VideoFormat)


def _first_encoder(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    return None


# 2. Encoding.


def encode_video(
    frames: Frames,
    fps: int,
    *,
    format: VideoFormat | str = DEFAULT_FORMAT,
    quality: Quality | str = DEFAULT_QUALITY,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Encode RGB frames (N, H, W, 3) at a constant ``fps`` as ``format``, ``metadata`` written into the file."""
    chosen, level = parse_format(format), parse_quality(quality)
    _check_frames(frames, even=chosen not in (VideoFormat.GIF, VideoFormat.WEBP))
    _check_fps(fps, chosen)
    text = _metadata_text(metadata)
    setting = QUALITY_SETTINGS[chosen][level]
    if chosen is VideoFormat.MP4:
        return _encode_with_ffmpeg(frames, fps, "mp4", "libx264", _x264_options(setting), text)
    if chosen is VideoFormat.WEBM:
        # cpu-used 4 with row-mt: libvpx's "good" deadline at a few times the default speed, at a small cost in size.
        options = {"crf": str(setting), "deadline": "good", "cpu-used": "4", "row-mt": "1"}
        return _encode_with_ffmpeg(frames, fps, "webm", "libvpx-vp9", options, text)
    if chosen is VideoFormat.AV1:
        encoder = av1_encoder()
        return _encode_with_ffmpeg(frames, fps, "mp4", encoder, _av1_options(encoder, setting), text)
    if chosen is VideoFormat.GIF:
        return _encode_gif(frames, fps, setting, text)
    return _encode_webp(frames, fps, setting, text)


def encode_mp4(frames: Frames, fps: int, *, crf: int = 18) -> bytes:
    """Encode RGB frames (N, H, W, 3) as H.264 yuv420p MP4 at a constant ``fps``, moov atom first."""
    _check_frames(frames, even=True)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 240:
        raise ValueError(f"fps must be an int from 1 to 240, got {fps!r}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int from 0 to 51, got {crf!r}")
    return _encode_with_ffmpeg(frames, fps, "mp4", "libx264", _x264_options(crf), None)


def _x264_options(crf: int) -> dict[str, str]:
    return {"crf": str(crf), "preset": "medium", "profile": "high"}


def _av1_options(encoder: str, crf: int) -> dict[str, str]:
    if encoder == "libsvtav1":
        return {"crf": str(crf), "preset": "8"}
    if encoder == "libaom-av1":
        return {"crf": str(crf), "cpu-used": "6", "row-mt": "1"}
    return {"qp": str(min(255, 4 * crf)), "speed": "8"}


def _encode_with_ffmpeg(
    frames: Frames, fps: int, container_format: str, encoder: str, options: dict[str, str], comment: str | None
) -> bytes:
    _, height, width, _ = frames.shape
    time_base = Fraction(1, fps)
    # MP4's +faststart and WebM's cues_to_front rewrite the file after the last frame by reopening it
    # by name; an in-memory buffer cannot be reopened, so the muxer writes a real temporary file.
    front = {"movflags": "+faststart"} if container_format == "mp4" else {"cues_to_front": "1"}
    with _scheduling_kept(), tempfile.TemporaryDirectory(prefix="i2v-mux-") as folder:
        path = os.path.join(folder, f"video.{container_format}")
        with av.open(path, mode="w", format=container_format, options=front) as container:
            if comment is not None:
                container.metadata["comment"] = comment
            stream = container.add_stream(encoder, rate=fps)
            if not isinstance(stream, av.VideoStream):
                raise TypeError(f"{encoder} is not a video encoder")
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            # Tag BT.709 limited range, the matrix the frames are converted with, so players agree.
            stream.codec_context.colorspace = Colorspace.ITU709
            stream.codec_context.color_primaries = ColorPrimaries.BT709
            stream.codec_context.color_trc = ColorTrc.BT709
            stream.codec_context.color_range = ColorRange.MPEG
            stream.codec_context.options = options
            for index, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
                frame.pts, frame.duration, frame.time_base = index, 1, time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as written:
            return written.read()


@contextlib.contextmanager
def _scheduling_kept() -> Iterator[None]:
    """Give the calling thread back its scheduling policy and priority after an encoder ran on it.

    SVT-AV1 raises the thread that opens it to real-time SCHED_FIFO at priority 99 whenever it is allowed
    to (as root, the usual case in a container), and never lowers it again: every process that thread
    starts afterwards inherits it, and a busy real-time process starves everything else on its cores.
    """
    if not hasattr(os, "sched_getscheduler"):  # not Linux
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if os.sched_getscheduler(0) != policy or os.sched_getparam(0) != param:
            os.sched_setscheduler(0, policy, param)


def _encode_gif(frames: Frames, fps: int, colours: int, comment: str | None) -> bytes:
    """One global palette, every frame kept (Pillow's own writer merges identical frames), delays in cs."""
    palette = _gif_palette(frames, colours)
    starts = _tick_starts(frames.shape[0], fps, _TICKS_PER_SECOND[VideoFormat.GIF])
    out = io.BytesIO()
    previous: NDArray[np.uint8] | None = None
    for index, rgb in enumerate(frames):
        indexed = Image.fromarray(rgb, mode="RGB").quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        indices = np.asarray(indexed)
        if previous is None:
            header, _ = GifImagePlugin.getheader(indexed, None, {"loop": 0, "comment": comment or ""})
            out.write(b"".join(header))
        # Frames stay on screen under the next one (disposal 1), so a frame need only cover what changed.
        box = _changed_box(previous, indices)
        delay_ms = 10 * (starts[index + 1] - starts[index])
        out.write(b"".join(GifImagePlugin.getdata(indexed.crop(box), box[:2], duration=delay_ms, disposal=1)))
        previous = indices
    out.write(b";")
    return out.getvalue()


def _gif_palette(frames: Frames, colours: int) -> Image.Image:
    """A palette for the whole clip, from eight frames spread over it, shrunk so it takes milliseconds."""
    picks = np.unique(np.linspace(0, frames.shape[0] - 1, num=min(8, frames.shape[0])).round().astype(int))
    _, height, width, _ = frames.shape
    step = max(1, max(height, width) // 160)
    mosaic = np.concatenate([frames[i, ::step, ::step] for i in picks], axis=0)
    return Image.fromarray(np.ascontiguousarray(mosaic), mode="RGB").quantize(
        colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )


def _changed_box(previous: NDArray[np.uint8] | None, current: NDArray[np.uint8]) -> tuple[int, int, int, int]:
    if previous is None:
        return (0, 0, current.shape[1], current.shape[0])
    changed = previous != current
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if rows.size == 0:
        return (0, 0, 1, 1)  # an unchanged frame is still a frame: one pixel, redrawn as it was
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _encode_webp(frames: Frames, fps: int, quality: int, comment: str | None) -> bytes:
    """Each frame a full lossy VP8 picture in its own ANMF chunk: libwebp's animation encoder (Pillow's
    and FFmpeg's) merges identical frames, so the container is written here from single-picture encodes."""
    count, height, width, _ = frames.shape
    starts = _tick_starts(count, fps, _TICKS_PER_SECOND[VideoFormat.WEBP])
    body = [
        _riff_chunk(b"VP8X", bytes([0x02 | (0x04 if comment else 0), 0, 0, 0]) + _u24(width - 1) + _u24(height - 1))
    ]
    body.append(_riff_chunk(b"ANIM", b"\xff\xff\xff\xff" + (0).to_bytes(2, "little")))  # white, loop forever
    for index, rgb in enumerate(frames):
        picture = io.BytesIO()
        Image.fromarray(rgb, mode="RGB").save(picture, format="WEBP", quality=quality, method=4)
        bitstream = next((raw for name, _, raw in _riff_chunks(picture.getvalue()) if name == b"VP8 "), None)
        if bitstream is None:
            raise RuntimeError("libwebp wrote no lossy VP8 chunk for a frame")
        placement = _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1)
        duration = _u24(starts[index + 1] - starts[index])
        body.append(_riff_chunk(b"ANMF", placement + duration + b"\x02" + bitstream))  # 0x02: replace, don't blend
    if comment:
        body.append(_riff_chunk(b"XMP ", _xmp_packet(comment)))
    payload = b"WEBP" + b"".join(body)
    return b"RIFF" + len(payload).to_bytes(4, "little") + payload


def _tick_starts(count: int, fps: int, ticks_per_second: int) -> list[int]:
    """Start of frame k (k = 0..count; the last is the end) in ticks: k / fps rounded half up, so no drift."""
    return [(2 * k * ticks_per_second + fps) // (2 * fps) for k in range(count + 1)]


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def _riff_chunk(name: bytes, payload: bytes) -> bytes:
    return name + len(payload).to_bytes(4, "little") + payload + (b"\0" if len(payload) % 2 else b"")


def _riff_chunks(data: bytes, start: int = 12) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(name, payload, whole chunk) of each RIFF chunk from ``start`` (12 skips ``RIFF size WEBP``)."""
    pos = start
    while pos + 8 <= len(data):
        name, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + size % 2
        yield name, data[pos + 8 : pos + 8 + size], data[pos:end]
        pos = end


# 3. Metadata: one JSON object in every format.


def _metadata_text(metadata: Mapping[str, str] | None) -> str | None:
    if metadata is None or not metadata:
        return None
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map str to str, got {key!r}: {value!r}")
    text = json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False)
    if len(text.encode()) > _MAX_METADATA_BYTES:
        raise ValueError(f"metadata must be at most {_MAX_METADATA_BYTES} bytes as JSON, got {len(text.encode())}")
    return text


def _metadata_from_text(text: str | bytes | None) -> dict[str, str]:
    """The JSON object :func:`encode_video` wrote; empty for no comment or a comment someone else wrote."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    return {}


_XMP_DESCRIPTION = "{http://purl.org/dc/elements/1.1/}description"


def _xmp_packet(text: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(text)}</rdf:li></rdf:Alt></dc:description>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def _text_from_xmp(packet: bytes | str | None) -> str | None:
    if not packet:
        return None
    try:
        root = ElementTree.fromstring(packet)
    except ElementTree.ParseError:
        return None
    description = root.find(f".//{_XMP_DESCRIPTION}")
    return None if description is None else "".join(description.itertext())


# 4. Poster.


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


# 5. Probe and check.


def probe_video(data: bytes) -> VideoInfo:
    """Decode ``data`` (any format :func:`encode_video` writes) fully; raises ValueError if unreadable."""
    if data[:6] in (b"GIF87a", b"GIF89a") or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return _probe_animated_image(data)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            frame_count, times = 0, []
            for frame in container.decode(stream):
                frame_count += 1
                if frame.pts is not None and frame.time_base is not None:
                    times.append(Fraction(frame.pts) * frame.time_base)
            rate = stream.average_rate or stream.guessed_rate or Fraction(0)
            duration_s = container.duration / av.time_base if container.duration is not None else 0.0
            codec = stream.codec_context.codec.canonical_name
            is_webm = container.format.name.startswith("matroska")
            comment = container.metadata.get("comment") or container.metadata.get("COMMENT")
            return VideoInfo(
                codec=codec,
                pix_fmt=stream.codec_context.pix_fmt or "",
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                fps=Fraction(rate),
                frame_count=frame_count,
                duration_s=float(duration_s),
                faststart=_cues_before_clusters(data) if is_webm else _moov_before_mdat(data),
                format=VideoFormat.WEBM if is_webm else VideoFormat.AV1 if codec == "av1" else VideoFormat.MP4,
                frame_times=tuple(t - times[0] for t in times) if len(times) == frame_count else (),
                metadata=_metadata_from_text(comment),
            )
    except av.FFmpegError as exc:
        raise ValueError(f"not a readable video: {exc}") from exc


def _probe_animated_image(data: bytes) -> VideoInfo:
    kind = VideoFormat.GIF if data[:3] == b"GIF" else VideoFormat.WEBP
    try:
        with Image.open(io.BytesIO(data), formats=[kind.value.upper()]) as image:
            durations_ms = []
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                image.load()  # decode every frame, and WebP reports a frame's duration only once loaded
                durations_ms.append(int(image.info.get("duration", 0)))
            width, height = image.size
            comment = image.info.get("comment") if kind is VideoFormat.GIF else _text_from_xmp(image.info.get("xmp"))
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"not a readable {kind.value}: {exc}") from exc
    starts = [Fraction(sum(durations_ms[:k]), 1000) for k in range(len(durations_ms))]
    total = Fraction(sum(durations_ms), 1000)
    return VideoInfo(
        codec=kind.value,
        pix_fmt="pal8" if kind is VideoFormat.GIF else _webp_pix_fmt(data),
        width=width,
        height=height,
        fps=Fraction(len(durations_ms)) / total if total else Fraction(0),
        frame_count=len(durations_ms),
        duration_s=float(total),
        faststart=True,
        format=kind,
        frame_times=tuple(starts),
        metadata=_metadata_from_text(comment),
    )


def _webp_pix_fmt(data: bytes) -> str:
    """``yuv420p`` for lossy VP8 pictures, ``argb`` for lossless VP8L, from the first picture's chunk."""
    for name, payload, _ in _riff_chunks(data):
        if name == b"ANMF":
            name = payload[16:20]
        if name == b"VP8 ":
            return "yuv420p"
        if name in (b"VP8L", b"ALPH"):
            return "argb"
    return ""


def video_mismatch(info: VideoInfo, *, frame_count: int, fps: int) -> str | None:
    """Why ``info`` is not ``frame_count`` frames at ``fps``, or None when it is.

    Frame k must start at ``k / fps`` and the clip last ``frame_count / fps``: exactly for MP4 (and
    the declared rate must be ``fps``), within half a tick of the format's clock for WebM, GIF and WebP.
    """
    if info.frame_count != frame_count:
        return f"encoded {info.frame_count} frames; asked {frame_count}"
    ticks = _TICKS_PER_SECOND.get(info.format)
    tolerance = Fraction(1, 2 * ticks) if ticks else Fraction(0)
    if info.format in (VideoFormat.MP4, VideoFormat.AV1, VideoFormat.WEBM) and info.fps != fps:
        return f"encoded at {info.fps} fps; asked {fps}"
    for k, start in enumerate(info.frame_times):
        if abs(start - Fraction(k, fps)) > tolerance:
            return f"frame {k} starts at {float(start):.4f} s; at {fps} fps it should start at {k / fps:.4f} s"
    # Container durations are whole microseconds.
    if abs(Fraction(info.duration_s) - Fraction(frame_count, fps)) > tolerance + Fraction(1, 1_000_000):
        asked = f"{frame_count} frames at {fps} fps last {frame_count / fps:.4f} s"
        return f"the {info.format.value} lasts {info.duration_s:.4f} s; {asked}"
    return None


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


_EBML_HEADER, _SEGMENT, _CUES, _CLUSTER = 0x1A45DFA3, 0x18538067, 0x1C53BB6B, 0x1F43B675


def _cues_before_clusters(data: bytes) -> bool:
    """True when a WebM's seek index (Cues) precedes its first Cluster, so seeking needs no read from the end."""
    pos = 0
    while pos < len(data):
        element, pos = _ebml_vint(data, pos, keep_marker=True)
        size, pos = _ebml_vint(data, pos, keep_marker=False)
        if element == _SEGMENT:
            continue  # step into the segment: its children are what we look for
        if element == _CUES:
            return True
        if element == _CLUSTER or size < 0:
            return False
        pos += size
    return False


def _ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``pos`` and the position after it; -1 for an unknown size."""
    if pos >= len(data) or data[pos] == 0:
        return -1, len(data)
    length = 9 - data[pos].bit_length()
    value = int.from_bytes(data[pos : pos + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            value = -1
    return value, pos + length


# 6. Input checks.


def _check_frames(frames: Frames, *, even: bool) -> None:
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3), got shape {frames.shape}")
    count, height, width, _ = frames.shape
    if count < 1:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if even and (height < 2 or width < 2 or height % 2 or width % 2):
        raise ValueError(f"frame size must be even for yuv420p, got {width}x{height}")
    if height < 1 or width < 1:
        raise ValueError(f"frames must not be empty, got {width}x{height}")


def _check_fps(fps: int, format: VideoFormat) -> None:
    limit = max_fps(format)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= limit:
        why = {
            VideoFormat.GIF: " (GIF delays are whole centiseconds and browsers stretch delays under 2 cs)",
            VideoFormat.WEBP: " (browsers stretch WebP frames of 10 ms or less to 100 ms)",
        }.get(format, "")
        raise ValueError(f"fps must be an int from 1 to {limit} for {format.value}{why}, got {fps!r}")
