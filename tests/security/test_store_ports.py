"""SeaweedFS serves objects through S3 with its keys, and through nothing else: the filer, volume and
master HTTP ports of `weed mini` refuse a client without the signing keys that only the process holds."""

import json
import socket
import ssl
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3

pytestmark = pytest.mark.integration

_SECRET = b"another account's upload"


def _http(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_filer_port_refuses_an_object_s3_serves_with_keys(seaweed: SeaweedS3, object_store: S3ObjectStore) -> None:
    """The review's finding: GET <filer>/buckets/<bucket>/jobs/<job>/upload returned the upload, no keys asked."""
    key = "jobs/jvictim/upload"
    ref = object_store.put(key, _SECRET, "application/octet-stream")
    assert object_store.get(ref) == _SECRET  # S3 with the keys still works

    filer = f"http://{seaweed.host}:{seaweed.ports['filer']}"
    path = f"/buckets/{object_store.bucket}/{key}"
    assert _http(filer + path) == 401
    assert _http(filer + path + "?metadata=true") == 401
    assert _http(f"{filer}/buckets/{object_store.bucket}/jobs/jvictim/") == 401  # no listing either
    assert _http(filer + path, "PUT", b"overwritten") == 401
    assert _http(filer + path, "DELETE") == 401
    assert object_store.get(ref) == _SECRET


def test_the_volume_and_master_ports_refuse_reads_and_writes_without_a_token(seaweed: SeaweedS3) -> None:
    master = f"http://{seaweed.host}:{seaweed.ports['master']}"
    volume = f"http://{seaweed.host}:{seaweed.ports['volume']}"
    # A blob known to exist: written the way weed's own parts write, with the token the master
    # hands out for that one new file id (which does not let anyone read any file).
    with urllib.request.urlopen(f"{master}/dir/assign", timeout=5) as response:
        fid = json.loads(response.read())["fid"]
        token = response.headers["Authorization"]
    boundary = "i2vboundary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\n\r\n'.encode()
        + _SECRET
        + f"\r\n--{boundary}--\r\n".encode()
    )
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    assert _http(f"{volume}/{fid}", "POST", form, multipart) == 401
    assert _http(f"{volume}/{fid}", "POST", form, {**multipart, "Authorization": token}) == 201

    assert _http(f"{volume}/{fid}") == 401
    assert _http(f"{volume}/{fid}", headers={"Authorization": token}) == 401  # a write token reads nothing
    assert _http(f"{master}/{fid}") == 401  # the master's redirect ends at the same refusal
    assert _http(f"{volume}/{fid}", "DELETE") == 401


def test_no_key_on_the_command_line_or_in_the_log(seaweed: SeaweedS3, object_store: S3ObjectStore) -> None:
    """Any local user reads a command line (ps); the log ends up in reports. The keys are in neither."""
    object_store.put("jobs/jlog/upload", _SECRET, "application/octet-stream")
    assert seaweed.pid is not None
    command_line = Path(f"/proc/{seaweed.pid}/cmdline").read_bytes().decode()
    environment = Path(f"/proc/{seaweed.pid}/environ").read_bytes().decode()
    signing = [item.split("=", 1)[1] for item in environment.split("\0") if item.startswith("WEED_JWT_")]
    assert len(signing) == 4 and all(signing)
    log = seaweed.log_path.read_text(errors="replace")
    for secret in (seaweed.secret_key, *signing):
        assert secret not in command_line
        assert secret not in log


def test_the_data_on_disk_is_the_owners_only(seaweed: SeaweedS3, object_store: S3ObjectStore) -> None:
    """The volumes hold every upload as plain bytes: another local user must not open them past S3."""
    object_store.put("jobs/jdisk/upload", _SECRET, "application/octet-stream")
    assert stat.S_IMODE(seaweed.state_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("port", ["master.grpc", "volume.grpc", "filer.grpc", "s3.grpc", "admin.grpc"])
def test_the_grpc_ports_refuse_a_client_without_the_launchs_certificate(seaweed: SeaweedS3, port: str) -> None:
    """Volume gRPC copies whole volume files and filer gRPC lists and edits entries: mutual TLS only."""
    context = ssl.create_default_context(cafile=str(seaweed.state_dir / "tls" / "ca.crt"))
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    # The server's certificate checks out against the launch's CA; ours is missing, so it hangs up.
    with (
        socket.create_connection((seaweed.host, seaweed.ports[port]), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"),
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        tls.recv(16)
    with socket.create_connection((seaweed.host, seaweed.ports[port]), timeout=5) as raw:
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # plaintext HTTP/2
        assert raw.recv(64) == b""
    assert not (seaweed.state_dir / "tls" / "ca.key").exists()  # nobody can sign another certificate
