"""`i2v generate`'s progress shows the ETA it was given at submit next to each stage, and nothing without one."""

import pytest

from contracts.messages import StageStarted
from contracts.stages import Stage
from services.cli.generate import ProgressBars


def test_each_stage_line_says_about_how_long_is_left(capsys: pytest.CaptureFixture[str]) -> None:
    bars = ProgressBars(ends_in_s=3600.0)  # an hour: the seconds it takes to print cannot change the figure
    bars.update(StageStarted(job_id="jeta01", stage=Stage.INGEST))
    assert capsys.readouterr().err.strip() == "ingest: started, about 3600 s left"


def test_without_an_eta_the_line_is_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    ProgressBars().update(StageStarted(job_id="jeta01", stage=Stage.LATENT))
    assert capsys.readouterr().err.strip() == "latent: started"
