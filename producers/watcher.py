"""Watch an ATE drop folder: publish finished files, quarantine bad ones, never crash.

Why "finished" needs care: testers write result files in place, often for
minutes. A file is only picked up once its modification time is at least
``settle_s`` old and its size and mtime did not change since the previous
scan; an STDF file without its closing MRR record (``stats.complete`` False)
is still being written and waits too, unless it stays so for
``incomplete_timeout_s`` (a tester that crashed mid-lot), when it is
quarantined.

After publishing, a file moves to ``done/``; a file that cannot be published
(corrupt, truncated, unsupported, no lot id) moves to ``quarantine/`` with a
``<name>.reason.txt`` beside it. Array files travel with their
``<name>.json`` sidecar.

Restarts: the spool and ``done/`` are the state. A file that was spooled but
not yet moved when the process died is spooled again on the next scan, which
adds nothing (same content-derived event ids) and then moves it.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from datetime import timedelta
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from infra.errors import default_classifier
from producers.formats import WaferFileError, read_wafers
from producers.formats.arrays import sidecar_path
from producers.publisher import Publisher

log = structlog.get_logger(__name__)

DONE_DIR: Final = "done"
QUARANTINE_DIR: Final = "quarantine"
#: Names testers and copy tools use while a file is still being written.
_IN_PROGRESS_SUFFIXES: Final = (".tmp", ".part", ".partial", ".filepart", ".crdownload")


@dataclass
class ScanReport:
    """What one scan did, for logs and tests."""

    published: list[Path] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)
    waiting: list[Path] = field(default_factory=list)
    delivered: int = 0


class DropFolderWatcher:
    """Poll ``folder`` and feed finished wafer files to a :class:`Publisher`."""

    def __init__(
        self,
        publisher: Publisher,
        folder: Path,
        *,
        settle_s: float = 5.0,
        incomplete_timeout_s: float = 600.0,
        spool_retention: timedelta = timedelta(days=7),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.folder = Path(folder)
        self.done = self.folder / DONE_DIR
        self.quarantine = self.folder / QUARANTINE_DIR
        self.settle_s = settle_s
        self.incomplete_timeout_s = incomplete_timeout_s
        self.spool_retention = spool_retention
        self.stop_event = threading.Event()
        self._clock = clock
        self._seen: dict[Path, tuple[int, int]] = {}
        for directory in (self.folder, self.done, self.quarantine):
            directory.mkdir(parents=True, exist_ok=True)

    def run_once(self) -> ScanReport:
        """Scan once: publish or quarantine every finished file, then try delivery."""
        report = ScanReport()
        for path in self._candidates():
            if not self._settled(path):
                report.waiting.append(path)
                continue
            try:
                self._handle(path, report)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the watcher
                if isinstance(exc, sqlite3.Error) or (
                    not isinstance(exc, WaferFileError) and default_classifier(exc) == "retry"
                ):
                    # Object store, spool disk or file system trouble: not the file's fault.
                    log.error("file not handled; will retry", path=str(path), error=str(exc))
                    report.waiting.append(path)
                    continue
                self._move(path, self.quarantine, reason=f"{type(exc).__name__}: {exc}")
                report.quarantined.append(path)
                log.warning("file quarantined", path=str(path), error=str(exc))
        report.delivered = self.publisher.deliver_due()
        # Delivered entries are only kept for re-publish dedup; without a purge
        # the spool of a busy tester would grow forever.
        self.publisher.spool.purge_delivered(self.spool_retention)
        return report

    def run(self, poll_s: float = 2.0) -> None:
        """Scan until :attr:`stop_event` is set (SIGTERM/SIGINT set it, see :meth:`install_signal_handlers`)."""
        log.info("watching", folder=str(self.folder), settle_s=self.settle_s)
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except Exception:  # the watcher must outlive any single bad scan
                log.exception("scan failed")
            self.stop_event.wait(poll_s)
        log.info("watcher stopped", backlog=self.publisher.spool.backlog())

    def install_signal_handlers(self) -> None:
        """Stop gracefully (finishing the current file) on SIGTERM and SIGINT."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_event.set())

    def _candidates(self) -> list[Path]:
        files = sorted(
            (p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith(".")),
            key=lambda p: (p.stat().st_mtime_ns, p.name),
        )
        names = {p.name for p in files}
        return [
            p for p in files
            if not p.name.lower().endswith(_IN_PROGRESS_SUFFIXES)
            and not (p.suffix == ".json" and p.name[: -len(".json")] in names)  # a sidecar
        ]

    def _settled(self, path: Path) -> bool:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        previous = self._seen.get(path)
        self._seen[path] = signature
        unchanged = previous is None or previous == signature
        return unchanged and self._clock() - stat.st_mtime >= self.settle_s

    def _handle(self, path: Path, report: ScanReport) -> None:
        wafers = read_wafers(path)
        if any(not w.stats.complete for w in wafers):
            age = self._clock() - path.stat().st_mtime
            if age < self.incomplete_timeout_s:
                report.waiting.append(path)
                return
            raise WaferFileError(f"no end-of-file record (MRR) after {age:.0f} s; tester stopped?")
        spooled = self.publisher.spool_file(path, wafers=wafers)
        self._move(path, self.done)
        report.published.append(path)
        log.info("file published", path=str(path), events=len(spooled.event_ids),
                 already_spooled=len(spooled.event_ids) - spooled.newly_spooled)

    def _move(self, path: Path, target_dir: Path, reason: str | None = None) -> None:
        self._seen.pop(path, None)
        target = _free_name(target_dir / path.name)
        sidecar = sidecar_path(path)
        path.replace(target)
        if sidecar.exists():
            sidecar.replace(sidecar_path(target))
        if reason is not None:
            target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")


def _free_name(target: Path) -> Path:
    """``target``, or ``name.1``, ``name.2``... when a file of that name was handled before."""
    candidate, n = target, 0
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.name}.{n}")
    return candidate
