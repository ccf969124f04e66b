"""The object store a service talks to, built from settings."""

from infra.objectstore import S3ObjectStore
from services.config import Settings


def object_store_from(settings: Settings) -> S3ObjectStore:
    return S3ObjectStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket)
