"""Encoding in every format, poster and probe: frame counts, rates, metadata, browser settings, faithful pixels."""

import io
import json
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageSequence

from pipeline.video import (
    QUALITY_SETTINGS,
    FormatUnavailable,
    Quality,
    VideoFormat,
    VideoInfo,
    available_formats,
    content_type_of_format,
    encode_mp4,
    encode_video,
    extension_of_format,
    format_from_extension,
    is_animated_image,
    make_poster,
    max_fps,
    probe_video,
    video_mismatch,
)
from tests.pipeline.test_loops import harbor_clip

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
        format=VideoFormat.MP4,
        frame_times=tuple(Fraction(k, 8) for k in range(32)),
        metadata={},
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


def muxed_by_pyav(container_format: str, codec: str) -> bytes:
    """Three smooth 32x32 frames written by PyAV directly, with its muxer's defaults (no +faststart,
    no index moved ahead of the media)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=8)
        assert isinstance(stream, av.VideoStream), codec
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for rgb in smooth_frames(3, 32, 32):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def test_probe_reports_a_file_without_faststart() -> None:
    # Without +faststart the muxer leaves moov at the end.
    data = muxed_by_pyav("mp4", "libx264")
    assert top_level_boxes(data).index(b"mdat") < top_level_boxes(data).index(b"moov")
    info = probe_video(data)
    assert not info.faststart
    assert info.frame_count == 3


# Every format, on the harbor photo under a moving camera.

FORMATS = [
    pytest.param(
        f,
        marks=pytest.mark.skipif(
            f not in available_formats(), reason="this PyAV's FFmpeg has no AV1 encoder (av1 is optional)"
        ),
    )
    for f in VideoFormat
]
EXPECTED_STREAM = {
    VideoFormat.MP4: ("h264", "yuv420p"),
    VideoFormat.WEBM: ("vp9", "yuv420p"),
    VideoFormat.AV1: ("av1", "yuv420p"),
    VideoFormat.GIF: ("gif", "pal8"),
    VideoFormat.WEBP: ("webp", "yuv420p"),
}
CLOCK = {VideoFormat.WEBM: 1000, VideoFormat.GIF: 100, VideoFormat.WEBP: 1000}
"""Ticks per second each format stamps frames in; MP4 (H.264 and AV1) is exact."""
JOB_METADATA = {
    "seed": "1234567",
    "params": '{"fps": 24, "loop": "pingpong", "motion_prompt": "缓慢推进 <slow & zoom>"}',
}


@pytest.fixture(scope="module")
def harbor() -> NDArray[np.uint8]:
    return harbor_clip(25, 128, 96)


def decoded_any(data: bytes, format: VideoFormat) -> NDArray[np.uint8]:
    """Every frame as RGB, decoded by a library other than the one that wrote it where there is one."""
    if format in (VideoFormat.GIF, VideoFormat.WEBP):
        with Image.open(io.BytesIO(data)) as image:
            return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])
    return decoded_frames(data)


def expected_starts(count: int, fps: int, format: VideoFormat) -> list[Fraction]:
    """k / fps, rounded half up to the format's clock where it has one."""
    if format not in CLOCK:
        return [Fraction(k, fps) for k in range(count)]
    ticks = CLOCK[format]
    return [Fraction(int(Fraction(k * ticks, fps) + Fraction(1, 2)), ticks) for k in range(count)]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize(("count", "fps"), [(25, 24), (16, 8), (6, 5)])
def test_every_format_holds_exactly_the_frames_at_the_rate(
    harbor: NDArray[np.uint8], format: VideoFormat, count: int, fps: int
) -> None:
    info = probe_video(encode_video(harbor[:count], fps, format=format))
    assert (info.codec, info.pix_fmt) == EXPECTED_STREAM[format]
    assert (info.format, info.width, info.height, info.frame_count) == (format, 128, 96, count)
    assert list(info.frame_times) == expected_starts(count, fps, format)
    if format in (VideoFormat.MP4, VideoFormat.WEBM, VideoFormat.AV1):
        assert info.fps == fps
    assert video_mismatch(info, frame_count=count, fps=fps) is None


def test_gif_at_24_fps_alternates_4_and_5_centiseconds_without_drift(harbor: NDArray[np.uint8]) -> None:
    clip = np.concatenate([harbor, harbor[:23]])  # 48 frames: 2 s
    with Image.open(io.BytesIO(encode_video(clip, 24, format="gif"))) as image:
        delays = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            delays.append(image.info["duration"])
    assert delays == [40, 40, 50, 40, 40, 40] * 8
    assert sum(delays) == 2000


