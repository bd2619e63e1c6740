"""Pick the object-store backend from the configured URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from infra.objectstore.base import ObjectStore
from infra.objectstore.local import LocalObjectStore
from infra.objectstore.s3 import S3ObjectStore
from infra.settings import Settings


def open_object_store(settings: Settings) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3 via minio; ``file:///dir`` or empty -> local directory."""
    cfg = settings.object_store
    url = cfg.url or (settings.data_dir / "objects").resolve().as_uri()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from minio import Minio

        if not cfg.endpoint:
            raise ValueError("object_store.endpoint is required for s3:// URLs")
        client = Minio(
            cfg.endpoint,
            access_key=cfg.access_key.get_secret_value() if cfg.access_key else None,
            secret_key=cfg.secret_key.get_secret_value() if cfg.secret_key else None,
            secure=cfg.secure,
            region=cfg.region,
        )
        return S3ObjectStore(client, parsed.netloc, parsed.path)
    raise ValueError(f"unsupported object store URL {url!r} (use s3:// or file://)")
