"""Settings that point a service at the test session's real servers."""

from pathlib import Path
from typing import Any

from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from services.config import Settings


def settings_for_servers(
    nats: NatsServer, seaweed: SeaweedS3, store: S3ObjectStore, state_dir: Path, **overrides: Any
) -> Settings:
    """Settings on ``nats`` and on ``store``'s bucket in ``seaweed``; ``overrides`` set any other field."""
    return Settings(
        nats_url=nats.url,
        s3_endpoint=seaweed.endpoint,
        s3_access_key=seaweed.access_key,
        s3_secret_key=seaweed.secret_key,
        s3_bucket=store.bucket,
        state_dir=state_dir,
        **overrides,
    )
