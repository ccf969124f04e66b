"""The points ledger on a real SQLite file and a real PostgreSQL schema: flows, idempotency, concurrency."""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from pydantic import ValidationError

from contracts.messages import JobSpec
from contracts.params import GenerationParams
from contracts.pricing import price_points
from services.billing.ledger import (
    AccountExistsError,
    ApiKeyInUseError,
    InvalidAccountNameError,
    LedgerNotFoundError,
    Reservation,
    ReserveResult,
    SqlLedger,
    UnknownAccountError,
    open_ledger,
)
from tests.services.sql_backends import SQL_BACKENDS, sql_target

# 16 points is the price of a 2 s clip at 8 fps, 25 steps at 256x192; ten of them exhaust 160.
PRICE = price_points(GenerationParams(duration=2, fps=8), 256, 192)
START = 10 * PRICE
CLIENTS = 50

T = TypeVar("T")


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=SQL_BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``open_ledger`` is given: a SQLite path in a folder that does not exist yet, or a DSN."""
    return sql_target(request, tmp_path / "billing" / "ledger.db")


@pytest.fixture
def ledger(target: str) -> SqlLedger:
    return open_ledger(target)


def _raw_execute(target: str, sql: str) -> None:
    """Change the books behind the ledger's back, as a bug or a hand edit would."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            conn.execute(sql)
    else:
        with sqlite3.connect(target) as conn:
            conn.execute(sql)


def _all_at_once(n: int, call: Callable[[int], T]) -> list[T]:
    """Run ``call(0..n-1)`` from n threads released together; re-raises the first failure."""
    barrier = threading.Barrier(n)

    def released(i: int) -> T:
        barrier.wait(timeout=30)
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(released, range(n)))


# --- accounts -------------------------------------------------------------------------------------


def test_create_credit_balance(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)

    assert ledger.balance("alice") == 100
    assert ledger.credit("alice", 50, note="top-up") == 150
    assert ledger.balance("alice") == 150
    assert [(e.kind, e.points, e.note) for e in ledger.entries("alice")] == [
        ("credit", 50, "top-up"),
        ("credit", 100, "opening balance"),
    ]
    assert ledger.reconcile() == []


def test_create_account_twice_is_refused(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)

    with pytest.raises(AccountExistsError):
        ledger.create_account("alice", 5)
    assert ledger.balance("alice") == 100


def test_unknown_account_and_bad_amounts(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 0)

    with pytest.raises(UnknownAccountError):
        ledger.balance("nobody")
    with pytest.raises(UnknownAccountError):
        ledger.credit("nobody", 5)
    with pytest.raises(UnknownAccountError):
        ledger.entries("nobody")
    with pytest.raises(ValueError, match="> 0"):
        ledger.credit("alice", 0)
    with pytest.raises(ValueError, match=">= 0"):
        ledger.create_account("bob", -1)
    assert ledger.entries("alice") == []
    assert ledger.reconcile() == []


def test_ensure_account_creates_once(ledger: SqlLedger) -> None:
    assert ledger.ensure_account("demo", 1000) is True
    ledger.credit("demo", 1)

    assert ledger.ensure_account("demo", 1000) is False
    assert ledger.balance("demo") == 1001


def test_api_key_hashes(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 10, api_key_hash="h-alice")
    ledger.create_account("bob", 10)

    assert ledger.account_for_key_hash("h-alice") == "alice"
    assert ledger.account_for_key_hash("h-bob") is None

    ledger.set_api_key_hash("bob", "h-bob")
    ledger.set_api_key_hash("alice", "h-alice-2")
    assert ledger.account_for_key_hash("h-bob") == "bob"
    assert ledger.account_for_key_hash("h-alice-2") == "alice"
    assert ledger.account_for_key_hash("h-alice") is None

    with pytest.raises(ApiKeyInUseError):
        ledger.set_api_key_hash("bob", "h-alice-2")
    with pytest.raises(ApiKeyInUseError):
        ledger.create_account("carol", 10, api_key_hash="h-bob")
    with pytest.raises(UnknownAccountError):
        ledger.set_api_key_hash("nobody", "h-nobody")
    with pytest.raises(UnknownAccountError):
        ledger.balance("carol")
    assert ledger.account_for_key_hash("h-bob") == "bob"


def test_reopening_keeps_the_books(target: str) -> None:
    open_ledger(target).create_account("alice", 42)

    assert open_ledger(target).balance("alice") == 42


def test_sqlite_needs_a_file() -> None:
    with pytest.raises(ValueError, match="file path"):
        open_ledger(":memory:")


