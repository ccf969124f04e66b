"""The object-store port: where large artifacts live, and the adapters behind it (S3 via minio, in memory).

Calls block; services run them off the event loop. Every read is verified against the size and
sha256 of the :class:`ObjectRef` it was given, so a truncated or replaced object never flows on.
"""

import hashlib
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypedDict, Unpack
from urllib.parse import quote, urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from contracts.refs import ObjectRef

SHA256_METADATA = "sha256"
"""User-metadata field (``x-amz-meta-sha256``) holding the hex digest written at put time."""
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_MAX_PRESIGN_S = 7 * 24 * 3600  # the S3 limit for a SigV4 presigned URL


class ObjectStoreError(Exception):
    """Base of object-store failures that are not a plain bug in the caller."""


class ObjectMissingError(ObjectStoreError):
    """The object does not exist: permanent for the message that referenced it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class ObjectIntegrityError(ObjectStoreError):
    """The object's size or sha256 differs from its reference: permanent, never retried."""

    def __init__(self, key: str, expected: str, actual: str) -> None:
        super().__init__(f"object {key!r} failed verification: expected {expected}, got {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class ObjectStoreUnavailableError(ObjectStoreError):
    """The store could not be reached or answered with a server error: transient, worth a retry."""


class ObjectStore(Protocol):
    """Port for large artifacts; messages carry the :class:`ObjectRef` that :meth:`put` returns."""

    bucket: str

    def put(self, key: str, data: bytes, content_type: str) -> ObjectRef:
        """Store ``data`` under ``key`` (overwriting) and return its reference."""
        ...

    def get(self, ref: ObjectRef) -> bytes:
        """Return the object's bytes after checking them against ``ref``'s size and sha256."""
        ...

    def head(self, key: str) -> ObjectRef | None:
        """Reference of an existing object without reading it; None when absent or of unknown hash."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (non-empty); return how many."""
        ...

    def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        """Delete every object under ``prefix`` (non-empty) last written before ``cutoff``; return how many."""
        ...

    def presigned_get_url(self, ref: ObjectRef, expires_s: int) -> str:
        """A URL that downloads the object without credentials for ``expires_s`` seconds."""
        ...


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``, as :class:`ObjectRef` stores it."""
    return hashlib.sha256(data).hexdigest()


def verify(ref: ObjectRef, data: bytes) -> bytes:
    """Return ``data`` if it matches ``ref``'s size and sha256, else raise ObjectIntegrityError."""
    if len(data) != ref.size:
        raise ObjectIntegrityError(ref.key, f"{ref.size} bytes", f"{len(data)} bytes")
    digest = sha256_hex(data)
    if digest != ref.sha256:
        raise ObjectIntegrityError(ref.key, f"sha256 {ref.sha256}", f"sha256 {digest}")
    return data


def _ref_of(bucket: str, key: str, data: bytes, content_type: str) -> ObjectRef:
    return ObjectRef(bucket=bucket, key=key, size=len(data), sha256=sha256_hex(data), content_type=content_type)


def _check_key(key: str) -> None:
    if not key or len(key) > 1024:
        raise ValueError(f"object key must be 1 to 1024 characters, got {key!r}")


def _check_prefix(prefix: str) -> None:
    # An empty prefix would empty the whole bucket: every job's artifacts at once.
    if not prefix:
        raise ValueError("prefix must not be empty")


def _check_cutoff(cutoff: datetime) -> None:
    if cutoff.tzinfo is None:
        raise ValueError(f"cutoff must carry a time zone (S3 times are UTC), got {cutoff!r}")


def _check_expiry(expires_s: int) -> None:
    if not 1 <= expires_s <= _MAX_PRESIGN_S:
        raise ValueError(f"expires_s must be between 1 and {_MAX_PRESIGN_S}, got {expires_s}")


class ClientOptions(TypedDict, total=False):
    """Keyword options of :func:`minio_client`, passed through by :class:`S3ObjectStore`."""

    region: str
    connect_timeout_s: float
    read_timeout_s: float


def minio_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = "us-east-1",
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 15.0,
) -> Minio:
    """A minio client with short timeouts and no retries of its own (its default retries 5 times).

    ``endpoint`` is a URL such as ``http://127.0.0.1:9000``; https turns TLS on.
    """
    url = urlsplit(endpoint)
    if url.scheme not in {"http", "https"} or not url.netloc:
        raise ValueError(f"endpoint must look like http://host:port, got {endpoint!r}")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        retries=False,
        maxsize=10,
    )
    return Minio(
        url.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=url.scheme == "https",
        region=region,
        http_client=http,
    )


