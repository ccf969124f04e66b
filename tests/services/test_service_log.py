"""A service's log rotates by size, and its stdout and stderr follow it into each new file."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.nats_server import NatsServer

ROOT = Path(__file__).resolve().parents[2]


def test_the_log_rotates_and_stdout_and_stderr_follow_it(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "billing.log"
    script = textwrap.dedent(
        f"""
        import logging, os, sys
        from pathlib import Path
        from services.service_log import configure_service_log

        configure_service_log(Path({str(log)!r}), max_bytes=4096, backups=2)
        for i in range(400):
            logging.getLogger("i2v.test").info("line %04d %s", i, "x" * 60)
            if i % 50 == 0:
                print(f"printed {{i:04d}}", flush=True)
                os.write(2, f"raw stderr {{i:04d}}\\n".encode())
        logging.getLogger("i2v.test").info("the last line")
        print("printed at the end", flush=True)
        raise SystemExit("a crash says why")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert result.stdout == "" and result.stderr == "", "everything goes to the log file"
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["billing.log", "billing.log.1", "billing.log.2"], files  # two backups, no more
    for name in files:
        assert (log.parent / name).stat().st_size <= 4096 + 200, name  # bounded: one line past the limit
    current = log.read_text()
    # The newest file holds what came after the last rotation: log records, prints and raw stderr alike.
    assert "the last line" in current and "printed at the end" in current and "a crash says why" in current
    everything = "".join((log.parent / name).read_text() for name in files)
    assert "raw stderr 0350" in everything and "printed 0350" in everything
    assert "line 0399" in everything and "line 0000" not in everything  # the oldest rotated away


@pytest.mark.integration
def test_a_served_service_logs_to_its_log_file(nats_server: NatsServer, tmp_path: Path) -> None:
    log, ready = tmp_path / "logs" / "billing.log", tmp_path / "run" / "billing.ready"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("I2V_")}
    env = {
        **clean,
        "I2V_NATS_URL": nats_server.url,
        "I2V_S3_ENDPOINT": "http://127.0.0.1:9",  # billing opens no object until its first sweep or replay
        "I2V_STATE_DIR": str(tmp_path),
        "I2V_RETENTION_DAYS": "0",
        "I2V_READY_FILE": str(ready),
        "I2V_LOG_FILE": str(log),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "serve", "billing"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.1)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert (out, err) == (b"", b""), "the service writes to its log file, not to the stack's pipe"
    assert "billing consuming from" in log.read_text()