# --- reserve, capture, refund ---------------------------------------------------------------------


def test_reserve_then_capture(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)

    assert ledger.reserve("job-1", 0, "alice", PRICE) == ReserveResult(
        state="reserved", balance=100 - PRICE, price=PRICE, already=False
    )
    assert ledger.reservation("job-1", 0) == Reservation("job-1", 0, "alice", PRICE, "reserved")
    assert ledger.capture("job-1", 0) is True
    assert ledger.capture("job-1", 0) is True
    assert ledger.refund("job-1", 0) == 0

    assert ledger.balance("alice") == 100 - PRICE
    assert ledger.reservation("job-1", 0) == Reservation("job-1", 0, "alice", PRICE, "captured")
    assert [(e.kind, e.points, e.job_id, e.generation) for e in ledger.entries("alice")] == [
        ("capture", 0, "job-1", 0),
        ("reserve", -PRICE, "job-1", 0),
        ("credit", 100, None, None),
    ]
    assert ledger.reconcile() == []


def test_reserve_then_refund(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)
    ledger.reserve("job-1", 0, "alice", PRICE)

    assert ledger.refund("job-1", 0) == PRICE
    assert ledger.refund("job-1", 0) == 0
    assert ledger.capture("job-1", 0) is False

    assert ledger.balance("alice") == 100
    assert ledger.reservation("job-1", 0) == Reservation("job-1", 0, "alice", PRICE, "refunded")
    assert [(e.kind, e.points) for e in ledger.entries("alice")] == [
        ("refund", PRICE),
        ("reserve", -PRICE),
        ("credit", 100),
    ]
    assert ledger.reconcile() == []


def test_redelivered_reserve_debits_once(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)
    first = ledger.reserve("job-1", 0, "alice", PRICE)

    # A redelivery carrying another price still gets the first outcome.
    again = ledger.reserve("job-1", 0, "alice", PRICE + 4)

    assert first == ReserveResult(state="reserved", balance=100 - PRICE, price=PRICE, already=False)
    assert again == ReserveResult(state="reserved", balance=100 - PRICE, price=PRICE, already=True)
    assert ledger.balance("alice") == 100 - PRICE
    assert [e.kind for e in ledger.entries("alice")] == ["reserve", "credit"]


def test_a_refund_is_final(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)
    ledger.reserve("job-1", 0, "alice", PRICE)
    ledger.refund("job-1", 0)

    # A billing redelivery after the refund: the generation ended, it must not run (or hold) again.
    again = ledger.reserve("job-1", 0, "alice", PRICE)

    assert again == ReserveResult(state="refunded", balance=100, price=PRICE, already=True)
    assert not again.ok and again.settled
    assert ledger.reservation("job-1", 0) == Reservation("job-1", 0, "alice", PRICE, "refunded")
    assert ledger.balance("alice") == 100
    # A replay is a new generation and reserves afresh.
    replay = ledger.reserve("job-1", 1, "alice", PRICE)
    assert replay == ReserveResult(state="reserved", balance=100 - PRICE, price=PRICE, already=False)
    assert replay.ok and not replay.settled
    assert ledger.reconcile() == []


def test_a_captured_generation_is_settled_too(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)
    ledger.reserve("job-1", 0, "alice", PRICE)
    ledger.capture("job-1", 0)

    again = ledger.reserve("job-1", 0, "alice", PRICE)

    assert again == ReserveResult(state="captured", balance=100 - PRICE, price=PRICE, already=True)
    assert not again.ok and again.settled
    assert ledger.balance("alice") == 100 - PRICE
    assert ledger.reconcile() == []


def test_each_generation_is_its_own_reservation(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)

    assert ledger.reserve("job-1", 0, "alice", PRICE).already is False
    assert ledger.reserve("job-1", 1, "alice", PRICE).already is False

    assert ledger.balance("alice") == 100 - 2 * PRICE
    assert ledger.refund("job-1", 0) == PRICE
    assert ledger.reservation("job-1", 1) == Reservation("job-1", 1, "alice", PRICE, "reserved")
    assert ledger.reconcile() == []


def test_insufficient_points_change_nothing(ledger: SqlLedger) -> None:
    ledger.create_account("alice", PRICE - 1)
    entries_before = ledger.entries("alice")

    result = ledger.reserve("job-1", 0, "alice", PRICE)

    assert result == ReserveResult(state="rejected", balance=PRICE - 1, price=PRICE, already=False)
    assert ledger.balance("alice") == PRICE - 1
    refused = ledger.reservation("job-1", 0)
    assert refused is not None and refused.state == "rejected"  # remembered, holds nothing
    assert ledger.entries("alice") == entries_before
    assert ledger.capture("job-1", 0) is False
    assert ledger.refund("job-1", 0) == 0
    assert ledger.reconcile() == []


