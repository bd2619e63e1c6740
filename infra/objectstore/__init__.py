"""Object storage for archived source files and die-level masks.

Two backends behind one interface, chosen by URL: ``s3://bucket[/prefix]``
(S3, MinIO, moto, through the ``minio`` client) and ``file:///path`` (a local
directory, the zero-setup default). Both pass the same contract tests.
"""

from infra.objectstore.base import ObjectNotFound, ObjectStore, object_key
from infra.objectstore.factory import open_object_store

__all__ = ["ObjectNotFound", "ObjectStore", "object_key", "open_object_store"]
