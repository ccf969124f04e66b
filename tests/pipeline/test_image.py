"""Ingest validation and preparation over a corpus of awkward uploads made in code."""

import io
import re
import time
import tracemalloc

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageFile

from pipeline.image import ImageRejected, PreparedImage, fit_resolution, prepare_image
from tests.pipeline.bad_images import bad_image_corpus, encoded, halves, png_bomb

MODEL = (1024, 576)
CORPUS = bad_image_corpus()
REJECTED = sorted(name for name, (_, code) in CORPUS.items() if code is not None)
ACCEPTED = sorted(name for name, (_, code) in CORPUS.items() if code is None)


def prepare(name: str, model_size: tuple[int, int] = MODEL) -> PreparedImage:
    return prepare_image(CORPUS[name][0], model_size=model_size)


def mean_rgb(image: Image.Image, box: tuple[int, int, int, int]) -> NDArray[np.float64]:
    """Mean colour of ``box`` (left, top, right, bottom) as float RGB."""
    pixels = np.asarray(image.crop(box), dtype=np.float64).reshape(-1, 3)
    mean: NDArray[np.float64] = pixels.mean(axis=0)
    return mean


@pytest.mark.parametrize("name", REJECTED)
def test_rejected_cases_give_their_code_and_a_one_line_message(name: str) -> None:
    data, code = CORPUS[name]
    with pytest.raises(ImageRejected) as caught:
        prepare_image(data, model_size=MODEL)
    assert caught.value.code == code
    message = str(caught.value)
    assert message and "\n" not in message and "BytesIO" not in message


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_cases_come_out_rgb_at_the_output_size(name: str) -> None:
    prepared = prepare(name)
    assert prepared.image.mode == "RGB"
    assert prepared.image.size == (prepared.width, prepared.height)
    assert prepared.width % 64 == 0 and prepared.height % 64 == 0
    assert prepared.source_format in ("JPEG", "PNG", "WEBP")
    decoded = Image.open(io.BytesIO(prepared.png))
    assert decoded.format == "PNG"
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(prepared.image))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("still_gif", "GIF is not supported: upload a JPEG, PNG or WebP image"),
        ("png_30000", "image is 30000x30000 (900.0 megapixels); the limit is 40 megapixels"),
        ("truncated_jpeg", "truncated JPEG: the file ends before the image data is complete"),
        ("animated_webp", "animated WebP is not supported: upload a still image"),
        ("svg", "SVG is not supported: upload a JPEG, PNG or WebP image"),
        ("one_pixel", "image is 1x1; both sides must be at least 16 pixels"),
    ],
)
def test_messages_name_the_problem(name: str, message: str) -> None:
    with pytest.raises(ImageRejected, match=f"^{re.escape(message)}$"):
        prepare(name)


@pytest.mark.parametrize("name", ["png_bomb_40000", "png_30000", "jpeg_header_bomb", "webp_header_bomb"])
def test_bombs_are_refused_fast_without_allocating_their_pixels(name: str) -> None:
    data = CORPUS[name][0]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageRejected) as caught:
            prepare_image(data, model_size=MODEL)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == "too_many_pixels"
    assert elapsed < 1.0
    assert peak < 8 * 2**20


def test_building_the_bombs_is_cheap() -> None:
    started = time.perf_counter()
    data = png_bomb(40000)
    assert time.perf_counter() - started < 1.0
    assert len(data) < 64 * 2**10


