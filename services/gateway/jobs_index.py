"""The gateway's index of jobs: who owns which job and where it stands, for listing and status.

Filled on submit and kept current from the events stream (see :mod:`services.gateway.events`). A
checkpoint of the last folded stream sequence lets a restarted gateway catch up on what it missed.

One SQL implementation serves SQLite (a file beside the gateway: the one-box default, one gateway
only) and PostgreSQL (a DSN: shared by every gateway). Several gateways fold the same events into a
shared index, so a job's row only ever moves forward: it is written only with a ``last_sequence``
greater than the one it holds. Submissions of one account are serialized (SQLite's write lock, a
PostgreSQL advisory lock per account), so the active-jobs limit and an ``Idempotency-Key`` hold
across gateways. Every call is blocking, opens its own connection, and runs in a worker thread.
"""

import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
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
        view TEXT NOT NULL,
        last_sequence BIGINT NOT NULL DEFAULT 0,
        batch_id TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_by_account ON jobs (account, job_id)",
    "CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), sequence BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS idempotency (
        account TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        job_id TEXT NOT NULL,
        created_at {seconds} NOT NULL,
        PRIMARY KEY (account, key)
    )""",
)
_BATCH_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch_id)"
"""After the column: an index from before batches gains it first."""
_SQLITE_TYPES = {"seconds": "REAL"}
_POSTGRES_TYPES = {"seconds": "DOUBLE PRECISION"}  # PostgreSQL's REAL is 4 bytes: whole minutes off

IDEMPOTENCY_WINDOW_S = 24 * 3600
"""How long an ``Idempotency-Key`` names the job it first made."""

Row = tuple[Any, ...]


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


class IndexInUseError(RuntimeError):
    """Another gateway process serves this SQLite index: several gateways need a PostgreSQL one."""


_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))


def is_postgres(dsn_or_path: str | Path) -> bool:
    return isinstance(dsn_or_path, str) and dsn_or_path.startswith(("postgresql://", "postgres://"))


# --- the two backends -----------------------------------------------------------------------------

Run = Callable[[str, Sequence[object]], list[Row]]
"""One statement of an open transaction, written with ``?`` placeholders whatever the backend."""


class _Backend(Protocol):
    def transaction(self, write: bool) -> AbstractContextManager[Run]: ...
    def serialize(self, run: Run, name: str) -> None: ...
    def claim(self) -> None: ...
    def release(self) -> None: ...


class _SqliteBackend:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._claimed: int | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        # Every account's jobs are listed here: readable by the owner only (SQLite gives -wal/-shm this mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        with self.transaction(write=True) as run:
            for statement in _SCHEMA:
                run(statement.format(**_SQLITE_TYPES), ())
            # An index from before last_sequence had its column: take it from each job's view.
            if not any(column[1] == "last_sequence" for column in run("PRAGMA table_info(jobs)", ())):
                run("ALTER TABLE jobs ADD COLUMN last_sequence BIGINT NOT NULL DEFAULT 0", ())
                run("UPDATE jobs SET last_sequence = COALESCE(json_extract(view, '$.last_sequence'), 0)", ())
            if not any(column[1] == "batch_id" for column in run("PRAGMA table_info(jobs)", ())):
                run("ALTER TABLE jobs ADD COLUMN batch_id TEXT", ())
            run(_BATCH_INDEX, ())

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self, write: bool) -> Iterator[Run]:
        with self._connect() as conn:

            def run(sql: str, params: Sequence[object]) -> list[Row]:
                return conn.execute(sql, params).fetchall()

            if not write:
                yield run
                return
            # IMMEDIATE takes the write lock up front: a count-then-insert cannot interleave with another.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield run
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def serialize(self, run: Run, name: str) -> None:
        """Nothing to do: a SQLite write transaction already excludes every other."""

    def claim(self) -> None:
        if self._claimed is not None:
            return
        fd = os.open(self._path.with_name(self._path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexInUseError(
                f"another gateway serves the jobs index {self._path}: several gateways need a shared PostgreSQL"
                " index (I2V_INDEX_DSN or I2V_LEDGER_DSN=postgresql://...)"
            ) from None
        self._claimed = fd  # held until released or the process ends

    def release(self) -> None:
        if self._claimed is not None:
            os.close(self._claimed)
            self._claimed = None


class _PostgresBackend:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        with self.transaction(write=True) as run:
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL; serialize it.
            self.serialize(run, "i2v.gateway.jobs_index.schema")
            # The last piece there means the schema is whole: leave it be. Even "IF NOT EXISTS" DDL locks
            # the table, and another gateway folding events into it meanwhile makes a deadlock.
            if run("SELECT to_regclass('jobs_by_batch') IS NOT NULL", ())[0][0]:
                return
            for statement in _SCHEMA:
                run(statement.format(**_POSTGRES_TYPES), ())
            run("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS batch_id TEXT", ())
            run(_BATCH_INDEX, ())

    @contextmanager
    def transaction(self, write: bool) -> Iterator[Run]:
        # A connection per call, as the ledger does: thread-safe without a pool.
        with psycopg.connect(self._dsn) as conn:
            cursor = conn.cursor()

            def run(sql: str, params: Sequence[object]) -> list[Row]:
                cursor.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description is not None else []

            try:
                yield run
            except BaseException:
                conn.rollback()
                raise
            if write:
                conn.commit()
            else:
                conn.rollback()

    def serialize(self, run: Run, name: str) -> None:
        """Hold a lock named ``name`` until the transaction ends: every gateway's writers of it queue up."""
        run("SELECT pg_advisory_xact_lock(hashtext(?))", (name,))

    def claim(self) -> None:
        """Nothing to do: any number of gateways may share a PostgreSQL index."""

    def release(self) -> None:
        """Nothing to do: nothing was claimed."""


