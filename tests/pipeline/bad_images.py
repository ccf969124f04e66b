"""A corpus of awkward uploads, all made in code, each with the rejection code ingest must give."""

import io
import struct
import zlib

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def png_bytes(width: int, height: int, *, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG assembled chunk by chunk, so the header can claim what the data does not hold."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A valid PNG header claiming ``side`` x ``side`` grey pixels with only a few rows of data."""
    few_rows = (b"\x00" + b"\x00" * side) * 4
    return png_bytes(side, side, bit_depth=8, color_type=0, idat=zlib.compress(few_rows))


def png_16bit_rgb(left: tuple[int, int, int], right: tuple[int, int, int], size: int = 32) -> bytes:
    """A 16-bit RGB PNG, left half one colour and right half another (Pillow cannot write these)."""
    half = size // 2
    row = struct.pack(">" + "H" * 3 * size, *(left * half + right * (size - half)))
    raw = (b"\x00" + row) * size
    return png_bytes(size, size, bit_depth=16, color_type=2, idat=zlib.compress(raw))


def encoded(img: Image.Image, fmt: str, **params: object) -> bytes:
    """``img`` saved in ``fmt`` to bytes."""
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random RGB pixels: incompressible, so cutting the file lands inside the image data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def halves(size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    """An image whose left half is ``left`` and right half is ``right``."""
    img = Image.new(mode, size, left)
    img.paste(Image.new(mode, (size[0] - size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return img


def exif_rotated_jpeg() -> bytes:
    """A 64x32 JPEG, red left and blue right, tagged orientation 6: upright it is 32x64, red on top."""
    img = halves((64, 32), (255, 0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encoded(img, "JPEG", quality=95, exif=exif.tobytes())


def rgba_with_alpha() -> bytes:
    """A PNG whose left half is fully transparent (black underneath) and right half opaque green."""
    return encoded(halves((32, 32), (0, 0, 0, 0), (0, 200, 0, 255), mode="RGBA"), "PNG")


def grey_16bit_png() -> bytes:
    """A 16-bit greyscale PNG: left half mid grey (0x8080), right half full white (0xFFFF)."""
    samples = np.full((32, 32), 0x8080, dtype=np.uint16)
    samples[:, 16:] = 0xFFFF
    return encoded(Image.fromarray(samples), "PNG")


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG of pure red (0% cyan, 100% magenta and yellow, no black)."""
    return encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def animated(fmt: str) -> bytes:
    """Three frames of different colours in an animated ``fmt`` (GIF, WEBP or PNG)."""
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def jpeg_header_bomb() -> bytes:
    """A small JPEG whose frame header is patched to claim 60000x60000."""
    data = bytearray(encoded(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def webp_header_bomb() -> bytes:
    """A small lossy WebP whose VP8 frame header is patched to claim 16383x16383."""
    data = bytearray(encoded(noise(16, 16), "WEBP", quality=80))
    assert data[12:16] == b"VP8 ", "Pillow wrote an extended WebP; the patch expects a simple one"
    data[26:30] = struct.pack("<HH", 16383, 16383)
    return bytes(data)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of ``data``."""
    return data[: int(len(data) * keep)]


def corrupt_png() -> bytes:
    """A PNG with correct chunk CRCs whose IDAT is not a zlib stream."""
    return png_bytes(32, 32, bit_depth=8, color_type=2, idat=b"this is not deflate data" * 8)


MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)
SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<rect width="64" height="64" fill="red"/></svg>\n'
)


def bad_image_corpus() -> dict[str, tuple[bytes, str | None]]:
    """Case name -> (file bytes, expected ``ImageRejected.code``, or None when it must be accepted)."""
    return {
        "zero_bytes": (b"", "empty"),
        "truncated_jpeg": (truncated(encoded(noise(128, 128), "JPEG", quality=90)), "truncated"),
        "truncated_png": (truncated(encoded(noise(128, 128), "PNG")), "truncated"),
        "corrupt_png": (corrupt_png(), "corrupt"),
        "text_file": (b"name,price\nwidget,3\n" * 10, "not_an_image"),
        "random_bytes": (np.random.default_rng(1).bytes(4096), "not_an_image"),
        "svg": (SVG, "unsupported_format"),
        "pdf": (MINIMAL_PDF, "unsupported_format"),
        "animated_gif": (animated("GIF"), "unsupported_format"),
        "still_gif": (encoded(noise(32, 32), "GIF"), "unsupported_format"),
        "tiff": (encoded(noise(32, 32), "TIFF"), "unsupported_format"),
        "bmp": (encoded(noise(32, 32), "BMP"), "unsupported_format"),
        "avif": (encoded(noise(32, 32), "AVIF"), "unsupported_format"),
        "animated_webp": (animated("WEBP"), "animated"),
        "apng": (animated("PNG"), "animated"),
        "one_pixel": (encoded(Image.new("RGB", (1, 1)), "PNG"), "too_small"),
        "thin_strip": (encoded(Image.new("RGB", (200, 8)), "JPEG"), "too_small"),
        "png_bomb_40000": (png_bomb(40000), "too_many_pixels"),
        "png_30000": (png_bomb(30000), "too_many_pixels"),
        "jpeg_header_bomb": (jpeg_header_bomb(), "too_many_pixels"),
        "webp_header_bomb": (webp_header_bomb(), "too_many_pixels"),
        "plain_jpeg": (encoded(noise(160, 90), "JPEG"), None),
        "plain_webp": (encoded(noise(64, 48), "WEBP", quality=90), None),
        "lossless_webp": (encoded(noise(64, 48), "WEBP", lossless=True), None),
        "cmyk_jpeg": (cmyk_jpeg(), None),
        "png_16bit_grey": (grey_16bit_png(), None),
        "png_16bit_rgb": (png_16bit_rgb((65535, 0, 0), (0, 0, 0x8080)), None),
        "greyscale_jpeg": (encoded(Image.new("L", (32, 32), 77), "JPEG", quality=95), None),
        "greyscale_png": (encoded(Image.new("L", (32, 32), 77), "PNG"), None),
        "palette_transparent_png": (
            encoded(Image.new("RGBA", (32, 32), (0, 0, 0, 0)).convert("P"), "PNG"),
            None,
        ),
        "rgba_with_alpha": (rgba_with_alpha(), None),
        "exif_rotated_jpeg": (exif_rotated_jpeg(), None),
    }