def test_webp_at_24_fps_has_whole_millisecond_durations_without_drift(harbor: NDArray[np.uint8]) -> None:
    clip = np.concatenate([harbor, harbor[:23]])
    with Image.open(io.BytesIO(encode_video(clip, 24, format="webp"))) as image:
        durations = []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()
            durations.append(image.info["duration"])
    assert set(durations) == {41, 42}
    assert sum(durations) == 2000
    assert all(abs(sum(durations[:k]) - k * 1000 / 24) <= 0.5 for k in range(49))


@pytest.mark.parametrize("format", FORMATS)
def test_held_frames_stay_frames(harbor: NDArray[np.uint8], format: VideoFormat) -> None:
    # libwebp's animation encoder and Pillow's GIF writer would merge these into fewer, longer frames.
    still = np.concatenate([harbor[:1]] * 4 + [harbor[1:3]] + [harbor[2:3]] * 3)
    data = encode_video(still, 8, format=format)
    assert probe_video(data).frame_count == 9
    assert len(decoded_any(data, format)) == 9


@pytest.mark.parametrize("format", FORMATS)
def test_decoded_frames_resemble_the_photo(harbor: NDArray[np.uint8], format: VideoFormat) -> None:
    data = encode_video(harbor[:8], 8, format=format)
    decoded = decoded_any(data, format)
    assert decoded.shape == harbor[:8].shape
    assert min(psnr(a, b) for a, b in zip(harbor[:8], decoded, strict=True)) > 29


@pytest.mark.parametrize("format", FORMATS)
def test_job_metadata_is_in_the_file(harbor: NDArray[np.uint8], format: VideoFormat) -> None:
    data = encode_video(harbor[:4], 8, format=format, metadata=JOB_METADATA)
    assert probe_video(data).metadata == JOB_METADATA
    # Read back where other tools look: the comment tag, GIF's comment extension, WebP's XMP.
    if format is VideoFormat.GIF:
        with Image.open(io.BytesIO(data)) as image:
            comment = image.info["comment"].decode()
    elif format is VideoFormat.WEBP:
        with Image.open(io.BytesIO(data)) as image:
            xmp = image.info["xmp"].decode()
        assert "<dc:description>" in xmp and "&lt;slow &amp; zoom&gt;" in xmp
        comment = xmp.split('xml:lang="x-default">')[1].split("</rdf:li>")[0]
        comment = comment.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    else:
        with av.open(io.BytesIO(data), mode="r") as container:
            comment = container.metadata.get("comment") or container.metadata["COMMENT"]
    assert json.loads(comment) == JOB_METADATA


@pytest.mark.parametrize("format", FORMATS)
def test_without_metadata_the_file_holds_none(harbor: NDArray[np.uint8], format: VideoFormat) -> None:
    assert probe_video(encode_video(harbor[:2], 8, format=format)).metadata == {}


@pytest.mark.parametrize("format", FORMATS)
def test_higher_quality_means_bigger_file(harbor: NDArray[np.uint8], format: VideoFormat) -> None:
    sizes = [len(encode_video(harbor[:6], 8, format=format, quality=q)) for q in Quality]
    assert sizes[0] < sizes[1] < sizes[2]  # low, medium, high


def test_quality_table_is_the_documented_one() -> None:
    assert {f.value: [QUALITY_SETTINGS[f][q] for q in Quality] for f in VideoFormat} == {
        "mp4": [28, 23, 18],
        "webm": [40, 32, 24],
        "av1": [42, 35, 27],
        "gif": [64, 128, 256],
        "webp": [60, 80, 92],
    }


def test_default_is_todays_mp4(harbor: NDArray[np.uint8]) -> None:
    assert encode_video(harbor[:4], 8) == encode_mp4(harbor[:4], 8)


def test_browser_settings_per_format(harbor: NDArray[np.uint8]) -> None:
    mp4 = encode_video(harbor[:4], 8, format="mp4", quality="low")
    assert probe_video(mp4).faststart and top_level_boxes(mp4).index(b"moov") < top_level_boxes(mp4).index(b"mdat")
    with av.open(io.BytesIO(mp4), mode="r") as container:
        assert container.streams.video[0].codec_context.profile == "High"
    # WebM: VP9 4:2:0 with its seek index (Cues) ahead of the media.
    webm = encode_video(harbor[:4], 8, format="webm")
    assert probe_video(webm).faststart
    with av.open(io.BytesIO(webm), mode="r") as container:
        assert container.streams.video[0].codec_context.profile == "Profile 0"
    # GIF and WebP loop for ever.
    for format in ("gif", "webp"):
        with Image.open(io.BytesIO(encode_video(harbor[:4], 8, format=format))) as image:
            assert image.info["loop"] == 0


