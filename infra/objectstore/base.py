"""The object-store interface and the only way keys are built."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from schemas.ids import validate_id


class ObjectNotFound(KeyError):
    """No object under that key."""


def object_key(kind: str, *ids: str, filename: str) -> str:
    """Build ``kind/id1/id2/.../filename`` from validated parts.

    Every part goes through :func:`schemas.ids.validate_id`, so a lot id such
    as ``../../etc`` is rejected here instead of escaping the store's root.
    """
    parts = [validate_id(kind, "object kind")]
    parts += [validate_id(part, "id") for part in ids]
    parts.append(validate_id(filename, "file name"))
    return "/".join(parts)


class ObjectStore(ABC):
    """Blocking object-store operations; async callers use ``asyncio.to_thread``."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``key`` (overwriting) and return the object's URI."""

    def put_many(
        self, objects: Sequence[tuple[str, bytes]], content_type: str = "application/octet-stream"
    ) -> None:
        """Store several objects; returns when all are stored (one failure fails the call).

        Callers on an event loop hand a whole batch to one thread instead of
        one thread hop per object. One after another suits a local disk; a
        network store overrides this to have its round trips in flight at once.
        """
        for key, data in objects:
            self.put(key, data, content_type)

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object's bytes; raise ObjectNotFound if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True if an object is stored under ``key``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (no error if absent)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The URI events use to reference ``key``."""

    @abstractmethod
    def key_of(self, uri: str) -> str:
        """Inverse of :meth:`uri`; raises ValueError for a URI of another store."""

    @staticmethod
    def _check_key(key: str) -> str:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"unsafe object key {key!r}")
        return key