# --- the index ------------------------------------------------------------------------------------


class JobsIndex:
    """Jobs by id and by account; safe to share between threads and, on PostgreSQL, between gateways.

    ``target`` is a ``postgresql://`` DSN or a SQLite file path (its folders are created).
    """

    def __init__(self, target: str | Path) -> None:
        self._backend: _Backend
        if is_postgres(target):
            self._backend = _PostgresBackend(str(target))
        else:
            self._backend = _SqliteBackend(Path(target).expanduser())

    def claim(self) -> None:
        """Take a SQLite index for this process alone; :class:`IndexInUseError` when another gateway
        process holds it. Nothing for PostgreSQL, which every gateway shares."""
        self._backend.claim()

    def release(self) -> None:
        """Give back what :meth:`claim` took."""
        self._backend.release()

    def add_if_room(
        self, view: JobView, max_active: int, idempotency: Idempotency | None = None, now: float | None = None
    ) -> int | None:
        """Record the job unless its account already has ``max_active`` unfinished jobs; returns that
        count when refused, None when added. With ``idempotency``, the key is recorded for the job, or
        :class:`IdempotencyKeyUsedError` names the job it already stands for. One lock of the account
        for all, whichever gateway takes it."""
        now = time.time() if now is None else now
        with self._backend.transaction(write=True) as run:
            self._backend.serialize(run, f"i2v.gateway.jobs:{view.account}")
            if idempotency is not None:
                run(
                    "DELETE FROM idempotency WHERE account = ? AND created_at < ?",
                    (view.account, now - IDEMPOTENCY_WINDOW_S),
                )
                used = _idempotent(run, view.account, idempotency.key)
                if used is not None:
                    raise IdempotencyKeyUsedError(*used)
            active = _active(run, view.account)
            if active >= max_active:
                return active
            _store(run, view)
            if idempotency is not None:
                run(
                    "INSERT INTO idempotency (account, key, fingerprint, job_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (view.account, idempotency.key, idempotency.fingerprint, view.job_id, now),
                )
            return None

    def add_batch_if_room(
        self,
        views: Sequence[JobView],
        max_active: int,
        idempotency: Idempotency | None = None,
        now: float | None = None,
    ) -> int | None:
        """Record all of a batch's jobs (one account's), or none: as :meth:`add_if_room`, refused unless
        every one of them fits under ``max_active``. The idempotency key names the first job."""
        now = time.time() if now is None else now
        account = views[0].account
        with self._backend.transaction(write=True) as run:
            self._backend.serialize(run, f"i2v.gateway.jobs:{account}")
            if idempotency is not None:
                run(
                    "DELETE FROM idempotency WHERE account = ? AND created_at < ?",
                    (account, now - IDEMPOTENCY_WINDOW_S),
                )
                used = _idempotent(run, account, idempotency.key)
                if used is not None:
                    raise IdempotencyKeyUsedError(*used)
            active = _active(run, account)
            if active + len(views) > max_active:
                return active
            for view in views:
                _store(run, view)
            if idempotency is not None:
                run(
                    "INSERT INTO idempotency (account, key, fingerprint, job_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    (account, idempotency.key, idempotency.fingerprint, views[0].job_id, now),
                )
            return None

    def batch(self, account: str, batch_id: str) -> list[JobView]:
        """The account's jobs of the batch, in the order they were made (seed order); none when not its."""
        with self._backend.transaction(write=False) as run:
            rows = run(
                "SELECT view, deleted FROM jobs WHERE batch_id = ? AND account = ? ORDER BY job_id", (batch_id, account)
            )
        return [_view(r) for r in rows]

    def idempotent(self, account: str, key: str, now: float | None = None) -> tuple[str, str] | None:
        """The job and body fingerprint ``key`` stands for, if the account used it within the window."""
        now = time.time() if now is None else now
        with self._backend.transaction(write=False) as run:
            return _idempotent(run, account, key, now - IDEMPOTENCY_WINDOW_S)

    def remove(self, job_id: str) -> None:
        """Forget a job that was never queued, and any idempotency key that named it."""
        with self._backend.transaction(write=True) as run:
            run("DELETE FROM jobs WHERE job_id = ?", (job_id,))
            run("DELETE FROM idempotency WHERE job_id = ?", (job_id,))

    def get(self, job_id: str) -> JobView | None:
        with self._backend.transaction(write=False) as run:
            return _load(run, job_id)

    def list(self, account: str, limit: int, before: str | None = None) -> list[JobView]:
        """The account's jobs, newest first (job ids are time-ordered), not deleted ones."""
        sql = "SELECT view, deleted FROM jobs WHERE account = ? AND deleted = 0"
        params: list[object] = [account]
        if before:
            sql += " AND job_id < ?"
            params.append(before)
        sql += " ORDER BY job_id DESC LIMIT ?"
        params.append(limit)
        with self._backend.transaction(write=False) as run:
            rows = run(sql, params)
        return [_view(r) for r in rows]

    def active_count(self, account: str) -> int:
        with self._backend.transaction(write=False) as run:
            return _active(run, account)

    def mark_deleted(self, job_id: str) -> None:
        # A column of its own, which folding never writes: a fold racing the delete cannot undo it.
        with self._backend.transaction(write=True) as run:
            run("UPDATE jobs SET deleted = 1 WHERE job_id = ?", (job_id,))

    def checkpoint(self) -> int:
        """The last events-stream sequence folded in (0 before any)."""
        with self._backend.transaction(write=False) as run:
            rows = run("SELECT sequence FROM checkpoint WHERE id = 1", ())
        return int(rows[0][0]) if rows else 0

    def fold(self, events: Sequence[tuple[int, bytes]]) -> int:
        """Fold a batch of (sequence, raw event) in one transaction; returns how many changed a job.

        Events of jobs this gateway never saw are skipped unless they carry the job's spec (a
        terminal event of a job submitted elsewhere, e.g. by the CLI), which then opens a row.
        Idempotent: a job's row is only replaced by a view of a later sequence, so a batch folded
        twice, or by two gateways at once, leaves what one fold would. Rows are written in job id
        order, so two gateways folding overlapping batches lock them in the same order.
        """
        if not events:
            return 0
        changed: dict[str, JobView] = {}
        with self._backend.transaction(write=True) as run:
            for sequence, data in events:
                try:
                    event = parse_event(data)
                except ValidationError:
                    continue  # a newer schema or a stray message: not ours to fold
                job_id = job_id_of(event)
                view = changed.get(job_id) or _load(run, job_id)
                if view is None:
                    spec = spec_of(event)
                    if spec is None:
                        continue
                    view = JobView.submitted(spec)
                if view.apply(sequence, event):
                    changed[view.job_id] = view
            for job_id in sorted(changed):
                _store(run, changed[job_id])
            last = max(seq for seq, _ in events)
            run(
                "INSERT INTO checkpoint (id, sequence) VALUES (1, ?)"
                " ON CONFLICT (id) DO UPDATE SET sequence = excluded.sequence"
                " WHERE excluded.sequence > checkpoint.sequence",
                (last,),
            )
        return len(changed)


