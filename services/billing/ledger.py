"""The points ledger: accounts, an append-only journal of entries, and one reservation per job generation.

One SQL implementation serves SQLite (a file; the default for local use) and PostgreSQL (a DSN).
Every balance change writes its entry in the same transaction, so ``balance == sum(entries.points)``
always holds; :meth:`SqlLedger.reconcile` checks it. Entry points are signed: a credit and a refund
are positive, a reserve is negative, and a capture is 0 because the points already left the balance
at reserve time; capture only settles the reservation, and its entry records when.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import psycopg

from contracts.messages import ACCOUNT_NAME_PATTERN, is_account_name

EntryKind = Literal["credit", "reserve", "capture", "refund"]
WebhookOutcome = Literal["delivered", "retrying", "gave_up"]
ReservationState = Literal["reserved", "captured", "refunded", "rejected"]

Row = tuple[Any, ...]

# Long enough to ride out a burst of concurrent writers; short enough that a stuck lock surfaces.
SQLITE_BUSY_TIMEOUT_S = 30.0


class LedgerError(Exception):
    """Base of the ledger's own errors."""


class AccountExistsError(LedgerError):
    """``create_account`` was given a name that is already taken."""


class UnknownAccountError(LedgerError):
    """The named account does not exist."""


class InvalidAccountNameError(LedgerError, ValueError):
    """The name does not match the JobSpec's account pattern, so the account could never submit a job."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"account name {name!r} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-'"
            f" (pattern {ACCOUNT_NAME_PATTERN})"
        )
        self.name = name


class ApiKeyInUseError(LedgerError):
    """The API key hash already belongs to another account."""


@dataclass(frozen=True)
class ReserveResult:
    """Outcome of a reserve: ``state`` is the reservation's state after the call. ``balance`` is the
    account's balance after the call; ``price`` the points held by the reservation (on ``already`` the
    first call's points, whatever this call asked for)."""

    state: ReservationState
    balance: int
    price: int
    already: bool

    @property
    def ok(self) -> bool:
        """The points are held and the job may run."""
        return self.state == "reserved"

    @property
    def settled(self) -> bool:
        """The generation already ended (captured or refunded): it must never run or reserve again."""
        return self.state in ("captured", "refunded")


@dataclass(frozen=True)
class Reservation:
    """The points held for one job generation and how they were settled."""

    job_id: str
    generation: int
    account: str
    points: int
    state: ReservationState


@dataclass(frozen=True)
class Entry:
    """One line of an account's journal; ``points`` is signed (see the module docstring)."""

    id: int
    account: str
    kind: EntryKind
    points: int
    job_id: str | None
    generation: int | None
    note: str
    created_at: datetime


class Ledger(Protocol):
    """What billing, the gateway and the CLI need from the ledger."""

    def create_account(self, name: str, points: int, api_key_hash: str | None = None) -> None: ...
    def ensure_account(self, name: str, points: int) -> bool: ...
    def credit(self, name: str, points: int, note: str = "") -> int: ...
    def balance(self, name: str) -> int: ...
    def account_for_key_hash(self, h: str) -> str | None: ...
    def set_api_key_hash(self, name: str, h: str) -> None: ...
    def reserve(self, job_id: str, generation: int, account: str, points: int) -> ReserveResult: ...
    def capture(self, job_id: str, generation: int) -> bool: ...
    def refund(self, job_id: str, generation: int) -> int: ...
    def reservation(self, job_id: str, generation: int) -> Reservation | None: ...
    def record_unreserved_completion(self, job_id: str, generation: int, account: str, note: str) -> bool: ...
    def entries(self, name: str, limit: int = 20) -> list[Entry]: ...
    def reconcile(self) -> list[str]: ...
    def webhook_secret(self, name: str, *, rotate: bool = False) -> str: ...
    def record_webhook_attempt(self, attempt: WebhookAttempt) -> None: ...
    def webhook_attempts(self, webhook_id: str) -> list[WebhookAttempt]: ...
    def webhook_deliveries(self, job_id: str) -> list[WebhookAttempt]: ...


