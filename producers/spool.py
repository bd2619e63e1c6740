"""Durable local spool for the ATE publisher: a wafer event is never lost.

Why a spool: the tester host must keep accepting wafers while Kafka is
unreachable (network cut, broker upgrade, publisher restart). The watcher
thread writes each event here *before* anything is sent; the delivery thread
sends what is pending and marks it delivered only after the broker
acknowledged it. A crash at any point leaves the event either not yet spooled
(the watcher re-reads the file) or spooled and pending (it is re-sent), never
gone.

Why SQLite in WAL mode with ``synchronous=FULL``: it is in the standard
library, a committed transaction survives a process crash *and* power loss,
and WAL lets the delivery thread read while the watcher writes.

Delivery is at-least-once: an entry sent but not yet marked delivered when the
process dies is sent again. Consumers dedupe on ``event_id``, which is also
the spool's idempotency key (re-enqueueing a spooled event is a no-op, until
it is purged).

Thread safety: one connection guarded by a lock, so every method may be
called from any thread; other processes on the same file are serialised by
SQLite's own locking (``timeout`` is how long to wait for them).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Final

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spool (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    topic        TEXT    NOT NULL,
    key          BLOB,
    value        BLOB    NOT NULL,
    headers      TEXT    NOT NULL,   -- JSON object of str -> str
    lot_id       TEXT,
    created_at   REAL    NOT NULL,   -- unix seconds
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at REAL                -- unix seconds; NULL while pending
);
CREATE INDEX IF NOT EXISTS spool_pending ON spool (seq) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS spool_delivered ON spool (delivered_at) WHERE delivered_at IS NOT NULL;
"""

_COLUMNS: Final = "seq, event_id, topic, key, value, headers, lot_id, created_at, attempts, last_error"


@dataclass(frozen=True)
class SpoolEntry:
    """One pending event, as the delivery thread needs it to produce to Kafka."""

    seq: int
    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    lot_id: str | None
    created_at: datetime
    attempts: int
    last_error: str | None


class Spool:
    """A crash-safe FIFO of Kafka events, backed by one SQLite file.

    Usage::

        with Spool(path) as spool:
            spool.enqueue(event_id, topic, key, value, headers, lot_id)   # watcher thread
            for entry in spool.pending(100): ...                           # delivery thread
            spool.mark_delivered([entry.seq])
    """

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Close the database; committed entries stay on disk for the next ``Spool(path)``."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT: take the write lock up front so readers never see half a batch."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- writer side ------------------------------------------------------

    def enqueue(
        self,
        event_id: str,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, str] | None = None,
        lot_id: str | None = None,
    ) -> bool:
        """Store an event durably (committed and fsynced when this returns).

        Returns:
            True if stored, False if an entry with this ``event_id`` is already
            spooled (a re-published wafer is not sent twice).
        """
        row = (event_id, topic, key, value, json.dumps(dict(headers or {})), lot_id, time.time())
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO spool (event_id, topic, key, value, headers, lot_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return cursor.rowcount == 1

    # -- delivery side ----------------------------------------------------

    def pending(self, limit: int = 100) -> list[SpoolEntry]:
        """The oldest ``limit`` undelivered entries, in enqueue (seq) order.

        Why strictly the oldest: consumers rely on the events of one lot
        arriving in order. Returning a prefix of the seq order means no entry
        is ever handed out while an earlier entry of its lot is held back.
        A failing entry therefore blocks those behind it until it is
        delivered; that is the price of order, and ``attempts``/``last_error``
        make such an entry visible.
        """
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM spool WHERE delivered_at IS NULL ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [
            SpoolEntry(
                seq=seq,
                event_id=event_id,
                topic=topic,
                key=key,
                value=value,
                headers=json.loads(headers),
                lot_id=lot_id,
                created_at=datetime.fromtimestamp(created_at, tz=UTC),
                attempts=attempts,
                last_error=last_error,
            )
            for seq, event_id, topic, key, value, headers, lot_id, created_at, attempts, last_error in rows
        ]

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        """Record broker acknowledgement of these entries (one transaction)."""
        now = time.time()
        with self._lock, self._transaction() as conn:
            conn.executemany(
                "UPDATE spool SET delivered_at = ? WHERE seq = ? AND delivered_at IS NULL",
                ((now, seq) for seq in seqs),
            )

    def mark_failed(self, seq: int, error: str) -> None:
        """Count a failed delivery attempt; the entry stays pending."""
        with self._lock:
            self._conn.execute(
                "UPDATE spool SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error, seq)
            )

    def backlog(self) -> int:
        """Number of entries not yet delivered (a health metric: should drain to 0)."""
        with self._lock:
            (count,) = self._conn.execute("SELECT COUNT(*) FROM spool WHERE delivered_at IS NULL").fetchone()
        return int(count)

    def purge_delivered(self, older_than: timedelta) -> int:
        """Delete entries delivered more than ``older_than`` ago; returns how many.

        Keep ``older_than`` longer than any re-publish window: a purged
        ``event_id`` can be enqueued (and sent) again.
        """
        cutoff = time.time() - older_than.total_seconds()
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM spool WHERE delivered_at IS NOT NULL AND delivered_at < ?", (cutoff,)
            )
        return cursor.rowcount
