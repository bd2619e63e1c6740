"""Local-directory backend: the zero-setup default and the lab/test store."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from infra.objectstore.base import ObjectNotFound, ObjectStore


class LocalObjectStore(ObjectStore):
    """Objects are files under ``root``; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # _check_key rejects absolute keys and "", "." and ".." segments, so a
        # joined key cannot leave the root; no per-call realpath (it was a
        # third of a mask write on the inference hot path).
        return self.root / self._check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        # The temp name is unique to this thread of this live process, so no
        # two writers share one (mkstemp's random names cost a third of a put);
        # a leftover of a crashed process whose pid came back is overwritten.
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
        try:
            handle = open(tmp, "wb")  # noqa: SIM115 - closed below, before the rename
        except FileNotFoundError:  # first object under this prefix
            os.makedirs(path.parent, exist_ok=True)
            handle = open(tmp, "wb")  # noqa: SIM115
        try:
            with handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def key_of(self, uri: str) -> str:
        prefix = self.root.as_uri() + "/"
        if not uri.startswith(prefix):
            raise ValueError(f"{uri} is not in {self.root}")
        return uri[len(prefix) :]
