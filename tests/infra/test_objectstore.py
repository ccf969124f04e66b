"""One behavioural suite for every ObjectStore adapter, plus what only a real S3 server can show."""

import io
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.refs import ObjectRef
from infra.objectstore import (
    MemoryObjectStore,
    ObjectIntegrityError,
    ObjectMissingError,
    ObjectStore,
    ObjectStoreUnavailableError,
    S3ObjectStore,
    minio_client,
    sha256_hex,
)
from infra.seaweed import SeaweedS3

pytestmark = pytest.mark.integration

Tamper = Callable[[str, bytes], None]


@pytest.fixture(params=["memory", "s3"])
def store_and_tamper(request: pytest.FixtureRequest) -> tuple[ObjectStore, Tamper]:
    """An adapter and a way to corrupt one of its objects behind the recorded hash."""
    if request.param == "memory":
        memory = MemoryObjectStore()
        return memory, memory.tamper
    s3: S3ObjectStore = request.getfixturevalue("object_store")
    seaweed: SeaweedS3 = request.getfixturevalue("seaweed")
    raw = minio_client(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)

    def overwrite_keeping_metadata(key: str, data: bytes) -> None:
        stat = raw.stat_object(s3.bucket, key)
        digest = stat.metadata["x-amz-meta-sha256"] if stat.metadata else ""
        raw.put_object(s3.bucket, key, io.BytesIO(data), len(data), metadata={"sha256": digest})

    return s3, overwrite_keeping_metadata


@pytest.fixture
def store(store_and_tamper: tuple[ObjectStore, Tamper]) -> ObjectStore:
    return store_and_tamper[0]


def test_put_get_head_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 100
    ref = store.put("jobs/j1/latents.safetensors", data, "application/octet-stream")
    assert ref == ObjectRef(
        bucket=store.bucket,
        key="jobs/j1/latents.safetensors",
        size=len(data),
        sha256=sha256_hex(data),
        content_type="application/octet-stream",
    )
    assert store.get(ref) == data
    assert store.head("jobs/j1/latents.safetensors") == ref


def test_empty_object_round_trips(store: ObjectStore) -> None:
    ref = store.put("jobs/j1/empty", b"", "text/plain")
    assert ref.size == 0
    assert store.get(ref) == b""


def test_overwrite_replaces_and_head_reports_the_new_hash(store: ObjectStore) -> None:
    old = store.put("jobs/j1/video.mp4", b"first", "video/mp4")
    new = store.put("jobs/j1/video.mp4", b"second", "video/mp4")
    assert store.head("jobs/j1/video.mp4") == new
    with pytest.raises(ObjectIntegrityError):
        store.get(old)


def test_missing_object(store: ObjectStore) -> None:
    assert store.head("jobs/none/image.png") is None
    ref = ObjectRef(bucket=store.bucket, key="jobs/none/image.png", size=1, sha256="0" * 64, content_type="x/y")
    with pytest.raises(ObjectMissingError, match=re.escape("jobs/none/image.png")) as missing:
        store.get(ref)
    assert missing.value.key == "jobs/none/image.png"


def test_tampered_object_fails_verification(store_and_tamper: tuple[ObjectStore, Tamper]) -> None:
    store, tamper = store_and_tamper
    ref = store.put("jobs/j2/frames.bin", b"good frames", "application/octet-stream")
    tamper("jobs/j2/frames.bin", b"evil frames")
    # head trusts the metadata written at put time; only a read can reveal the corruption.
    assert store.head("jobs/j2/frames.bin") == ref
    with pytest.raises(ObjectIntegrityError, match="sha256") as failed:
        store.get(ref)
    assert failed.value.key == "jobs/j2/frames.bin"
    assert failed.value.expected == f"sha256 {ref.sha256}"
    assert failed.value.actual == f"sha256 {sha256_hex(b'evil frames')}"
    assert "\n" not in str(failed.value)


def test_size_mismatch_fails_verification(store: ObjectStore) -> None:
    ref = store.put("jobs/j3/poster.jpg", b"12345", "image/jpeg")
    with pytest.raises(ObjectIntegrityError, match="6 bytes"):
        store.get(ref.model_copy(update={"size": 6}))