@dataclass(frozen=True)
class WebhookAttempt:
    """One attempt to deliver one webhook (``webhook_id``, the receivers' dedup key) of a job's event.
    Times are Unix seconds; ``next_retry_at`` is None once delivered or given up."""

    job_id: str
    webhook_id: str
    event: str
    event_sequence: int
    attempt: int
    outcome: WebhookOutcome
    status_code: int | None
    error: str
    attempted_at: float
    next_retry_at: float | None


# --- SQL shared by both backends ----------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0),
    api_key_hash TEXT UNIQUE,
    created_at {timestamp}
);
CREATE TABLE IF NOT EXISTS entries (
    id {identity},
    account TEXT NOT NULL REFERENCES accounts (name),
    job_id TEXT,
    generation INTEGER,
    kind TEXT NOT NULL CHECK (kind IN ('credit', 'reserve', 'capture', 'refund')),
    points BIGINT NOT NULL,
    created_at {timestamp},
    note TEXT NOT NULL DEFAULT '',
    CHECK ((job_id IS NULL) = (generation IS NULL)),
    CHECK ((kind = 'credit') = (job_id IS NULL)),
    CHECK ((kind IN ('credit', 'refund') AND points > 0)
        OR (kind = 'reserve' AND points < 0)
        OR (kind = 'capture' AND points = 0))
);
CREATE INDEX IF NOT EXISTS entries_by_account ON entries (account, id);
CREATE UNIQUE INDEX IF NOT EXISTS entries_once_per_job
    ON entries (job_id, generation, kind) WHERE job_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS reservations (
    job_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    account TEXT NOT NULL REFERENCES accounts (name),
    points BIGINT NOT NULL CHECK (points > 0),
    state TEXT NOT NULL CHECK (state IN ('reserved', 'captured', 'refunded', 'rejected')),
    created_at {timestamp},
    PRIMARY KEY (job_id, generation)
);
CREATE TABLE IF NOT EXISTS unreserved_completions (
    job_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    account TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_at {timestamp},
    PRIMARY KEY (job_id, generation)
);
CREATE TABLE IF NOT EXISTS webhook_secrets (
    account TEXT PRIMARY KEY REFERENCES accounts (name),
    secret TEXT NOT NULL,
    created_at {timestamp}
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    job_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    event TEXT NOT NULL,
    event_sequence BIGINT NOT NULL,
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'gave_up')),
    status_code INTEGER,
    error TEXT NOT NULL DEFAULT '',
    attempted_at DOUBLE PRECISION NOT NULL,
    next_retry_at DOUBLE PRECISION,
    PRIMARY KEY (webhook_id, attempt)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_job ON webhook_deliveries (job_id, attempted_at)