class S3ObjectStore:
    """:class:`ObjectStore` on any S3 API (MinIO, SeaweedFS, AWS) through the minio client.

    Failures are mapped: unreachable or 5xx -> ObjectStoreUnavailableError (the pipeline retries,
    bounded), missing key -> ObjectMissingError, anything else -> ObjectStoreError.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        **options: Unpack[ClientOptions],
    ) -> None:
        """``options`` as for :func:`minio_client`: ``region``, ``connect_timeout_s``, ``read_timeout_s``."""
        self.endpoint = endpoint
        self.bucket = bucket
        self._client = minio_client(endpoint, access_key, secret_key, **options)

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists."""
        with _translated(self.bucket):
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as error:
                    # Another replica created it between our check and our create.
                    if error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

    def put(self, key: str, data: bytes, content_type: str) -> ObjectRef:
        """Store ``data`` under ``key`` with its sha256 in the object's metadata."""
        _check_key(key)
        ref = _ref_of(self.bucket, key, data, content_type)
        with _translated(key):
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata={SHA256_METADATA: ref.sha256},
            )
        return ref

    def get(self, ref: ObjectRef) -> bytes:
        """Download and verify the object ``ref`` points to."""
        with _translated(ref.key):
            response = self._client.get_object(ref.bucket, ref.key)
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
        return verify(ref, data)

    def head(self, key: str) -> ObjectRef | None:
        """Reference built from the object's stored metadata; None when absent or written without a sha256."""
        _check_key(key)
        try:
            with _translated(key):
                stat = self._client.stat_object(self.bucket, key)
        except ObjectMissingError:
            return None
        digest = _metadata_value(stat.metadata, SHA256_METADATA)
        if digest is None or stat.size is None:
            return None
        try:
            return ObjectRef(
                bucket=self.bucket,
                key=key,
                size=stat.size,
                sha256=digest,
                content_type=stat.content_type or "application/octet-stream",
            )
        except ValueError:
            # Foreign or damaged metadata: treat as unknown so the caller rewrites the object.
            return None

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns the number deleted."""
        _check_prefix(prefix)
        with _translated(prefix):
            names = [
                obj.object_name
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name is not None
            ]
        return self._remove(prefix, names)

    def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        """Delete every object under ``prefix`` last written before ``cutoff``; returns the number deleted."""
        _check_prefix(prefix)
        _check_cutoff(cutoff)
        with _translated(prefix):
            names = [
                obj.object_name
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name is not None and obj.last_modified is not None and obj.last_modified < cutoff
            ]
        return self._remove(prefix, names)

    def _remove(self, prefix: str, names: list[str]) -> int:
        with _translated(prefix):
            errors = list(self._client.remove_objects(self.bucket, (DeleteObject(name) for name in names)))
        if errors:
            first = errors[0]
            raise ObjectStoreError(
                f"deleting {len(errors)} of {len(names)} objects under {prefix!r} failed, "
                f"first {first.name!r}: {first.message}"
            )
        return len(names)

    def presigned_get_url(self, ref: ObjectRef, expires_s: int) -> str:
        """SigV4 presigned GET URL; computed locally, no request is made."""
        _check_expiry(expires_s)
        with _translated(ref.key):
            return self._client.presigned_get_object(ref.bucket, ref.key, expires=timedelta(seconds=expires_s))

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.endpoint}, bucket={self.bucket!r})"


def _metadata_value(metadata: object, name: str) -> str | None:
    """Read a user-metadata field whatever case or ``x-amz-meta-`` prefix the server returns."""
    if not hasattr(metadata, "items"):
        return None
    wanted = {name.lower(), f"x-amz-meta-{name}".lower()}
    for header, value in metadata.items():
        if str(header).lower() in wanted:
            return str(value)
    return None


@contextmanager
def _translated(key: str) -> Iterator[None]:
    """Turn minio, urllib3 and socket failures into this module's errors, naming ``key``."""
    try:
        yield
    except S3Error as error:
        if error.code in _MISSING_CODES:
            raise ObjectMissingError(key) from error
        status = error.response.status if error.response is not None else 0
        if status >= 500 or error.code in _TRANSIENT_CODES:
            raise ObjectStoreUnavailableError(f"object store failed on {key!r}: {error.code}") from error
        raise ObjectStoreError(f"object store refused {key!r}: {error.code}: {error.message}") from error
    except ServerError as error:
        if error.status_code >= 500:
            raise ObjectStoreUnavailableError(f"object store failed on {key!r}: {_one_line(error)}") from error
        raise ObjectStoreError(f"object store answered oddly for {key!r}: {_one_line(error)}") from error
    except InvalidResponseError as error:
        # A proxy or a starting server answers 502/503 with HTML; minio keeps the status private.
        status = int(getattr(error, "_code", 0) or 0)
        kind = ObjectStoreUnavailableError if status >= 500 else ObjectStoreError
        raise kind(f"object store answered oddly for {key!r}: {_one_line(error)}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ObjectStoreUnavailableError(f"object store unreachable for {key!r}: {_one_line(error)}") from error


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


@dataclass(frozen=True)
class _Stored:
    data: bytes
    content_type: str
    sha256: str
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))


