"""`i2v stack up --gateways N`: several gateway processes on one PostgreSQL jobs index, each printed with
its URL; refused in one line where the index is SQLite (a file serves one gateway)."""

import subprocess
from pathlib import Path

import httpx
import pytest

from services.stack.embedded import WITH_GATEWAY, EmbeddedStack
from tests.stacks import I2V, clean_env, stack_up


@pytest.mark.parametrize("gateways", ["2", "0"])
def test_stack_up_refuses_gateways_it_cannot_run_in_one_line_and_starts_nothing(tmp_path: Path, gateways: str) -> None:
    done = subprocess.run(
        [str(I2V), "stack", "up", "--gateways", gateways],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    if gateways == "2":
        assert "2 gateways need one jobs index to share: set I2V_LEDGER_DSN" in lines[0]
        assert "a SQLite index" in lines[0] and "gateway.sqlite3" in lines[0]
    else:
        assert "gateways must be at least 1, got 0" in lines[0]
    assert not (tmp_path / ".i2v" / "nats").exists() and not (tmp_path / ".i2v" / "logs").exists()


def test_a_stack_of_several_gateways_on_sqlite_is_refused_whatever_the_ledger(tmp_path: Path) -> None:
    # A PostgreSQL ledger with an index set apart on SQLite is still one file for two gateways.
    extra = {"I2V_LEDGER_DSN": "postgresql://postgres@127.0.0.1:9/none", "I2V_INDEX_DSN": str(tmp_path / "i.db")}
    stack = EmbeddedStack(tmp_path / "state", services=WITH_GATEWAY, gateways=3, extra_env=extra)
    with pytest.raises(ValueError, match=r"^3 gateways need one jobs index to share") as refused:
        stack.start()
    assert "\n" not in str(refused.value) and stack.nats is None


@pytest.mark.slow
@pytest.mark.integration
def test_stack_up_with_two_gateways_on_postgresql_prints_and_serves_both(tmp_path: Path, pg_dsn: str) -> None:
    with stack_up(tmp_path, "--gateways", "2", env=clean_env(I2V_LEDGER_DSN=pg_dsn)) as lines:
        urls = [line.removeprefix("web page and API: ") for line in lines if line.startswith("web page and API: ")]
        assert len(urls) == 2 and len(set(urls)) == 2, lines
        key = subprocess.run(
            [str(I2V), "accounts", "key", "local"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
        )
        assert key.returncode == 0, key.stderr
        api_key = key.stdout.split()[-1]
        # Each gateway answers the page and the API, from the one index and the one ledger.
        for url in urls:
            assert httpx.get(url, timeout=10).status_code == 200
            account = httpx.get(f"{url}/v1/account", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
            assert account.status_code == 200, account.text
            assert account.json()["active_jobs"] == 0
        assert any(line.startswith("metrics gateway-2: ") for line in lines), lines
