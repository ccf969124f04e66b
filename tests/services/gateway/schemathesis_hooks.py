"""Schemathesis hooks for the gateway's run (``SCHEMATHESIS_HOOKS``): uploads are sometimes real pictures.

Random bytes never decode, so without these every submit is refused and no job ever exists for the
stateful links (status, events, cancel, replay, media, delete) to follow. Random bytes still come too.
"""

import base64
import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _picture(kind: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(out, format=kind)
    return out.getvalue()


PICTURES = [_picture("PNG", (64, 48)), _picture("JPEG", (96, 64)), _picture("WEBP", (48, 64))]

_upload = st.one_of(st.sampled_from(PICTURES), st.binary(max_size=64))
for media_type in ("image/png", "image/jpeg", "image/webp"):
    schemathesis.openapi.media_type(media_type, _upload)
schemathesis.openapi.format("byte", _upload.map(lambda data: base64.b64encode(data).decode()))
