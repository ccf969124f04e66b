"""Retention: a job's upload and artifacts are deleted once they are older than ``retention_days``.

SeaweedFS 4.48 accepts an S3 bucket lifecycle rule but did not stamp an expiry on the objects written
after it (checked: ``TtlSec`` stays 0), so the rule alone would keep everything for ever. Billing sweeps
instead: every ``retention_sweep_s`` it deletes the objects under ``jobs/`` last written before the
cutoff. Replicas sweeping at once delete the same objects, which is harmless. The ledger keeps its
entries; the events stream keeps a job's history for its own 30 days.
"""

import logging
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread

from contracts.keys import JOBS_PREFIX
from infra.objectstore import ObjectStore

log = logging.getLogger("i2v.retention")


def sweep(store: ObjectStore, days: int, now: datetime | None = None) -> int:
    """Delete what every job stored more than ``days`` days before ``now``; returns how many objects."""
    if days <= 0:
        raise ValueError(f"retention is a positive number of days, got {days}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    return store.delete_older_than(JOBS_PREFIX, cutoff)


async def sweep_forever(store: ObjectStore, days: int, every_s: float) -> None:
    """Sweep now and then every ``every_s`` seconds until cancelled; a failed sweep is logged and retried."""
    while True:
        try:
            deleted = await anyio.to_thread.run_sync(sweep, store, days)
        except Exception as exc:  # the store may be down for a while: the next round tries again
            log.warning("retention sweep failed: %s: %s", type(exc).__name__, exc)
        else:
            if deleted:
                log.info("retention: deleted %d objects older than %d days", deleted, days)
        await anyio.sleep(every_s)
