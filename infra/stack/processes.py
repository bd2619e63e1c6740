"""Small process-management helpers: port checks, pid files, detached spawns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class PortInUse(RuntimeError):
    """The port a component should listen on is already taken."""


def ensure_port_free(port: int, component: str, host: str = "127.0.0.1") -> None:
    """Raise :class:`PortInUse` with a clear message if ``host:port`` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"{component}: port {host}:{port} is already in use ({exc.strerror}); "
                f"stop what is using it or set WAFERSTREAM_STACK__{component.upper()}_PORT"
            ) from None


def wait_for_port(port: int, timeout_s: float, host: str = "127.0.0.1") -> bool:
    """True once something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def spawn(args: list[str], log_file: Path, pid_file: Path, env: dict[str, str] | None = None) -> int:
    """Start ``args`` detached from this process (own session), logging to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def pid_alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still running."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def stop_pid(pid_file: Path, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process in ``pid_file`` (SIGKILL after ``timeout_s``); True if it ran."""
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.05)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _running(pid: int) -> bool:
    """True while ``pid`` runs; reaps it if it is our own child (no zombie left)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped:
            return False
    except ChildProcessError:
        pass  # started by another `waferstream stack up`: not ours to reap
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
