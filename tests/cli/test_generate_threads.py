"""A one-shot `i2v generate` starts a stack for one job: its stages take turns, so each gets every core."""

import pytest

from services.cli.generate import _one_job_threads
from services.config import Settings
from services.threads import available_cores


def test_one_job_gives_each_stage_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in ("INGEST", "LATENT", "DECODE", "MUX"):
        monkeypatch.delenv(f"I2V_THREADS_{service}", raising=False)
    threads = _one_job_threads(Settings(), jobs=1)
    assert threads == {f"I2V_THREADS_{s}": str(available_cores()) for s in ("INGEST", "LATENT", "DECODE", "MUX")}
    assert _one_job_threads(Settings(threads=3), jobs=1)["I2V_THREADS_LATENT"] == "3"


def test_a_share_set_in_the_shell_stays_and_variations_keep_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I2V_THREADS_DECODE", "1")
    assert _one_job_threads(Settings(), jobs=1)["I2V_THREADS_DECODE"] == "1"
    assert _one_job_threads(Settings(), jobs=2) == {}