def test_exif_orientation_is_applied() -> None:
    prepared = prepare("exif_rotated_jpeg")
    # Stored 64x32 red-left/blue-right with orientation 6: upright it is portrait, red on top.
    assert (prepared.source_width, prepared.source_height) == (32, 64)
    assert prepared.height > prepared.width
    w, h = prepared.image.size
    top, bottom = mean_rgb(prepared.image, (0, 0, w, h // 4)), mean_rgb(prepared.image, (0, 3 * h // 4, w, h))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_alpha_is_flattened_onto_white() -> None:
    image = prepare("rgba_with_alpha").image
    w, h = image.size
    assert np.allclose(mean_rgb(image, (0, 0, w // 4, h)), 255, atol=1)
    assert np.allclose(mean_rgb(image, (3 * w // 4, 0, w, h)), (0, 200, 0), atol=2)


def test_transparent_palette_png_becomes_white() -> None:
    assert np.allclose(np.asarray(prepare("palette_transparent_png").image), 255)


def test_16bit_grey_png_is_scaled_not_clipped() -> None:
    image = prepare("png_16bit_grey").image
    w, h = image.size
    left, right = mean_rgb(image, (0, 0, w // 4, h)), mean_rgb(image, (3 * w // 4, 0, w, h))
    assert np.allclose(left, 128, atol=1)
    assert np.allclose(right, 255, atol=1)


def test_16bit_rgb_png_keeps_its_colours() -> None:
    image = prepare("png_16bit_rgb").image
    w, h = image.size
    assert np.allclose(mean_rgb(image, (0, 0, w // 4, h)), (255, 0, 0), atol=1)
    assert np.allclose(mean_rgb(image, (3 * w // 4, 0, w, h)), (0, 0, 128), atol=1)


def test_cmyk_jpeg_converts_to_rgb_red() -> None:
    red = mean_rgb(prepare("cmyk_jpeg").image, (0, 0, 64, 64))
    assert red[0] > 230 and red[1] < 30 and red[2] < 30


@pytest.mark.parametrize("name", ["greyscale_jpeg", "greyscale_png"])
def test_greyscale_becomes_equal_channels(name: str) -> None:
    pixels = np.asarray(prepare(name).image, dtype=np.int16)
    assert np.all(np.abs(pixels - 77) <= 2)


def test_requested_resolution_wins_exactly() -> None:
    prepared = prepare_image(CORPUS["plain_jpeg"][0], model_size=MODEL, requested=(320, 512))
    assert (prepared.width, prepared.height) == (320, 512)
    assert prepared.image.size == (320, 512)
    assert (prepared.source_width, prepared.source_height) == (160, 90)


def test_cover_crop_keeps_the_centre() -> None:
    stripes = Image.new("RGB", (300, 100), (255, 0, 0))
    stripes.paste(Image.new("RGB", (100, 100), (0, 255, 0)), (100, 0))
    stripes.paste(Image.new("RGB", (100, 100), (0, 0, 255)), (200, 0))
    image = prepare_image(encoded(stripes, "PNG"), model_size=(64, 64)).image
    assert image.size == (64, 64)
    # Lanczos rings a little at the stripe edges; the middle columns must be pure green.
    assert np.allclose(mean_rgb(image, (8, 0, 56, 64)), (0, 255, 0), atol=3)


def test_format_is_decided_by_content() -> None:
    png = encoded(halves((32, 32), (255, 0, 0), (0, 0, 255)), "PNG")
    assert prepare_image(png, model_size=(64, 64)).source_format == "PNG"
    with pytest.raises(ImageRejected) as caught:
        prepare_image(b"\xff\xd8\xff" + png[3:], model_size=(64, 64))
    assert caught.value.code == "corrupt"


def test_byte_limit() -> None:
    data = CORPUS["plain_jpeg"][0]
    with pytest.raises(ImageRejected) as caught:
        prepare_image(data, model_size=MODEL, max_bytes=len(data) - 1)
    assert caught.value.code == "too_large"
    assert prepare_image(data, model_size=MODEL, max_bytes=len(data)).width == 1024


def test_pixel_limit_is_configurable() -> None:
    data = encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageRejected, match=r"the limit is 0\.005 megapixels") as caught:
        prepare_image(data, model_size=(64, 64), max_pixels=5_000)
    assert caught.value.code == "too_many_pixels"
    assert prepare_image(data, model_size=(64, 64), max_pixels=10_000).width == 64


def test_large_jpeg_prepares_quickly() -> None:
    y, x = np.mgrid[0:3000, 0:4000]
    gradient = np.stack([x * 255 // 4000, y * 255 // 3000, (x + y) * 255 // 7000], axis=-1).astype(np.uint8)
    data = encoded(Image.fromarray(gradient), "JPEG", quality=90)
    started = time.perf_counter()
    prepared = prepare_image(data, model_size=MODEL)
    assert time.perf_counter() - started < 2.0
    assert (prepared.width, prepared.height) == (896, 640)
    assert (prepared.source_width, prepared.source_height) == (4000, 3000)


def test_refuses_to_run_when_pillow_would_accept_truncated_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        prepare("plain_jpeg")


@pytest.mark.parametrize(
    ("source", "model", "expected"),
    [
        ((1920, 1080), (1024, 576), (1024, 576)),
        ((1080, 1920), (1024, 576), (576, 1024)),
        ((1000, 1000), (1024, 576), (768, 768)),
        ((4000, 3000), (1024, 576), (896, 640)),
        ((100, 1), (1024, 576), (2048, 256)),
        ((1, 100), (1024, 576), (256, 2048)),
        ((500, 500), (64, 64), (64, 64)),
    ],
)
def test_fit_resolution_keeps_aspect_and_area(
    source: tuple[int, int], model: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert fit_resolution(*source, model, None) == expected


@pytest.mark.parametrize("source", [(w, h) for w in (16, 333, 1280, 5000) for h in (16, 777, 1080, 5000)])
def test_fit_resolution_gives_multiples_of_64(source: tuple[int, int]) -> None:
    width, height = fit_resolution(*source, (1024, 576), None)
    assert width % 64 == 0 and height % 64 == 0
    assert 64 <= width <= 2048 and 64 <= height <= 2048
    assert abs(width * height / (1024 * 576) - 1) < 0.25


def test_fit_resolution_requested_wins_and_bad_values_are_named() -> None:
    assert fit_resolution(1920, 1080, (1024, 576), (100, 30)) == (100, 30)
    with pytest.raises(ValueError, match="0x5"):
        fit_resolution(0, 5, (1024, 576), None)
    with pytest.raises(ValueError, match="-8x64"):
        fit_resolution(10, 10, (1024, 576), (-8, 64))