class MemoryObjectStore:
    """In-memory :class:`ObjectStore` with the same verification and errors, for handler tests.

    Records every ref it stored (``puts``) and was asked for (``gets``); :meth:`tamper` corrupts an
    object behind its recorded hash, and ``unavailable = True`` makes every call fail as transient.
    """

    def __init__(self, bucket: str = "i2v-memory") -> None:
        self.bucket = bucket
        self.puts: list[ObjectRef] = []
        self.gets: list[ObjectRef] = []
        self.unavailable = False
        self._objects: dict[str, _Stored] = {}
        self._lock = threading.Lock()

    def _check_available(self, key: str) -> None:
        if self.unavailable:
            raise ObjectStoreUnavailableError(f"object store unreachable for {key!r}: marked unavailable")

    def put(self, key: str, data: bytes, content_type: str) -> ObjectRef:
        """Store a copy of ``data`` under ``key``."""
        _check_key(key)
        self._check_available(key)
        ref = _ref_of(self.bucket, key, data, content_type)
        with self._lock:
            self._objects[key] = _Stored(bytes(data), content_type, ref.sha256)
            self.puts.append(ref)
        return ref

    def get(self, ref: ObjectRef) -> bytes:
        """Return the verified bytes of ``ref``."""
        self._check_available(ref.key)
        with self._lock:
            self.gets.append(ref)
            stored = self._objects.get(ref.key) if ref.bucket == self.bucket else None
        if stored is None:
            raise ObjectMissingError(ref.key)
        return verify(ref, stored.data)

    def head(self, key: str) -> ObjectRef | None:
        """Reference from the recorded metadata (as S3 would: not re-hashed)."""
        _check_key(key)
        self._check_available(key)
        with self._lock:
            stored = self._objects.get(key)
        if stored is None:
            return None
        return ObjectRef(
            bucket=self.bucket,
            key=key,
            size=len(stored.data),
            sha256=stored.sha256,
            content_type=stored.content_type,
        )

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns the number deleted."""
        _check_prefix(prefix)
        self._check_available(prefix)
        with self._lock:
            doomed = [key for key in self._objects if key.startswith(prefix)]
            for key in doomed:
                del self._objects[key]
        return len(doomed)

    def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        """Delete every object under ``prefix`` last written before ``cutoff``; returns the number deleted."""
        _check_prefix(prefix)
        _check_cutoff(cutoff)
        self._check_available(prefix)
        with self._lock:
            doomed = [k for k, v in self._objects.items() if k.startswith(prefix) and v.modified < cutoff]
            for key in doomed:
                del self._objects[key]
        return len(doomed)

    def presigned_get_url(self, ref: ObjectRef, expires_s: int) -> str:
        """A ``memory://`` URL; nothing can download it, but it names the object and expiry."""
        _check_expiry(expires_s)
        self._check_available(ref.key)
        return f"memory://{ref.bucket}/{quote(ref.key)}?expires_s={expires_s}"

    def tamper(self, key: str, data: bytes) -> None:
        """Replace the bytes of ``key`` but keep its recorded size/hash metadata, as silent corruption would."""
        with self._lock:
            stored = self._objects.get(key)
            if stored is None:
                raise ObjectMissingError(key)
            self._objects[key] = _Stored(bytes(data), stored.content_type, stored.sha256, stored.modified)

    def backdate(self, key: str, modified: datetime) -> None:
        """Make ``key`` look last written at ``modified``, as an object stored long ago would."""
        with self._lock:
            stored = self._objects.get(key)
            if stored is None:
                raise ObjectMissingError(key)
            self._objects[key] = _Stored(stored.data, stored.content_type, stored.sha256, modified)

    def keys(self) -> list[str]:
        """Keys currently stored, sorted."""
        with self._lock:
            return sorted(self._objects)
