"""Ingest: validate an uploaded image and prepare it at a model resolution.

Only JPEG, PNG and WebP stills are accepted, decided by the file's content. Dimensions are read
from the header before any pixel is decoded, so decompression bombs are refused cheaply.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from contracts.failures import FailureCode

MIN_SIDE = 16
"""Smallest width or height accepted, in pixels."""
MAX_SIDE = 2048
"""Largest side ``fit_resolution`` picks on its own; matches ``contracts.params.Resolution``."""
_UPLOAD_HINT = "upload a JPEG, PNG or WebP image"
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageRejected(ValueError):
    """The upload cannot be used; ``code`` is stable and snake_case, the message is for people."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PreparedImage:
    """An upload made ready for the model: RGB at the output size, and its PNG encoding."""

    image: Image.Image
    png: bytes
    width: int
    height: int
    source_width: int
    source_height: int
    source_format: str


def fit_resolution(
    source_w: int, source_h: int, model_size: tuple[int, int], requested: tuple[int, int] | None
) -> tuple[int, int]:
    """Pick the output (width, height).

    ``requested`` wins exactly. Otherwise keep the source aspect ratio at about the pixel area of
    ``model_size``, both sides multiples of 64 between 64 and ``MAX_SIDE``.
    """
    if source_w < 1 or source_h < 1:
        raise ValueError(f"source size must be positive, got {source_w}x{source_h}")
    if requested is not None:
        if requested[0] < 1 or requested[1] < 1:
            raise ValueError(f"requested size must be positive, got {requested[0]}x{requested[1]}")
        return requested
    if model_size[0] < 1 or model_size[1] < 1:
        raise ValueError(f"model_size must be positive, got {model_size[0]}x{model_size[1]}")
    area = model_size[0] * model_size[1]
    aspect = source_w / source_h
    # Clamp the long side first so extreme panoramas keep the area on the short side.
    ideal_long = min(math.sqrt(area * max(aspect, 1 / aspect)), float(MAX_SIDE))
    ideal_short = min(max(area / ideal_long, 64.0), ideal_long)
    ideal_w, ideal_h = (ideal_long, ideal_short) if aspect >= 1 else (ideal_short, ideal_long)
    # Of the multiples of 64 around the ideal, keep the one with the least log error in aspect plus area.
    candidates = [(w, h) for w in _multiples_of_64_around(ideal_w) for h in _multiples_of_64_around(ideal_h)]
    return min(candidates, key=lambda wh: abs(math.log(wh[0] / wh[1] / aspect)) + abs(math.log(wh[0] * wh[1] / area)))


def prepare_image(
    data: bytes,
    *,
    model_size: tuple[int, int],
    requested: tuple[int, int] | None = None,
    max_bytes: int = 25 * 2**20,
    max_pixels: int = 40_000_000,
) -> PreparedImage:
    """Validate an upload and return it as RGB, oriented, alpha flattened, cropped to the output size.

    Raises :class:`ImageRejected` with a stable ``code`` for anything that is not a usable still
    JPEG, PNG or WebP image. Pillow's own bomb limit (``Image.MAX_IMAGE_PIXELS``) still applies.
    """
    img, kind, raw_w, raw_h = _decoded(data, model_size, requested, max_bytes, max_pixels, smallest_jpeg=False)

    # 5. Output size in the upright frame (PNG and WebP only expose EXIF once loaded).
    swaps = _orientation(img) in _SWAPPING_ORIENTATIONS
    source_w, source_h = (raw_h, raw_w) if swaps else (raw_w, raw_h)
    out_w, out_h = fit_resolution(source_w, source_h, model_size, requested)

    # 6. Upright, 8-bit sRGB-ish RGB, alpha on white, then cover-resize and center-crop.
    rgb = _to_rgb(_upright(img))
    resized = _cover_crop(rgb, (out_w, out_h))
    buffer = io.BytesIO()
    resized.save(buffer, format="PNG")
    return PreparedImage(
        image=resized,
        png=buffer.getvalue(),
        width=out_w,
        height=out_h,
        source_width=source_w,
        source_height=source_h,
        source_format=kind,
    )