def test_a_rejection_is_remembered_for_its_generation_only(ledger: SqlLedger) -> None:
    ledger.create_account("alice", PRICE - 1)
    assert ledger.reserve("job-1", 0, "alice", PRICE) == ReserveResult(
        state="rejected", balance=PRICE - 1, price=PRICE, already=False
    )
    ledger.credit("alice", 1)

    # A redelivery of the rejected command must not start the job after all: its rejection stands.
    assert ledger.reserve("job-1", 0, "alice", PRICE) == ReserveResult(
        state="rejected", balance=PRICE, price=PRICE, already=True
    )
    assert ledger.capture("job-1", 0) is False and ledger.refund("job-1", 0) == 0
    rejected = ledger.reservation("job-1", 0)
    assert rejected is not None and rejected.state == "rejected"
    # A replay is a new generation and may reserve now.
    assert ledger.reserve("job-1", 1, "alice", PRICE) == ReserveResult(
        state="reserved", balance=0, price=PRICE, already=False
    )
    assert ledger.reconcile() == []


def test_exact_balance_can_be_reserved(ledger: SqlLedger) -> None:
    ledger.create_account("alice", PRICE)

    assert ledger.reserve("job-1", 0, "alice", PRICE).ok is True
    assert ledger.balance("alice") == 0


def test_reserve_refuses_unknown_accounts_and_bad_amounts(ledger: SqlLedger) -> None:
    ledger.create_account("alice", 100)

    with pytest.raises(UnknownAccountError):
        ledger.reserve("job-1", 0, "nobody", PRICE)
    with pytest.raises(ValueError, match="> 0"):
        ledger.reserve("job-2", 0, "alice", 0)
    assert ledger.reservation("job-1", 0) is None
    assert ledger.reservation("job-2", 0) is None
    assert ledger.balance("alice") == 100


def test_settling_an_unknown_job_is_a_no_op(ledger: SqlLedger) -> None:
    assert ledger.capture("ghost", 0) is False
    assert ledger.refund("ghost", 0) == 0
    assert ledger.reservation("ghost", 0) is None


# --- reconcile ------------------------------------------------------------------------------------


def test_reconcile_finds_a_balance_that_disagrees_with_its_entries(ledger: SqlLedger, target: str) -> None:
    ledger.create_account("alice", 100)
    ledger.create_account("bob", 100)

    _raw_execute(target, "UPDATE accounts SET balance = 90 WHERE name = 'alice'")

    assert ledger.reconcile() == ["account 'alice': balance 90 != sum of entries 100"]


def test_reconcile_finds_a_reservation_missing_from_the_journal(ledger: SqlLedger, target: str) -> None:
    ledger.create_account("alice", 100)
    ledger.reserve("job-1", 0, "alice", PRICE)

    _raw_execute(target, "UPDATE reservations SET state = 'refunded'")

    assert ledger.reconcile() == [
        f"reservation job-1/0 (refunded, {PRICE} points): entries sum to {-PRICE}, expected 0"
    ]


# --- concurrency ----------------------------------------------------------------------------------


