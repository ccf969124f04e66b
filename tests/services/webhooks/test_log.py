"""The webhook tables of the ledger on both its backends: the secret made once and rotated, the delivery
log keyed by (webhook id, attempt), and an older ledger gaining the tables as it opens."""

import sqlite3
from pathlib import Path

import pytest

from services.billing.ledger import UnknownAccountError, WebhookAttempt, open_ledger
from tests.services.sql_backends import SQL_BACKENDS, sql_target


@pytest.fixture(params=SQL_BACKENDS)
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return sql_target(request, tmp_path / "ledger.sqlite3")


def _attempt(n: int, outcome: str = "retrying", job_id: str = "job-log-1") -> WebhookAttempt:
    return WebhookAttempt(
        job_id=job_id,
        webhook_id=f"msg_{job_id}_completed_g0",
        event="completed",
        event_sequence=3,
        attempt=n,
        outcome=outcome,  # type: ignore[arg-type]
        status_code=500,
        error="HTTP 500",
        attempted_at=1000.0 + n,
        next_retry_at=1010.0 + n,
    )


def test_secrets_and_the_delivery_log(dsn: str) -> None:
    ledger = open_ledger(dsn)
    ledger.create_account("acme", 1)
    secret = ledger.webhook_secret("acme")
    assert ledger.webhook_secret("acme") == secret
    assert ledger.webhook_secret("acme", rotate=True) not in (secret, "")
    with pytest.raises(UnknownAccountError):
        ledger.webhook_secret("nobody")

    ledger.record_webhook_attempt(_attempt(2))
    ledger.record_webhook_attempt(_attempt(1))
    ledger.record_webhook_attempt(_attempt(1, outcome="delivered"))  # the same attempt again: the first stays
    ledger.record_webhook_attempt(_attempt(1, job_id="job-log-2"))
    assert [(a.attempt, a.outcome) for a in ledger.webhook_attempts("msg_job-log-1_completed_g0")] == [
        (1, "retrying"),
        (2, "retrying"),
    ]
    assert ledger.webhook_deliveries("job-log-1") == [_attempt(1), _attempt(2)]
    assert ledger.webhook_deliveries("job-none") == []


def test_an_older_ledger_gains_the_webhook_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL, api_key_hash TEXT UNIQUE,"
            " created_at TEXT)"
        )
        conn.execute("INSERT INTO accounts (name, balance) VALUES ('old', 5)")
    ledger = open_ledger(str(path))
    assert ledger.balance("old") == 5
    assert ledger.webhook_secret("old").startswith("whsec_")
