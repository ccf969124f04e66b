"""Shared fixtures: real servers on free loopback ports, started once per session and stopped at its end."""

import uuid
from collections.abc import Iterator

import pytest

from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore, minio_client
from infra.seaweed import SeaweedS3

pytest_plugins = ["pytester", "tests.alone"]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A JetStream nats-server shared by the session; tests keep to streams of their own names."""
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server shared by the session; tests keep to buckets of their own."""
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def object_store(seaweed: SeaweedS3) -> Iterator[S3ObjectStore]:
    """An S3ObjectStore on a fresh bucket, emptied and removed after the test."""
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    store = S3ObjectStore(seaweed.endpoint, seaweed.access_key, seaweed.secret_key, bucket)
    store.ensure_bucket()
    yield store
    if seaweed.running:
        client = minio_client(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)
        for obj in client.list_objects(bucket, recursive=True):
            if obj.object_name is not None:
                client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)
