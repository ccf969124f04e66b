"""The gateway's index of jobs: who owns which job and where it stands, for listing and status.

Filled on submit and kept current from the events stream (see :mod:`services.gateway.events`). A
checkpoint of the last folded stream sequence lets a restarted gateway catch up on what it missed.
SQLite, one connection per call: every call is blocking and runs in a worker thread.
"""

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from contracts.messages import parse_event
from services.gateway.progress import TERMINAL_STATUSES, JobView, job_id_of, spec_of

_VIEW: TypeAdapter[JobView] = TypeAdapter(JobView)
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        status TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        view TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_by_account ON jobs (account, job_id)",
    "CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), sequence INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS idempotency (
        account TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        job_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (account, key)
    )""",
)
IDEMPOTENCY_WINDOW_S = 24 * 3600
"""How long an ``Idempotency-Key`` names the job it first made."""


@dataclass(frozen=True)
class Idempotency:
    """A client's ``Idempotency-Key`` and the fingerprint of what it sent with it."""

    key: str
    fingerprint: str


class IdempotencyKeyUsedError(Exception):
    """The account used this key within the window already: for ``job_id``, with a body of ``fingerprint``."""

    def __init__(self, job_id: str, fingerprint: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.fingerprint = fingerprint


_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))


class JobsIndex:
    """Jobs by id and by account; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Every account's jobs are listed here: readable by the owner only (SQLite gives -wal/-shm this mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                conn.execute(statement)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def add_if_room(
        self, view: JobView, max_active: int, idempotency: Idempotency | None = None, now: float | None = None
    ) -> int | None:
        """Record the job unless its account already has ``max_active`` unfinished jobs; returns that
        count when refused, None when added. With ``idempotency``, the key is recorded for the job, or
        :class:`IdempotencyKeyUsedError` names the job it already stands for. One write lock for all."""
        now = time.time() if now is None else now
        with self._write() as conn:
            if idempotency is not None:
                conn.execute("DELETE FROM idempotency WHERE created_at < ?", (now - IDEMPOTENCY_WINDOW_S,))
                used = _idempotent(conn, view.account, idempotency.key)
                if used is not None:
                    raise IdempotencyKeyUsedError(*used)
            active = _active(conn, view.account)
            if active >= max_active:
                return active
            _store(conn, view)
            if idempotency is not None:
                conn.execute(
                    "INSERT INTO idempotency (account, key, fingerprint, job_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (view.account, idempotency.key, idempotency.fingerprint, view.job_id, now),
                )
            return None

    def idempotent(self, account: str, key: str, now: float | None = None) -> tuple[str, str] | None:
        """The job and body fingerprint ``key`` stands for, if the account used it within the window."""
        now = time.time() if now is None else now
        with self._connect() as conn:
            return _idempotent(conn, account, key, now - IDEMPOTENCY_WINDOW_S)

    def remove(self, job_id: str) -> None:
        """Forget a job that was never queued, and any idempotency key that named it."""
        with self._write() as conn:
            conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM idempotency WHERE job_id = ?", (job_id,))

    def get(self, job_id: str) -> JobView | None:
        with self._connect() as conn:
            row = conn.execute("SELECT view FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _VIEW.validate_json(row[0])

    def list(self, account: str, limit: int, before: str | None = None) -> list[JobView]:
        """The account's jobs, newest first (job ids are time-ordered), not deleted ones."""
        sql = "SELECT view FROM jobs WHERE account = ? AND deleted = 0"
        params: list[object] = [account]
        if before:
            sql += " AND job_id < ?"
            params.append(before)
        sql += " ORDER BY job_id DESC LIMIT ?"
        params.append(limit)
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_VIEW.validate_json(r[0]) for r in rows]

    def active_count(self, account: str) -> int:
        with self._connect() as conn:
            return _active(conn, account)

    def mark_deleted(self, job_id: str) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT view FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return
            view = _VIEW.validate_json(row[0])
            view.deleted = True
            _store(conn, view)

    def checkpoint(self) -> int:
        """The last events-stream sequence folded in (0 before any)."""
        with self._connect() as conn:
            row = conn.execute("SELECT sequence FROM checkpoint WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def fold(self, events: Sequence[tuple[int, bytes]]) -> int:
        """Fold a batch of (sequence, raw event) in one transaction; returns how many changed a job.

        Events of jobs this gateway never saw are skipped unless they carry the job's spec (a
        terminal event of a job submitted elsewhere, e.g. by the CLI), which then opens a row.
        """
        if not events:
            return 0
        changed: dict[str, JobView] = {}
        with self._write() as conn:
            for sequence, data in events:
                try:
                    event = parse_event(data)
                except ValidationError:
                    continue  # a newer schema or a stray message: not ours to fold
                job_id = job_id_of(event)
                view = changed.get(job_id) or _load(conn, job_id)
                if view is None:
                    spec = spec_of(event)
                    if spec is None:
                        continue
                    view = JobView.submitted(spec)
                if view.apply(sequence, event):
                    changed[view.job_id] = view
            for view in changed.values():
                _store(conn, view)
            last = max(seq for seq, _ in events)
            conn.execute(
                "INSERT INTO checkpoint (id, sequence) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET sequence = max(sequence, excluded.sequence)",
                (last,),
            )
        return len(changed)


def _active(conn: sqlite3.Connection, account: str) -> int:
    row = conn.execute(
        f"SELECT count(*) FROM jobs WHERE account = ? AND status NOT IN ({_TERMINAL_SQL})", (account,)
    ).fetchone()
    return int(row[0])


def _idempotent(conn: sqlite3.Connection, account: str, key: str, since: float = 0.0) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT job_id, fingerprint FROM idempotency WHERE account = ? AND key = ? AND created_at >= ?",
        (account, key, since),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _load(conn: sqlite3.Connection, job_id: str) -> JobView | None:
    row = conn.execute("SELECT view FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else _VIEW.validate_json(row[0])


def _store(conn: sqlite3.Connection, view: JobView) -> None:
    conn.execute(
        "INSERT INTO jobs (job_id, account, status, deleted, view) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, deleted = excluded.deleted,"
        " view = excluded.view",
        (view.job_id, view.account, view.status.value, int(view.deleted), _VIEW.dump_json(view).decode()),
    )