def test_delete_prefix_removes_only_that_prefix(store: ObjectStore) -> None:
    for name in ("a", "b", "c/d"):
        store.put(f"jobs/j4/{name}", name.encode(), "text/plain")
    keep = store.put("jobs/j40/a", b"other job", "text/plain")
    assert store.delete_prefix("jobs/j4/") == 3
    assert store.head("jobs/j4/a") is None
    assert store.get(keep) == b"other job"
    assert store.delete_prefix("jobs/j4/") == 0
    with pytest.raises(ValueError, match="prefix"):
        store.delete_prefix("")


def test_delete_older_than_removes_only_what_was_written_before_the_cutoff(store: ObjectStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)  # a minute of slack for the server's clock
    for name in ("upload", "g0/video.mp4"):
        store.put(f"jobs/j6/{name}", name.encode(), "text/plain")
    other = store.put("elsewhere/j6", b"not a job's", "text/plain")

    assert store.delete_older_than("jobs/", before) == 0  # all of it is newer
    assert store.head("jobs/j6/upload") is not None

    assert store.delete_older_than("jobs/", datetime.now(UTC) + timedelta(minutes=5)) == 2
    assert store.head("jobs/j6/upload") is None and store.head("jobs/j6/g0/video.mp4") is None
    assert store.get(other) == b"not a job's"  # outside the prefix
    with pytest.raises(ValueError, match="time zone"):
        store.delete_older_than("jobs/", datetime.now())  # a naive time is refused
    with pytest.raises(ValueError, match="prefix"):
        store.delete_older_than("", datetime.now(UTC))


def test_bad_arguments_are_named(store: ObjectStore) -> None:
    ref = store.put("jobs/j5/x", b"x", "text/plain")
    with pytest.raises(ValueError, match="expires_s"):
        store.presigned_get_url(ref, 0)
    with pytest.raises(ValueError, match="key"):
        store.put("", b"x", "text/plain")


def test_presigned_url_names_the_object(store: ObjectStore) -> None:
    ref = store.put("jobs/j6/video.mp4", b"movie", "video/mp4")
    url = store.presigned_get_url(ref, 60)
    assert "jobs/j6/video.mp4" in url


# --- only a real S3 server can show these --------------------------------------------------------


def test_presigned_url_downloads_without_credentials(object_store: S3ObjectStore) -> None:
    ref = object_store.put("jobs/j7/video.mp4", b"movie bytes", "video/mp4")
    with urllib.request.urlopen(object_store.presigned_get_url(ref, 60), timeout=5) as response:
        assert response.read() == b"movie bytes"
        assert response.headers["Content-Type"] == "video/mp4"


def test_object_without_hash_metadata_heads_as_unknown(object_store: S3ObjectStore, seaweed: SeaweedS3) -> None:
    raw = minio_client(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
    raw.put_object(object_store.bucket, "jobs/j8/foreign", io.BytesIO(b"abc"), 3)
    assert object_store.head("jobs/j8/foreign") is None


def test_stopped_server_is_unavailable_quickly(tmp_path: Path) -> None:
    with SeaweedS3(tmp_path) as server:
        store = S3ObjectStore(server.endpoint, server.access_key, server.secret_key, "gone-soon")
        store.ensure_bucket()
        ref = store.put("jobs/j9/a", b"a", "text/plain")
    started = time.monotonic()
    with pytest.raises(ObjectStoreUnavailableError, match="unreachable"):
        store.get(ref)
    with pytest.raises(ObjectStoreUnavailableError):
        store.head("jobs/j9/a")
    with pytest.raises(ObjectStoreUnavailableError):
        store.put("jobs/j9/b", b"b", "text/plain")
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers, like a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_hung_server_times_out_as_unavailable(silent_endpoint: str) -> None:
    store = S3ObjectStore(silent_endpoint, "key", "secret-key", "hung-bucket", read_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ObjectStoreUnavailableError, match="ReadTimeout"):
        store.head("jobs/j10/a")
    assert time.monotonic() - started < 3


def test_memory_store_records_calls_and_can_be_made_unavailable() -> None:
    store = MemoryObjectStore()
    ref = store.put("jobs/j11/a", b"a", "text/plain")
    store.get(ref)
    assert store.puts == [ref]
    assert store.gets == [ref]
    assert store.keys() == ["jobs/j11/a"]
    store.unavailable = True
    with pytest.raises(ObjectStoreUnavailableError):
        store.get(ref)
    with pytest.raises(ObjectMissingError):
        MemoryObjectStore().tamper("jobs/none", b"x")
