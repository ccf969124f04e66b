"""Serving a job's video and poster with HTTP Range, so players can seek, and ETags, so they revalidate.

Videos are a few MB: the gateway reads the object once (verified against its sha256), keeps the
most recent ones in a small byte-bounded cache, and answers each range from memory. A player asks
for several ranges of the same file in a row, so the cache saves most of the object-store reads.
"""

import re
import threading
from collections import OrderedDict

from fastapi.responses import Response

from contracts.refs import ObjectRef
from infra.objectstore import ObjectStore
from services.gateway.errors import ApiError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class MediaCache:
    """Verified object bytes by sha256, least recently used dropped past ``max_bytes``."""

    def __init__(self, store: ObjectStore, max_bytes: int = 64 * 2**20) -> None:
        self._store = store
        self._max = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def read(self, ref: ObjectRef) -> bytes:
        """Blocking: run in a worker thread."""
        with self._lock:
            data = self._items.get(ref.sha256)
            if data is not None:
                self._items.move_to_end(ref.sha256)
                return data
        data = self._store.get(ref)
        if len(data) <= self._max // 4:
            with self._lock:
                if ref.sha256 not in self._items:
                    self._items[ref.sha256] = data
                    self._size += len(data)
                while self._size > self._max and self._items:
                    _, dropped = self._items.popitem(last=False)
                    self._size -= len(dropped)
        return data

    def forget(self, ref: ObjectRef) -> None:
        with self._lock:
            dropped = self._items.pop(ref.sha256, None)
            if dropped is not None:
                self._size -= len(dropped)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions, inclusive, of a single ``bytes=`` range; None for the whole
    file (no header, or a form we ignore as RFC 9110 allows); ApiError 416 when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or (last_text and int(last_text) < first):
        raise _unsatisfiable(size)
    return first, last


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"the requested range is outside the file's {size} bytes",
        field="Range",
        headers={"Content-Range": f"bytes */{size}"},
    )


def entity_tag(ref: ObjectRef) -> str:
    """The object's strong ETag: its content hash, so a replay's new video gets a new tag."""
    return f'"{ref.sha256}"'


def matches(condition: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` list names ``etag`` (weak comparison, as RFC 9110 asks for it)."""
    if condition is None:
        return False
    tags = [tag.strip() for tag in condition.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def media_headers(etag: str, filename: str, download: bool) -> dict[str, str]:
    disposition = "attachment" if download else "inline"
    return {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, max-age=3600",
        "Content-Disposition": f'{disposition}; filename="{filename}"',
    }


def media_response(data: bytes, content_type: str, headers: dict[str, str], range_header: str | None) -> Response:
    """200 with the whole file, or 206 with the one range asked for."""
    span = parse_range(range_header, len(data)) if range_header else None
    if span is None:
        return Response(data, media_type=content_type, headers=headers)
    first, last = span
    ranged = {**headers, "Content-Range": f"bytes {first}-{last}/{len(data)}"}
    return Response(data[first : last + 1], status_code=206, media_type=content_type, headers=ranged)
