"""The jobs index on a real SQLite file and a real PostgreSQL schema: folding, limits, keys, shared by
several gateways (two ``JobsIndex`` objects on one database stand for two gateway processes)."""

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from contracts.messages import Event, JobCancelled, JobSpec, StageProgress, StageStarted, parse_event
from contracts.params import GenerationParams
from contracts.stages import Stage
from services.gateway.jobs_index import _VIEW, Idempotency, IdempotencyKeyUsedError, IndexInUseError, JobsIndex
from services.gateway.progress import JobView, job_id_of
from tests.services.sql_backends import SQL_BACKENDS, sql_target

T = TypeVar("T")
JOBS = [f"j{n:012d}" for n in range(1, 7)]
SUBMITTED = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture(params=SQL_BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``JobsIndex`` is given: a SQLite path in a folder that does not exist yet, or a DSN."""
    return sql_target(request, tmp_path / "gateway" / "jobs.sqlite3")


def _spec(job_id: str, account: str = "a") -> JobSpec:
    return JobSpec(job_id=job_id, account=account, params=GenerationParams(seed=1), submitted_at=SUBMITTED)


def _history() -> list[tuple[int, bytes]]:
    """Every job's events interleaved as the events stream holds them, numbered from 1; half the
    jobs end cancelled."""
    events: list[Event] = []
    for stage in (Stage.INGEST, Stage.LATENT):
        for job_id in JOBS:
            events.append(StageStarted(job_id=job_id, stage=stage))
        for step in range(1, 6):
            for job_id in JOBS:
                events.append(StageProgress(job_id=job_id, stage=stage, step=step, total=5))
    events += [JobCancelled(job=_spec(job_id), stage=Stage.LATENT) for job_id in JOBS[::2]]
    return [(seq, event.model_dump_json().encode()) for seq, event in enumerate(events, start=1)]


def _folded_alone(history: list[tuple[int, bytes]]) -> dict[str, JobView]:
    """What one gateway's index shows after folding ``history`` in one go: the expected outcome."""
    views = {job_id: JobView.submitted(_spec(job_id), 24) for job_id in JOBS}
    for seq, data in history:
        event = parse_event(data)
        views[job_id_of(event)].apply(seq, event)
    return views


def _all_at_once(n: int, call: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``call(0..n-1)`` from n threads released together; each outcome or exception, in order."""
    barrier = threading.Barrier(n)

    def released(i: int) -> T | BaseException:
        barrier.wait(timeout=30)
        try:
            return call(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(released, range(n)))


def test_folding_is_idempotent_and_never_goes_back(target: str) -> None:
    index = JobsIndex(target)
    for job_id in JOBS:
        assert index.add_if_room(JobView.submitted(_spec(job_id), 24), 10) is None
    history = _history()
    assert index.fold(history[:40]) > 0
    assert index.checkpoint() == 40
    after_40 = {job_id: index.get(job_id) for job_id in JOBS}
    # Folding the same batch again, or an older one, changes nothing: not a row, not the checkpoint.
    assert index.fold(history[:40]) == 0
    assert index.fold(history[:10]) == 0
    assert {job_id: index.get(job_id) for job_id in JOBS} == after_40
    assert index.checkpoint() == 40
    index.fold(history[30:])
    assert {job_id: index.get(job_id) for job_id in JOBS} == _folded_alone(history)
    assert index.checkpoint() == len(history)
    assert index.active_count("a") == len(JOBS) // 2


def test_two_gateways_folding_the_same_events_at_once_lose_nothing(target: str) -> None:
    gateways = [JobsIndex(target), JobsIndex(target)]
    for job_id in JOBS:
        gateways[0].add_if_room(JobView.submitted(_spec(job_id), 24), 10)
    history = _history()

    def follow(i: int) -> None:
        # Each gateway folds the whole stream in order, in batches of its own size, as its IndexWriter would.
        size = (7, 11, 3, 17)[i]
        for start in range(0, len(history), size):
            gateways[i % 2].fold(history[start : start + size])

    seen: dict[str, list[int]] = {job_id: [] for job_id in JOBS}
    folding = True

    def watch() -> None:
        while folding:
            for job_id in JOBS:
                view = gateways[0].get(job_id)
                assert view is not None
                seen[job_id].append(view.last_sequence)

    watcher = ThreadPoolExecutor(max_workers=1)
    watched = watcher.submit(watch)
    try:
        assert _all_at_once(4, follow) == [None] * 4
    finally:
        folding = False
        watcher.shutdown()
    watched.result()
    # A reader saw every job only move forward: no fold wrote an older view over a newer one.
    for job_id, sequences in seen.items():
        assert sequences == sorted(sequences), job_id
    expected = _folded_alone(history)
    for gateway in gateways:
        assert {job_id: gateway.get(job_id) for job_id in JOBS} == expected
        assert gateway.checkpoint() == len(history)


def test_a_deleted_job_stays_deleted_whatever_is_folded_after(target: str) -> None:
    index = JobsIndex(target)
    index.add_if_room(JobView.submitted(_spec(JOBS[0]), 24), 10)
    history = [(s, d) for s, d in _history() if JOBS[0].encode() in d]
    index.fold(history[:3])
    index.mark_deleted(JOBS[0])
    index.fold(history[3:])
    view = index.get(JOBS[0])
    assert view is not None and view.deleted and view.last_sequence == history[-1][0]
    assert index.list("a", 10) == []


def test_the_active_jobs_limit_holds_across_gateways(target: str) -> None:
    gateways = [JobsIndex(target), JobsIndex(target)]
    outcomes = _all_at_once(
        8, lambda i: gateways[i % 2].add_if_room(JobView.submitted(_spec(f"j{i:012d}", "busy"), 24), 3)
    )
    assert sorted(outcomes, key=str) == [3] * 5 + [None] * 3, outcomes
    assert gateways[1].active_count("busy") == 3
    assert len(gateways[0].list("busy", 10)) == 3


def test_an_idempotency_key_names_one_job_across_gateways(target: str) -> None:
    gateways = [JobsIndex(target), JobsIndex(target)]
    used = Idempotency("order-7", "fp")

    def submit(i: int) -> str:
        gateways[i % 2].add_if_room(JobView.submitted(_spec(f"j{i:012d}"), 24), 100, used)
        return f"j{i:012d}"

    outcomes = _all_at_once(6, submit)
    added = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, IdempotencyKeyUsedError)]
    assert len(added) == 1 and len(refused) == 5, outcomes
    assert {e.job_id for e in refused} == set(added)
    assert gateways[1].idempotent("a", "order-7") == (added[0], "fp")
    assert [v.job_id for v in gateways[0].list("a", 10)] == added


def test_an_index_from_before_last_sequence_opens_and_folds(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    view = JobView.submitted(_spec(JOBS[0]), 24)
    view.last_sequence = 2
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, account TEXT NOT NULL, status TEXT NOT NULL,"
            " deleted INTEGER NOT NULL DEFAULT 0, view TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO jobs VALUES (?, 'a', 'queued', 0, ?)", (JOBS[0], _VIEW.dump_json(view).decode()))
    index = JobsIndex(path)
    old = [(1, StageStarted(job_id=JOBS[0], stage=Stage.INGEST).model_dump_json().encode())]
    assert index.fold(old) == 0  # at sequence 2 already
    new = [(3, StageStarted(job_id=JOBS[0], stage=Stage.LATENT).model_dump_json().encode())]
    assert index.fold(new) == 1
    folded = index.get(JOBS[0])
    assert folded is not None and (folded.stage, folded.last_sequence) == (Stage.LATENT, 3)


def test_a_sqlite_index_serves_one_gateway_process(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    first, second = JobsIndex(path), JobsIndex(path)
    first.claim()
    with pytest.raises(IndexInUseError, match=r"another gateway serves the jobs index .*PostgreSQL"):
        second.claim()
    first.release()
    second.claim()
    second.release()


def test_a_second_gateway_on_a_sqlite_index_is_refused_with_one_line(tmp_path: Path) -> None:
    """``i2v serve gateway`` against the index another gateway holds stops before serving anything."""
    state = tmp_path / "state"
    held = JobsIndex(state / "gateway.sqlite3")
    held.claim()
    env = {
        "PATH": "/usr/bin:/bin",
        "I2V_STATE_DIR": str(state),
        "I2V_NATS_URL": "nats://127.0.0.1:9",
        "I2V_S3_ENDPOINT": "http://127.0.0.1:9",
        "I2V_GATEWAY_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "serve", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[3],
    )
    held.release()
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "another gateway serves the jobs index" in lines[0], done.stderr


@pytest.mark.integration
def test_a_slow_fold_never_writes_an_older_view_over_a_newer_one(pg_dsn: str) -> None:
    """PostgreSQL: gateway B reads a job, gateway A commits a later view of it, then B writes. B's
    older view must not replace A's (on SQLite a fold holds the write lock from its first read)."""
    index = JobsIndex(pg_dsn)
    job_id = JOBS[0]
    index.add_if_room(JobView.submitted(_spec(job_id), 24), 10)
    history = [(s, d) for s, d in _history() if job_id.encode() in d]
    index.fold(history[:2])
    newer = _folded_alone(history[:6])[job_id]
    with psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn, autocommit=True) as observer:
        # A has the row locked, as a fold does from its write until it commits.
        a.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,))
        slow = ThreadPoolExecutor(max_workers=1)
        folded = slow.submit(index.fold, history[2:4])
        while not observer.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall():
            assert not folded.done(), folded.result()
        a.execute(
            "UPDATE jobs SET view = %s, status = %s, last_sequence = %s WHERE job_id = %s",
            (_VIEW.dump_json(newer).decode(), newer.status.value, newer.last_sequence, job_id),
        )
        a.commit()
        assert folded.result(timeout=30) == 1  # B changed its copy; the row kept A's
        slow.shutdown()
    assert index.get(job_id) == newer