def _active(run: Run, account: str) -> int:
    rows = run(f"SELECT count(*) FROM jobs WHERE account = ? AND status NOT IN ({_TERMINAL_SQL})", (account,))
    return int(rows[0][0])


def _idempotent(run: Run, account: str, key: str, since: float = 0.0) -> tuple[str, str] | None:
    rows = run(
        "SELECT job_id, fingerprint FROM idempotency WHERE account = ? AND key = ? AND created_at >= ?",
        (account, key, since),
    )
    return (str(rows[0][0]), str(rows[0][1])) if rows else None


def _load(run: Run, job_id: str) -> JobView | None:
    rows = run("SELECT view, deleted FROM jobs WHERE job_id = ?", (job_id,))
    return _view(rows[0]) if rows else None


def _view(row: Row) -> JobView:
    view = _VIEW.validate_json(row[0])
    view.deleted = bool(row[1])
    return view


def _store(run: Run, view: JobView) -> None:
    """Insert the job, or replace its row if ``view`` is of a later sequence (never ``deleted``: see
    :meth:`JobsIndex.mark_deleted`)."""
    run(
        "INSERT INTO jobs (job_id, account, status, deleted, view, last_sequence, batch_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, view = excluded.view,"
        " last_sequence = excluded.last_sequence WHERE excluded.last_sequence > jobs.last_sequence",
        (
            view.job_id,
            view.account,
            view.status.value,
            int(view.deleted),
            _VIEW.dump_json(view).decode(),
            view.last_sequence,
            view.batch_id,
        ),
    )
