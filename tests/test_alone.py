"""The ``alone`` marker: ``just test`` runs the suite on two workers without the alone tests, then them by
themselves; a small suite run both ways in a pytest of its own."""

import os
from pathlib import Path

import pytest

SUITE = {
    "test_timing": "import pytest\n\n@pytest.mark.alone\ndef test_alone():\n    pass\n",
    "test_other": "def test_one():\n    pass\n\ndef test_two():\n    pass\n",
}


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(**SUITE)
    pytester.makeconftest('pytest_plugins = ["tests.alone"]\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", f"{root}{os.pathsep}{pytester.path}")
    return pytester


def _ran(result: pytest.RunResult) -> set[str]:
    """The tests the verbose output says passed (``test_x.py::name PASSED``, or ``PASSED test_x.py::name``)."""
    return {
        word.split("::")[1] for line in result.outlines if "PASSED" in line for word in line.split() if "::" in word
    }


@pytest.mark.slow
def test_the_workers_leave_the_alone_tests_out_and_a_second_run_has_only_them(suite: pytest.Pytester) -> None:
    workers = suite.runpytest_subprocess("-n", "2", "--alone=skip", "-v", "-p", "no:cacheprovider")
    by_itself = suite.runpytest_subprocess("--alone=only", "-v", "-p", "no:cacheprovider")
    everything = suite.runpytest_subprocess("-v", "-p", "no:cacheprovider")

    workers.assert_outcomes(passed=2)  # (the workers' deselections are not counted in the summary)
    assert _ran(workers) == {"test_one", "test_two"}
    by_itself.assert_outcomes(passed=1, deselected=2)
    assert _ran(by_itself) == {"test_alone"}
    everything.assert_outcomes(passed=3)


def test_a_selection_without_alone_tests_is_no_failure_for_the_second_run(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("--alone=only", "test_other.py", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(deselected=2)
