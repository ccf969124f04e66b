"""`i2v accounts` refuses what would break later: a name no job could carry, a negative opening balance.
Each is one line and exit 2, and the ledger is left as it was."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.billing.ledger import open_ledger

I2V = Path(sys.executable).parent / "i2v"


def i2v(*argv: str, cwd: Path) -> tuple[int, list[str], str]:
    """The real command in its own process, without the shell's I2V_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    result = subprocess.run([str(I2V), *argv], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()], result.stdout


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state folder holding a ledger, as `i2v stack up` leaves one."""
    folder = tmp_path / ".i2v"
    open_ledger(str(folder / "ledger.sqlite3")).create_account("local", 10)
    return folder


@pytest.mark.parametrize("name", ["eve x", "eve/x", "ève", "a" * 65, "eve;drop"])
def test_a_name_the_job_contract_refuses_is_refused_at_creation(name: str, state: Path, tmp_path: Path) -> None:
    code, lines, out = i2v("accounts", "create", name, "--points", "5", "--state-dir", str(state), cwd=tmp_path)

    assert code == 2, (lines, out)
    assert len(lines) == 1 and lines[0].startswith("i2v: error: account name"), lines
    assert "Traceback" not in "\n".join(lines) and "API key" not in out
    assert [e.account for e in open_ledger(str(state / "ledger.sqlite3")).entries("local")] == ["local"]


def test_negative_opening_points_are_one_line(state: Path, tmp_path: Path) -> None:
    code, lines, out = i2v("accounts", "create", "eve", "--points", "-5", "--state-dir", str(state), cwd=tmp_path)

    assert code == 2, (lines, out)
    assert lines == ["i2v: error: --points must be 0 or more, got -5"]
    assert "API key" not in out


def test_a_valid_name_is_created(state: Path, tmp_path: Path) -> None:
    code, lines, out = i2v("accounts", "create", "eve.x_1-2", "--points", "5", "--state-dir", str(state), cwd=tmp_path)

    assert code == 0, lines
    assert "account eve.x_1-2 created with 5 points" in out
    assert open_ledger(str(state / "ledger.sqlite3")).balance("eve.x_1-2") == 5


def test_the_sqlite_ledger_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ledger.sqlite3"
    ledger = open_ledger(str(path))
    ledger.create_account("alice", 10)

    written = [p for p in path.parent.iterdir() if p.name.startswith("ledger.sqlite3")]
    assert path in written
    for file in written:  # the database and any -wal / -shm SQLite keeps beside it
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, (file.name, oct(file.stat().st_mode))


def test_the_gateways_jobs_index_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    from services.gateway.jobs_index import JobsIndex

    JobsIndex(tmp_path / "gateway.sqlite3")

    for file in tmp_path.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, (file.name, oct(file.stat().st_mode))
