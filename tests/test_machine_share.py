"""The ``alone`` marker on two workers: a small suite run with pytest-xdist, each test writing when it ran."""

import os
import tempfile
import uuid
from pathlib import Path

import pytest

RECORDING = """
import os
import time

import pytest


def ran(name, seconds):
    start = time.time()
    time.sleep(seconds)
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(f"{name} {start} {time.time()}\\n")
"""


@pytest.mark.slow
def test_an_alone_test_runs_while_no_other_worker_runs_one(pytester: pytest.Pytester, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    pytester.makepyfile(
        recording=RECORDING,
        test_first=(
            "import pytest\nfrom recording import ran\n\n"
            "def test_shared():\n    ran('shared', 1.5)\n\n"
            "@pytest.mark.alone\ndef test_alone():\n    ran('alone', 0.6)\n"
        ),
        test_second="from recording import ran\n\n"
        + "".join(f"def test_{n}():\n    ran('other', 0.15)\n\n" for n in range(20)),
    )
    pytester.makeconftest('pytest_plugins = ["tests.machine_share"]\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    root = Path(__file__).resolve().parent.parent
    env = {"RAN_LOG": str(log), "PYTHONPATH": f"{root}{os.pathsep}{pytester.path}"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        run_id = uuid.uuid4().hex
        result = pytester.runpytest_subprocess(
            "-n", "2", "--dist", "loadfile", "--testrunuid", run_id, "-p", "no:cacheprovider"
        )  # fmt: skip
    result.assert_outcomes(passed=22)

    lines = [line.split() for line in log.read_text().splitlines()]
    runs = [(name, float(start), float(end)) for name, start, end in lines]
    (alone,) = [(start, end) for name, start, end in runs if name == "alone"]
    others = [(start, end) for name, start, end in runs if name == "other"]
    shared = next((start, end) for name, start, end in runs if name == "shared")
    # The workers do run side by side: the other file's tests ran during the shared one.
    assert any(start < shared[1] and end > shared[0] for start, end in others), runs
    # But none of them while the alone test ran.
    assert not [run for run in others if run[0] < alone[1] and run[1] > alone[0]], runs
    # The run's locks are gone with it.
    assert not (Path(tempfile.gettempdir()) / f"i2v-tests-{run_id}").exists()
