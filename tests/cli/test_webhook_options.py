"""`i2v generate --webhook URL --webhook-events LIST` refuses what the job could not deliver, in one line and
before any stack starts; `i2v accounts webhook-secret NAME [--rotate]` shows and replaces the signing key."""

from pathlib import Path

import pytest

from services.billing.ledger import open_ledger
from tests.cli.test_accounts import i2v
from tests.cli.test_bad_input import HARBOR, _run

# Named servers (nothing listens there): the stack they stand for does not allow private addresses.
RUNNING = ["--nats", "nats://127.0.0.1:9", "--s3", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--webhook", "ftp://example.com/h"], "i2v: error: --webhook: must be an https:// or http:// URL"),
        (["--webhook-events", "completed"], "i2v: error: --webhook-events: give --webhook URL too"),
        (
            ["--webhook", "http://127.0.0.1:8000/h", "--webhook-events", "completed,done"],
            "i2v: error: --webhook-events: unknown event 'done'",
        ),
        (
            ["--webhook", "http://127.0.0.1:8000/h", *RUNNING],
            "i2v: error: --webhook: '127.0.0.1' resolves to 127.0.0.1, a loopback or private address",
        ),
    ],
)
def test_bad_webhook_options_get_one_line(
    args: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("I2V_WEBHOOK_ALLOW_PRIVATE", raising=False)
    status, lines = _run(["generate", str(HARBOR), "-o", str(tmp_path / "out.mp4"), *args], capsys)
    assert status != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith(expect), lines


def test_the_webhook_secret_is_shown_and_rotated(tmp_path: Path) -> None:
    state = tmp_path / ".i2v"
    ledger = open_ledger(str(state / "ledger.sqlite3"))
    ledger.create_account("local", 10)
    where = ["--state-dir", str(state)]

    code, lines, out = i2v("accounts", "webhook-secret", "local", *where, cwd=tmp_path)
    assert code == 0, lines
    secret = out.strip().removeprefix("webhook secret of local: ")
    assert secret.startswith("whsec_") and secret == ledger.webhook_secret("local")
    code, lines, out = i2v("accounts", "webhook-secret", "local", "--rotate", *where, cwd=tmp_path)
    assert code == 0, lines
    rotated = out.strip().removeprefix("new webhook secret of local: ")
    assert rotated.startswith("whsec_") and rotated != secret and rotated == ledger.webhook_secret("local")

    code, lines, _ = i2v("accounts", "webhook-secret", "nobody", *where, cwd=tmp_path)
    assert (code, lines) == (2, ["i2v: error: no account named 'nobody'"])