def test_probe_reports_a_webm_with_its_index_at_the_end() -> None:
    info = probe_video(muxed_by_pyav("webm", "libvpx-vp9"))
    assert (info.format, info.frame_count, info.faststart) == (VideoFormat.WEBM, 3, False)


def test_gif_and_webp_take_odd_sizes_the_yuv420p_formats_refuse() -> None:
    odd = harbor_clip(3, 45, 31)
    for format in ("gif", "webp"):
        info = probe_video(encode_video(odd, 8, format=format))
        assert (info.width, info.height, info.frame_count) == (45, 31, 3)
    with pytest.raises(ValueError, match="even for yuv420p, got 45x31"):
        encode_video(odd, 8, format="webm")


@pytest.mark.parametrize(
    ("format", "fps", "message"),
    [
        ("gif", 60, "fps must be an int from 1 to 50 for gif .*whole centiseconds.*, got 60"),
        ("webp", 100, "fps must be an int from 1 to 90 for webp .*10 ms or less.*, got 100"),
        ("mp4", 0, "fps must be an int from 1 to 240 for mp4, got 0"),
    ],
)
def test_rates_a_format_cannot_play_are_refused(format: str, fps: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_video(smooth_frames(2, 16, 16), fps, format=format)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "mkv"}, "format must be one of mp4, webm, gif, webp, av1; got 'mkv'"),
        ({"quality": "ultra"}, "quality must be one of low, medium, high; got 'ultra'"),
        ({"metadata": {"seed": 42}}, "metadata must map str to str, got 'seed': 42"),
    ],
)
def test_bad_format_quality_or_metadata_is_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_video(smooth_frames(2, 16, 16), 8, **kwargs)  # type: ignore[arg-type]


def test_av1_without_an_encoder_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.video

    monkeypatch.setattr(pipeline.video, "AV1_ENCODERS", ("no-such-av1-encoder",))
    assert VideoFormat.AV1 not in available_formats()
    with pytest.raises(FormatUnavailable, match=r"^format av1 needs an AV1 encoder \(no-such-av1-encoder\)") as caught:
        encode_video(smooth_frames(2, 16, 16), 8, format="av1")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("format", available_formats())
def test_encoding_leaves_the_threads_scheduling_as_it_was(format: VideoFormat) -> None:
    """SVT-AV1 makes the thread that opens it real-time (SCHED_FIFO 99) when it may, as root does; a mux
    process, or a test run, would then start every later process real-time and starve the machine."""
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # any user may; shows the policy is given back
    try:
        encode_video(smooth_frames(4, 64, 64), 8, format=format)
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"], capture_output=True, text=True
        )
        assert int(child.stdout) == os.SCHED_BATCH
    finally:
        os.sched_setscheduler(0, before[0], before[1])


def test_names_types_and_extensions() -> None:
    assert [content_type_of_format(f) for f in VideoFormat] == [
        "video/mp4",
        "video/webm",
        "image/gif",
        "image/webp",
        "video/mp4",
    ]
    assert [extension_of_format(f) for f in VideoFormat] == [".mp4", ".webm", ".gif", ".webp", ".mp4"]
    assert [is_animated_image(f) for f in VideoFormat] == [False, False, True, True, False]
    assert (max_fps("gif"), max_fps("webp"), max_fps("mp4")) == (50, 90, 240)
    assert format_from_extension("out.webm") is VideoFormat.WEBM
    assert format_from_extension(Path("clips/LOOP.GIF")) is VideoFormat.GIF
    assert format_from_extension("a.b/out.webp") is VideoFormat.WEBP
    assert format_from_extension("out.mp4") is VideoFormat.MP4
    with pytest.raises(ValueError, match=r"cannot tell the video format of 'out.mkv': the name must end in \.gif"):
        format_from_extension("out.mkv")
    with pytest.raises(ValueError, match="cannot tell the video format of 'out'"):
        format_from_extension("out")


def test_mismatch_names_what_differs(harbor: NDArray[np.uint8]) -> None:
    mp4 = probe_video(encode_video(harbor[:8], 8))
    assert video_mismatch(mp4, frame_count=9, fps=8) == "encoded 8 frames; asked 9"
    assert video_mismatch(mp4, frame_count=8, fps=12) == "encoded at 8 fps; asked 12"
    gif = probe_video(encode_video(harbor[:8], 8, format="gif"))
    assert video_mismatch(gif, frame_count=8, fps=8) is None
    assert (
        video_mismatch(gif, frame_count=8, fps=10)
        == "frame 1 starts at 0.1300 s; at 10 fps it should start at 0.1000 s"
    )


def test_probe_rejects_a_broken_gif() -> None:
    data = encode_video(smooth_frames(3, 16, 16), 8, format="gif")
    with pytest.raises(ValueError, match="not a readable gif"):
        probe_video(data[:40])
