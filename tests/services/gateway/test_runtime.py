"""The index writer: a fold that fails is retried before anything after it, and never reported done."""

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from contracts.messages import JobSpec, StageFinished, StageStarted
from contracts.params import GenerationParams
from contracts.stages import Stage
from services.gateway.events import frame
from services.gateway.jobs_index import JobsIndex
from services.gateway.progress import JobStatus, JobView
from services.gateway.runtime import IndexWriter

SPEC = JobSpec(job_id="jwriter0001", account="a", params=GenerationParams(seed=1))


class IndexThatFails(JobsIndex):
    """The real SQLite index, whose next ``failures`` folds fail as a locked database would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.attempts: list[list[int]] = []

    def fold(self, events: Sequence[tuple[int, bytes]]) -> int:
        self.attempts.append([sequence for sequence, _ in events])
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().fold(events)


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_failed_fold_is_retried_and_wait_for_does_not_report_it_done(tmp_path: Path) -> None:
    index = IndexThatFails(tmp_path / "gateway.sqlite3", failures=1)
    index.add_if_room(JobView.submitted(SPEC), 10)
    writer = IndexWriter(index, retry_max_s=0.5)
    writer.start()
    try:
        writer.offer(frame(1, StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST).model_dump_json().encode()))
        await eventually(lambda: writer.error is not None)
        assert "database is locked" in (writer.error or "")
        # The failed events are not in the index, and waiting for them says so.
        assert not await writer.wait_for(1, timeout_s=0.02)
        assert writer.folded_sequence == 0 and index.checkpoint() == 0
        # What comes next waits behind the failed batch, which is tried again with it.
        writer.offer(
            frame(2, StageFinished(job_id=SPEC.job_id, stage=Stage.INGEST, seconds=0.5).model_dump_json().encode())
        )
        assert await writer.wait_for(2, timeout_s=5.0)
        assert writer.error is None and index.checkpoint() == 2
        view = index.get(SPEC.job_id)
        assert view is not None and view.status == JobStatus.PREPROCESSING and view.timings == {Stage.INGEST: 0.5}
        assert index.attempts[0] == [1] and index.attempts[-1][0] == 1
    finally:
        await writer.stop()


async def test_an_index_that_keeps_failing_is_never_reported_current(tmp_path: Path) -> None:
    index = IndexThatFails(tmp_path / "gateway.sqlite3", failures=1000)
    writer = IndexWriter(index, retry_max_s=0.05)
    writer.start()
    try:
        writer.offer(frame(1, StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST).model_dump_json().encode()))
        assert not await writer.wait_for(1, timeout_s=0.5)
        assert len(index.attempts) >= 3  # retried with backoff, not given up on
        assert writer.error is not None and writer.folded_sequence == 0
    finally:
        await writer.stop()