def check_image(
    data: bytes,
    *,
    model_size: tuple[int, int],
    requested: tuple[int, int] | None = None,
    max_bytes: int = 25 * 2**20,
    max_pixels: int = 40_000_000,
) -> tuple[int, int]:
    """Refuse what :func:`prepare_image` refuses, with the same codes and messages, and return the
    (width, height) it would prepare, without preparing it: a JPEG decodes at its smallest draft
    scale and nothing is converted or resized, so memory stays at one decoded image at most.
    """
    img, _kind, raw_w, raw_h = _decoded(data, model_size, requested, max_bytes, max_pixels, smallest_jpeg=True)
    swaps = _orientation(img) in _SWAPPING_ORIENTATIONS
    img.close()
    source_w, source_h = (raw_h, raw_w) if swaps else (raw_w, raw_h)
    return fit_resolution(source_w, source_h, model_size, requested)


def _decoded(
    data: bytes,
    model_size: tuple[int, int],
    requested: tuple[int, int] | None,
    max_bytes: int,
    max_pixels: int,
    *,
    smallest_jpeg: bool,
) -> tuple[Image.Image, str, int, int]:
    """Steps 1-4 of :func:`prepare_image`: the checked, decoded image, its format and its raw size."""
    # 1. Cheap checks on the raw bytes: size, then the format from the magic bytes.
    if not data:
        raise ImageRejected(FailureCode.EMPTY, "the file is empty")
    if len(data) > max_bytes:
        raise ImageRejected(
            FailureCode.TOO_LARGE, f"file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB"
        )
    kind = _sniff_format(data)
    label = _label(kind)

    # 2. Dimensions from the header alone, before Pillow allocates anything.
    header_size = _header_size(data, kind)
    if header_size is not None:
        _check_pixels(*header_size, max_pixels)

    # 3. Open (header only) with just the plugin the content claims.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated uploads would pass")
    try:
        img = Image.open(io.BytesIO(data), formats=[kind])
    except UnidentifiedImageError as exc:
        raise ImageRejected(FailureCode.CORRUPT, f"corrupt {label}: the header cannot be read") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(FailureCode.TOO_MANY_PIXELS, f"image is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _decode_failure(label, exc) from exc
    if img.format != kind:
        raise ImageRejected(FailureCode.NOT_AN_IMAGE, f"the file looks like {label} but does not decode as one")
    if getattr(img, "is_animated", False):
        animated = "animated PNG (APNG)" if kind == "PNG" else f"animated {label}"
        raise ImageRejected(FailureCode.ANIMATED, f"{animated} is not supported: upload a still image")
    raw_w, raw_h = img.size
    _check_pixels(raw_w, raw_h, max_pixels)
    if raw_w < MIN_SIDE or raw_h < MIN_SIDE:
        raise ImageRejected(
            FailureCode.TOO_SMALL, f"image is {raw_w}x{raw_h}; both sides must be at least {MIN_SIDE} pixels"
        )

    # 4. Decode every pixel now so truncation and corruption surface here, not later. JPEG can
    # decode at 1/2..1/8 scale when the output is small; its EXIF is parsed at open, so do that first.
    if kind == "JPEG":
        if smallest_jpeg:
            img.draft(None, (1, 1))  # the smallest scale libjpeg offers still reads every block
        else:
            _draft_jpeg(img, model_size, requested)
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(FailureCode.TOO_MANY_PIXELS, f"image is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _decode_failure(label, exc) from exc
    return img, kind, raw_w, raw_h


def _draft_jpeg(img: Image.Image, model_size: tuple[int, int], requested: tuple[int, int] | None) -> None:
    raw_w, raw_h = img.size
    swaps = _orientation(img) in _SWAPPING_ORIENTATIONS
    source_w, source_h = (raw_h, raw_w) if swaps else (raw_w, raw_h)
    out_w, out_h = fit_resolution(source_w, source_h, model_size, requested)
    cover = max(out_w / source_w, out_h / source_h)
    need_w, need_h = math.ceil(source_w * cover), math.ceil(source_h * cover)
    img.draft(None, (need_h, need_w) if swaps else (need_w, need_h))


def _multiples_of_64_around(value: float) -> tuple[int, ...]:
    low = min(max(math.floor(value / 64), 1), MAX_SIDE // 64) * 64
    return (low, low + 64) if low + 64 <= MAX_SIDE else (low,)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageRejected(
            FailureCode.TOO_MANY_PIXELS,
            f"image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:g} megapixels",
        )


def _label(kind: str) -> str:
    return "WebP" if kind == "WEBP" else kind


_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def _accepted_format(head: bytes) -> str | None:
    """The accepted Pillow format these leading bytes announce, if any (content, never the name)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def header_pixels(data: bytes) -> int | None:
    """Width x height as an accepted format's header gives them, before any decode; None when ``data`` is
    not one or its header is not where expected."""
    kind = _accepted_format(data[:12])
    size = _header_size(data, kind) if kind is not None else None
    return size[0] * size[1] if size is not None else None


def content_type_of(data: bytes) -> str:
    """MIME type of an upload by its leading bytes: one of the accepted formats, else octet-stream."""
    found = _accepted_format(data[:12])
    return _CONTENT_TYPES[found] if found else "application/octet-stream"


def _sniff_format(data: bytes) -> str:
    """Return the accepted Pillow format name for ``data`` or raise a specific rejection."""
    head = data[:64]
    accepted = _accepted_format(head)
    if accepted is not None:
        return accepted
    refused = _refused_format_name(head)
    if refused is None and _looks_like_text(data[:4096]):
        text = data[:4096].decode("utf-8", errors="ignore").lower()
        if "<svg" in text:
            refused = "SVG"
        else:
            raise ImageRejected(FailureCode.NOT_AN_IMAGE, f"this is a text file, not an image: {_UPLOAD_HINT}")
    if refused is None:
        raise ImageRejected(FailureCode.NOT_AN_IMAGE, f"the file is not a recognisable image: {_UPLOAD_HINT}")
    raise ImageRejected(FailureCode.UNSUPPORTED_FORMAT, f"{refused} is not supported: {_UPLOAD_HINT}")


def _refused_format_name(head: bytes) -> str | None:
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ICO"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"mif1", b"msf1"):
            return "HEIC"
        return "video"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    # A multi-byte character may be cut at the end of the sample; ignore only that tail.
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3
    return True


def _header_size(data: bytes, kind: str) -> tuple[int, int] | None:
    """Width and height from the file header, or None when the header is not where expected."""
    if kind == "PNG":
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if kind == "WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X" and len(data) >= 30:
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 " and len(data) >= 30:
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
        return None
    return _jpeg_header_size(data)


def _jpeg_header_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF_MARKERS and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    return None


def _decode_failure(label: str, exc: BaseException) -> ImageRejected:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "truncated" in reason.lower() or isinstance(exc, EOFError):
        return ImageRejected(
            FailureCode.TRUNCATED, f"truncated {label}: the file ends before the image data is complete"
        )
    return ImageRejected(FailureCode.CORRUPT, f"corrupt {label}: {reason[:200]}")


def _orientation(img: Image.Image) -> int:
    # A broken EXIF block should not cost the user the upload; treat it as upright.
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1
    return value if isinstance(value, int) else 1


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError):
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB: colour-managed when a profile is embedded, alpha on white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit samples fill 0..65535; 257 maps 65535 exactly to 255 without clipping.
        samples = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if img.mode == "F":
        samples = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(samples), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("RGB", "CMYK") and img.info.get("icc_profile"):
        managed = _to_srgb(img)
        if managed is not None:
            return managed
    return img.convert("RGB")


def _to_srgb(img: Image.Image) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        target = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(img, source, target, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    return converted


def _cover_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover ``size`` and take the centre, in one Lanczos resample of the source box."""
    out_w, out_h = size
    src_w, src_h = img.size
    scale = max(out_w / src_w, out_h / src_h)
    box_w, box_h = out_w / scale, out_h / scale
    left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
    # reducing_gap lets Pillow shrink big uploads by box filtering first; Lanczos finishes the job.
    return img.resize(size, Image.Resampling.LANCZOS, box=(left, top, left + box_w, top + box_h), reducing_gap=3.0)


def frame_png(frame: np.ndarray) -> bytes:
    """One uint8 RGB frame (H, W, 3) as PNG, unchanged: an extension's picture, its parent's last frame."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype.name != "uint8":
        raise ValueError(f"a frame is uint8 (H, W, 3), got {frame.dtype.name} {tuple(frame.shape)}")
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()