"""
# The unique index above is a second line of defence: even a logic slip cannot debit or refund a job
# generation twice. ``unreserved_completions`` records each JobCompleted billing had nothing to capture
# for (a forged completion, or a reservation lost): no account is charged for it, reconcile reports it.
# The webhook tables are new tables, so CREATE ... IF NOT EXISTS adds them to an older ledger as it opens.

_SQLITE_COLUMNS = {
    "identity": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "timestamp": "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
}
_POSTGRES_COLUMNS = {
    "identity": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "timestamp": "TIMESTAMPTZ NOT NULL DEFAULT now()",
}


class _Tx:
    """One open transaction. SQL is written with ``?`` placeholders whatever the backend."""

    def __init__(self, run: Callable[[str, Sequence[object]], list[Row]]) -> None:
        self._run = run
        self.discarded = False

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._run(sql, params)

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        rows = self._run(sql, params)
        return rows[0] if rows else None

    def discard(self) -> None:
        """Roll back instead of committing when the block ends normally."""
        self.discarded = True


class _Backend(Protocol):
    integrity_errors: tuple[type[Exception], ...]

    def transaction(self, write: bool) -> AbstractContextManager[_Tx]: ...


class _SqliteBackend:
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        self._path = path
        # The ledger holds every account's balance and API key hash: readable by its owner only. SQLite
        # gives the -wal and -shm files it creates beside it the database file's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        with self._connect() as conn:
            # WAL lets readers run beside the single writer; the mode is stored in the file.
            conn.execute("PRAGMA journal_mode=WAL")
        with self.transaction(write=True) as tx:
            for statement in _SCHEMA.format(**_SQLITE_COLUMNS).split(";"):
                tx.all(statement)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN ourselves, so a write takes the lock before it reads.
        conn = sqlite3.connect(self._path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self, write: bool) -> Iterator[_Tx]:
        with self._connect() as conn:

            def run(sql: str, params: Sequence[object]) -> list[Row]:
                return conn.execute(sql, params).fetchall()

            tx = _Tx(run)
            # IMMEDIATE takes the write lock up front: a check-then-debit cannot interleave with another.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield tx
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("ROLLBACK" if tx.discarded else "COMMIT")


class _PostgresBackend:
    integrity_errors: tuple[type[Exception], ...] = (psycopg.IntegrityError,)

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        with self.transaction(write=True) as tx:
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL; serialize it.
            tx.all("SELECT pg_advisory_xact_lock(hashtext('i2v.billing.ledger.schema'))")
            for statement in _SCHEMA.format(**_POSTGRES_COLUMNS).split(";"):
                tx.all(statement)

    @contextmanager
    def transaction(self, write: bool) -> Iterator[_Tx]:
        # A connection per call keeps the ledger thread-safe without a pool; billing's rate is low.
        with psycopg.connect(self._dsn) as conn:
            cursor = conn.cursor()

            def run(sql: str, params: Sequence[object]) -> list[Row]:
                cursor.execute(sql.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description is not None else []

            tx = _Tx(run)
            try:
                yield tx
            except BaseException:
                conn.rollback()
                raise
            if tx.discarded or not write:
                conn.rollback()
            else:
                conn.commit()


def _journal(
    tx: _Tx, account: str, kind: EntryKind, points: int, job: tuple[str, int] | None = None, note: str = ""
) -> None:
    job_id, generation = job if job is not None else (None, None)
    tx.all(
        "INSERT INTO entries (account, job_id, generation, kind, points, note) VALUES (?, ?, ?, ?, ?, ?)",
        (account, job_id, generation, kind, points, note),
    )


def _check_name(name: str) -> None:
    if not is_account_name(name):
        raise InvalidAccountNameError(name)


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


class SqlLedger:
    """The ledger on SQLite or PostgreSQL. Safe to share between threads: each call opens its own
    connection and transaction."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend

    def _tx(self, write: bool = True) -> AbstractContextManager[_Tx]:
        return self._backend.transaction(write)

    # --- accounts ---------------------------------------------------------------------------------

    def create_account(self, name: str, points: int, api_key_hash: str | None = None) -> None:
        """Open an account holding ``points``; raises AccountExistsError if the name is taken and
        InvalidAccountNameError for a name no job could carry."""
        _check_name(name)
        if points < 0:
            raise ValueError(f"opening points must be >= 0, got {points}")
        try:
            with self._tx() as tx:
                if not self._insert_account(tx, name, points, api_key_hash):
                    raise AccountExistsError(name)
        except self._backend.integrity_errors as exc:
            raise ApiKeyInUseError(f"api key hash already belongs to another account ({name!r})") from exc

    def ensure_account(self, name: str, points: int) -> bool:
        """Open the account with ``points`` unless it exists; True if it was created now."""
        _check_name(name)
        if points < 0:
            raise ValueError(f"opening points must be >= 0, got {points}")
        with self._tx() as tx:
            return self._insert_account(tx, name, points, None)

    @staticmethod
    def _insert_account(tx: _Tx, name: str, points: int, api_key_hash: str | None) -> bool:
        created = tx.one(
            "INSERT INTO accounts (name, balance, api_key_hash) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING RETURNING name",
            (name, points, api_key_hash),
        )
        if created is not None and points > 0:
            _journal(tx, name, "credit", points, note="opening balance")
        return created is not None

    def credit(self, name: str, points: int, note: str = "") -> int:
        """Add ``points`` (> 0) to the account; returns the new balance."""
        if points <= 0:
            raise ValueError(f"credit must be > 0 points, got {points}")
        with self._tx() as tx:
            row = tx.one("UPDATE accounts SET balance = balance + ? WHERE name = ? RETURNING balance", (points, name))
            if row is None:
                raise UnknownAccountError(name)
            _journal(tx, name, "credit", points, note=note)
            return int(row[0])

    def balance(self, name: str) -> int:
        """The account's balance in points; raises UnknownAccountError."""
        with self._tx(write=False) as tx:
            return self._balance(tx, name)

    @staticmethod
    def _balance(tx: _Tx, name: str) -> int:
        row = tx.one("SELECT balance FROM accounts WHERE name = ?", (name,))
        if row is None:
            raise UnknownAccountError(name)
        return int(row[0])

    def account_for_key_hash(self, h: str) -> str | None:
        """The account whose API key hashes to ``h``, if any."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT name FROM accounts WHERE api_key_hash = ?", (h,))
            return None if row is None else str(row[0])

    def set_api_key_hash(self, name: str, h: str) -> None:
        """Give the account a (new) API key hash; raises ApiKeyInUseError if another account has it."""
        try:
            with self._tx() as tx:
                row = tx.one("UPDATE accounts SET api_key_hash = ? WHERE name = ? RETURNING name", (h, name))
                if row is None:
                    raise UnknownAccountError(name)
        except self._backend.integrity_errors as exc:
            raise ApiKeyInUseError(f"api key hash already belongs to another account ({name!r})") from exc

    # --- reservations -----------------------------------------------------------------------------

    def reserve(self, job_id: str, generation: int, account: str, points: int) -> ReserveResult:
        """Hold ``points`` of ``account`` for one job generation, debiting them now.

        Idempotent on (job_id, generation): a repeat returns the reservation's state with
        ``already=True`` and never debits twice; once captured or refunded the generation is
        ``settled`` for good (a refund is final: a replay is a new generation). Too few points:
        state ``rejected``, nothing is debited, and the refusal is remembered for that generation
        (a later generation, after a credit, may succeed).
        """
        if points <= 0:
            raise ValueError(f"reserve must be > 0 points, got {points}")
        with self._tx() as tx:
            existing = self._reservation(tx, job_id, generation)
            if existing is not None:
                return self._already(tx, existing)
            self._balance(tx, account)
            # The insert comes first so a concurrent twin waits on the primary key, then sees our row.
            claimed = tx.one(
                "INSERT INTO reservations (job_id, generation, account, points, state)"
                " VALUES (?, ?, ?, ?, 'reserved')"
                " ON CONFLICT (job_id, generation) DO NOTHING RETURNING job_id",
                (job_id, generation, account, points),
            )
            if claimed is None:
                twin = self._reservation(tx, job_id, generation)
                if twin is None:
                    raise LedgerError(f"reservation {job_id}/{generation} conflicted but cannot be read")
                return self._already(tx, twin)
            # The balance condition sits in the UPDATE itself: PostgreSQL re-checks it after a row-lock wait.
            debited = tx.one(
                "UPDATE accounts SET balance = balance - ? WHERE name = ? AND balance >= ? RETURNING balance",
                (points, account, points),
            )
            if debited is None:
                # Remember the refusal: a redelivery after a top-up must not start a job already
                # reported rejected (its terminal event is taken). A replay runs as a new generation.
                tx.all(
                    "UPDATE reservations SET state = 'rejected' WHERE job_id = ? AND generation = ?",
                    (job_id, generation),
                )
                balance = self._balance(tx, account)
                return ReserveResult(state="rejected", balance=balance, price=points, already=False)
            _journal(tx, account, "reserve", -points, job=(job_id, generation))
            return ReserveResult(state="reserved", balance=int(debited[0]), price=points, already=False)

    def _already(self, tx: _Tx, existing: Reservation) -> ReserveResult:
        balance = self._balance(tx, existing.account)
        return ReserveResult(state=existing.state, balance=balance, price=existing.points, already=True)

    def capture(self, job_id: str, generation: int) -> bool:
        """Settle a reservation as spent. True if it is captured (now or before); False if it was
        refunded or never made."""
        with self._tx() as tx:
            settled = tx.one(
                "UPDATE reservations SET state = 'captured'"
                " WHERE job_id = ? AND generation = ? AND state = 'reserved' RETURNING account",
                (job_id, generation),
            )
            if settled is not None:
                _journal(tx, str(settled[0]), "capture", 0, job=(job_id, generation))
                return True
            existing = self._reservation(tx, job_id, generation)
            return existing is not None and existing.state == "captured"

    def refund(self, job_id: str, generation: int) -> int:
        """Return a held reservation's points to its account. Returns the points refunded by this call:
        0 if the reservation was already refunded, captured, or never made."""
        with self._tx() as tx:
            settled = tx.one(
                "UPDATE reservations SET state = 'refunded'"
                " WHERE job_id = ? AND generation = ? AND state = 'reserved' RETURNING account, points",
                (job_id, generation),
            )
            if settled is None:
                return 0
            account, points = str(settled[0]), int(settled[1])
            tx.all("UPDATE accounts SET balance = balance + ? WHERE name = ?", (points, account))
            _journal(tx, account, "refund", points, job=(job_id, generation))
            return points

    def reservation(self, job_id: str, generation: int) -> Reservation | None:
        """The reservation of one job generation, if any."""
        with self._tx(write=False) as tx:
            return self._reservation(tx, job_id, generation)

    def record_unreserved_completion(self, job_id: str, generation: int, account: str, note: str) -> bool:
        """Remember that this job generation completed with no reservation to capture; True the first time."""
        with self._tx() as tx:
            row = tx.one(
                "INSERT INTO unreserved_completions (job_id, generation, account, note) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_id, generation) DO NOTHING RETURNING job_id",
                (job_id, generation, account, note),
            )
            return row is not None

    @staticmethod
    def _reservation(tx: _Tx, job_id: str, generation: int) -> Reservation | None:
        row = tx.one(
            "SELECT job_id, generation, account, points, state FROM reservations WHERE job_id = ? AND generation = ?",
            (job_id, generation),
        )
        if row is None:
            return None
        return Reservation(
            job_id=str(row[0]),
            generation=int(row[1]),
            account=str(row[2]),
            points=int(row[3]),
            state=cast(ReservationState, row[4]),
        )

    # --- reading and auditing ---------------------------------------------------------------------

    def entries(self, name: str, limit: int = 20) -> list[Entry]:
        """The account's most recent entries, newest first; raises UnknownAccountError."""
        with self._tx(write=False) as tx:
            self._balance(tx, name)
            rows = tx.all(
                "SELECT id, account, kind, points, job_id, generation, note, created_at FROM entries"
                " WHERE account = ? ORDER BY id DESC LIMIT ?",
                (name, limit),
            )
        return [
            Entry(
                id=int(r[0]),
                account=str(r[1]),
                kind=cast(EntryKind, r[2]),
                points=int(r[3]),
                job_id=None if r[4] is None else str(r[4]),
                generation=None if r[5] is None else int(r[5]),
                note=str(r[6]),
                created_at=_as_datetime(r[7]),
            )
            for r in rows
        ]

    # --- webhooks ---------------------------------------------------------------------------------

    def webhook_secret(self, name: str, *, rotate: bool = False) -> str:
        """The account's webhook signing secret (``whsec_`` + base64 of 32 random bytes), made on first
        use; ``rotate`` replaces it. Raises UnknownAccountError. Never log what this returns."""
        fresh = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        with self._tx() as tx:
            self._balance(tx, name)
            conflict = "DO UPDATE SET secret = excluded.secret" if rotate else "DO NOTHING"
            tx.all(
                f"INSERT INTO webhook_secrets (account, secret) VALUES (?, ?) ON CONFLICT (account) {conflict}",
                (name, fresh),
            )
            row = tx.one("SELECT secret FROM webhook_secrets WHERE account = ?", (name,))
        assert row is not None
        return str(row[0])

    def record_webhook_attempt(self, attempt: WebhookAttempt) -> None:
        """Log one delivery attempt; the same (webhook id, attempt) twice keeps the first."""
        with self._tx() as tx:
            tx.all(
                "INSERT INTO webhook_deliveries (job_id, webhook_id, event, event_sequence, attempt, outcome,"
                " status_code, error, attempted_at, next_retry_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (webhook_id, attempt) DO NOTHING",
                (
                    attempt.job_id,
                    attempt.webhook_id,
                    attempt.event,
                    attempt.event_sequence,
                    attempt.attempt,
                    attempt.outcome,
                    attempt.status_code,
                    attempt.error,
                    attempt.attempted_at,
                    attempt.next_retry_at,
                ),
            )

    def webhook_attempts(self, webhook_id: str) -> list[WebhookAttempt]:
        """Every attempt at one webhook, first first."""
        return self._webhook_rows("webhook_id = ? ORDER BY attempt", (webhook_id,))

    def webhook_deliveries(self, job_id: str) -> list[WebhookAttempt]:
        """Every delivery attempt of the job's webhooks, oldest first."""
        return self._webhook_rows("job_id = ? ORDER BY attempted_at, webhook_id, attempt", (job_id,))

    def _webhook_rows(self, where: str, params: Sequence[object]) -> list[WebhookAttempt]:
        with self._tx(write=False) as tx:
            rows = tx.all(
                "SELECT job_id, webhook_id, event, event_sequence, attempt, outcome, status_code, error,"
                f" attempted_at, next_retry_at FROM webhook_deliveries WHERE {where}",
                params,
            )
        return [
            WebhookAttempt(
                job_id=str(r[0]),
                webhook_id=str(r[1]),
                event=str(r[2]),
                event_sequence=int(r[3]),
                attempt=int(r[4]),
                outcome=cast(WebhookOutcome, r[5]),
                status_code=None if r[6] is None else int(r[6]),
                error=str(r[7]),
                attempted_at=float(r[8]),
                next_retry_at=None if r[9] is None else float(r[9]),
            )
            for r in rows
        ]

    def reconcile(self) -> list[str]:
        """Audit the books; returns one line per problem found, an empty list when consistent."""
        problems: list[str] = []
        with self._tx(write=False) as tx:
            for name, balance, total in tx.all(
                "SELECT a.name, a.balance, COALESCE(SUM(e.points), 0) FROM accounts a"
                " LEFT JOIN entries e ON e.account = a.name GROUP BY a.name, a.balance ORDER BY a.name"
            ):
                if balance < 0:
                    problems.append(f"account {name!r}: negative balance {balance}")
                if balance != total:
                    problems.append(f"account {name!r}: balance {balance} != sum of entries {total}")
            for job_id, generation, state, points, total in tx.all(
                "SELECT r.job_id, r.generation, r.state, r.points, COALESCE(SUM(e.points), 0)"
                " FROM reservations r LEFT JOIN entries e"
                " ON e.job_id = r.job_id AND e.generation = r.generation"
                " GROUP BY r.job_id, r.generation, r.state, r.points ORDER BY r.job_id, r.generation"
            ):
                # A held or captured reservation nets -points in the journal; a refunded or rejected one 0.
                expected = 0 if state in ("refunded", "rejected") else -points
                if total != expected:
                    problems.append(
                        f"reservation {job_id}/{generation} ({state}, {points} points):"
                        f" entries sum to {total}, expected {expected}"
                    )
            for job_id, generation, account, note in tx.all(
                "SELECT job_id, generation, account, note FROM unreserved_completions ORDER BY job_id, generation"
            ):
                problems.append(
                    f"job {job_id}/{generation} (account {account!r}) completed without a reservation: {note}"
                )
        return problems


class LedgerNotFoundError(LedgerError):
    """``open_ledger(..., create=False)`` found no SQLite file at the path."""


def open_ledger(dsn_or_path: str, *, create: bool = True) -> SqlLedger:
    """Open (and create if needed) the ledger: a ``postgresql://`` DSN selects PostgreSQL, anything
    else is a SQLite file path whose parent folders are created. With ``create=False`` a missing
    SQLite file raises LedgerNotFoundError and nothing is created (tools that only read or adjust
    accounts must not leave an empty ledger behind)."""
    if dsn_or_path.startswith(("postgresql://", "postgres://")):
        return SqlLedger(_PostgresBackend(dsn_or_path))
    if dsn_or_path in ("", ":memory:"):
        raise ValueError("the SQLite ledger needs a file path: every call opens its own connection")
    path = Path(dsn_or_path).expanduser()
    if not create and not path.is_file():
        raise LedgerNotFoundError(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqlLedger(_SqliteBackend(path))
