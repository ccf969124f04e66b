"""Decode slots: small pictures decode two at a time, large ones (by their header) one at a time."""

import asyncio
import io

import PIL.Image

from pipeline.image import header_pixels
from services.gateway.runtime import DECODE_SLOTS, LARGE_DECODE_PIXELS, DecodeSlots


def png_header_only(width: int, height: int) -> bytes:
    """A PNG's signature and IHDR claiming ``width`` x ``height``: all the slots read."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 6, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + b"\0\0\0\0"


def test_the_header_gives_the_pixels_before_any_decode() -> None:
    small = io.BytesIO()
    PIL.Image.new("RGB", (40, 30)).save(small, "JPEG")
    assert header_pixels(small.getvalue()) == 1200
    assert header_pixels(png_header_only(6320, 6320)) == 6320 * 6320
    assert header_pixels(b"GIF89a not accepted") is None


async def most_at_once(slots: DecodeSlots, images: list[bytes]) -> int:
    inside, most = 0, 0

    async def decode(image: bytes) -> None:
        nonlocal inside, most
        async with slots.slot(image):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            inside -= 1

    await asyncio.gather(*(decode(image) for image in images))
    return most


async def test_small_pictures_share_the_slots_and_large_ones_take_turns() -> None:
    small = png_header_only(1000, 1000)
    large = png_header_only(6320, 6320)
    assert 6320 * 6320 >= LARGE_DECODE_PIXELS > 1000 * 1000
    assert await most_at_once(DecodeSlots(), [small] * 6) == DECODE_SLOTS
    assert await most_at_once(DecodeSlots(), [large] * 6) == 1
    assert await most_at_once(DecodeSlots(), [large, small] * 3) == DECODE_SLOTS
    assert await most_at_once(DecodeSlots(), [b"not a picture"] * 3) == 1
