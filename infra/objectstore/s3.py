"""S3/MinIO backend through the ``minio`` client."""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from minio import Minio
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from infra.errors import DependencyUnavailable
from infra.objectstore.base import ObjectNotFound, ObjectStore

#: Concurrent PUTs of one ``put_many``; the minio client's connection pool
#: keeps 10 connections per host, so more would only queue for a socket.
PUT_CONCURRENCY = 8


class S3ObjectStore(ObjectStore):
    """Objects in ``bucket`` under an optional key ``prefix``; the bucket is created if missing."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._uploads = ThreadPoolExecutor(PUT_CONCURRENCY, thread_name_prefix="s3-put")
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        except HTTPError as exc:
            raise DependencyUnavailable("object_store", exc) from exc

    def _name(self, key: str) -> str:
        key = self._check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        try:
            self.client.put_object(
                self.bucket, self._name(key), io.BytesIO(data), len(data), content_type=content_type
            )
        except HTTPError as exc:
            raise DependencyUnavailable("object_store", exc) from exc
        return self.uri(key)

    def put_many(
        self, objects: Sequence[tuple[str, bytes]], content_type: str = "application/octet-stream"
    ) -> None:
        """Up to :data:`PUT_CONCURRENCY` PUTs in flight: each is a network round trip."""
        list(self._uploads.map(lambda obj: self.put(obj[0], obj[1], content_type), objects))

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(key) from None
            raise
        except HTTPError as exc:
            raise DependencyUnavailable("object_store", exc) from exc
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, self._name(key))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise
        except HTTPError as exc:
            raise DependencyUnavailable("object_store", exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, self._name(key))
        except HTTPError as exc:
            raise DependencyUnavailable("object_store", exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        if ".." in prefix.split("/"):
            raise ValueError(f"unsafe object key prefix {prefix!r}")
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        skip = len(self.prefix) + 1 if self.prefix else 0
        try:
            names = [
                o.object_name[skip:]
                for o in self.client.list_objects(self.bucket, prefix=full, recursive=True)
                if o.object_name
            ]
        except HTTPError as exc:
            raise DependencyUnavailable("object_store", exc) from exc
        return sorted(names)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}"

    def key_of(self, uri: str) -> str:
        prefix = f"s3://{self.bucket}/" + (f"{self.prefix}/" if self.prefix else "")
        if not uri.startswith(prefix):
            raise ValueError(f"{uri} is not in this store")
        return uri[len(prefix) :]