def test_simultaneous_reserves_never_overdraw(ledger: SqlLedger, target: str) -> None:
    ledger.create_account("alice", START)
    # One SqlLedger per thread, as separate service replicas would have; opened before the race starts.
    replicas = [open_ledger(target) for _ in range(CLIENTS)]
    done = threading.Event()
    seen: list[int] = []

    def watch() -> None:
        while not done.is_set():
            seen.append(ledger.balance("alice"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = _all_at_once(CLIENTS, lambda i: replicas[i].reserve(f"job-{i}", 0, "alice", PRICE))
    finally:
        done.set()
        watcher.join()

    winners = [r for r in results if r.ok]
    assert len(winners) == 10
    assert not any(r.already for r in results)
    # Serialized debits leave every balance from 144 down to 0 exactly once.
    assert sorted(r.balance for r in winners) == [k * PRICE for k in range(10)]
    assert all(r.balance == 0 for r in results if not r.ok)
    assert min(seen) >= 0
    assert ledger.balance("alice") == 0
    assert ledger.reconcile() == []


def test_simultaneous_redeliveries_debit_once(ledger: SqlLedger) -> None:
    ledger.create_account("alice", START)

    results = _all_at_once(20, lambda _: ledger.reserve("job-1", 0, "alice", PRICE))

    assert all(r.ok and r.price == PRICE for r in results)
    assert sum(not r.already for r in results) == 1
    assert ledger.balance("alice") == START - PRICE
    assert [e.kind for e in ledger.entries("alice")] == ["reserve", "credit"]
    assert ledger.reconcile() == []


def test_simultaneous_capture_and_refund_settle_once(ledger: SqlLedger) -> None:
    ledger.create_account("alice", START)
    ledger.reserve("job-1", 0, "alice", PRICE)

    def settle(i: int) -> Any:
        return ledger.capture("job-1", 0) if i % 2 else ledger.refund("job-1", 0)

    results = _all_at_once(20, settle)
    captures, refunds = results[1::2], results[0::2]

    state = ledger.reservation("job-1", 0)
    assert state is not None
    if state.state == "captured":
        assert all(captures) and refunds == [0] * 10
        assert ledger.balance("alice") == START - PRICE
    else:
        assert not any(captures) and sorted(refunds) == [0] * 9 + [PRICE]
        assert ledger.balance("alice") == START
    assert ledger.reconcile() == []


def _reserve_in_process(
    path: str, job_ids: list[str], barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    ledger = open_ledger(path)
    barrier.wait(timeout=60)
    results.put([(job_id, ledger.reserve(job_id, 0, "alice", PRICE)) for job_id in job_ids])


def _reserve_from_processes(path: str, job_ids_per_process: list[list[str]]) -> list[tuple[str, ReserveResult]]:
    # spawn, not fork: a forked child would inherit the pytest process's threads and open handles.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(job_ids_per_process))
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_reserve_in_process, args=(path, job_ids, barrier, results))
        for job_ids in job_ids_per_process
    ]
    for process in processes:
        process.start()
    batches: list[list[tuple[str, ReserveResult]]] = []
    deadline = time.monotonic() + 60
    try:
        while len(batches) < len(processes) and time.monotonic() < deadline:
            try:
                batches.append(results.get(timeout=0.5))
            except queue.Empty:
                # A crashed child never reports; stop waiting as soon as one has died.
                if any(p.exitcode not in (None, 0) for p in processes):
                    break
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return [item for batch in batches for item in batch]


@pytest.mark.slow
def test_reserves_from_several_processes_never_overdraw(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    ledger = open_ledger(path)
    ledger.create_account("alice", START)
    job_ids = [f"job-{i}" for i in range(CLIENTS)]

    outcomes = _reserve_from_processes(path, [job_ids[k::4] for k in range(4)])

    assert sorted(job_id for job_id, _ in outcomes) == sorted(job_ids)
    assert sum(r.ok for _, r in outcomes) == 10
    assert ledger.balance("alice") == 0
    assert ledger.reconcile() == []


@pytest.mark.slow
def test_redeliveries_from_several_processes_debit_once(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    ledger = open_ledger(path)
    ledger.create_account("alice", START)
    job_ids = [f"job-{i}" for i in range(5)]

    outcomes = _reserve_from_processes(path, [job_ids] * 4)

    assert all(r.ok for _, r in outcomes)
    assert sorted(job_id for job_id, r in outcomes if not r.already) == job_ids
    assert ledger.balance("alice") == START - 5 * PRICE
    assert ledger.reconcile() == []


def test_opening_without_create_leaves_nothing_behind(tmp_path: Path) -> None:
    missing = tmp_path / "state" / "ledger.sqlite3"

    with pytest.raises(LedgerNotFoundError):
        open_ledger(str(missing), create=False)

    assert not missing.parent.exists()
    open_ledger(str(missing)).create_account("alice", 1)
    assert open_ledger(str(missing), create=False).balance("alice") == 1


@pytest.mark.parametrize("name", ["eve x", "", "a" * 65, "ève", "eve\n", "eve/x"])
def test_names_no_job_could_carry_are_refused(ledger: SqlLedger, name: str) -> None:
    with pytest.raises(InvalidAccountNameError, match="account name"):
        ledger.create_account(name, 5)
    with pytest.raises(InvalidAccountNameError):
        ledger.ensure_account(name, 5)
    with pytest.raises(ValidationError):  # the same rule as the contract every job carries
        JobSpec(job_id="job-123", account=name, params=GenerationParams())
    assert ledger.reconcile() == []


def test_every_name_the_ledger_accepts_can_submit_a_job(ledger: SqlLedger) -> None:
    for name in ("a", "eve.x_1-2", "A" * 64, "local"):
        ledger.create_account(name, 1)
        assert JobSpec(job_id="job-123", account=name, params=GenerationParams()).account == name
