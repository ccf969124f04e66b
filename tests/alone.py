"""Tests marked ``alone`` are timing checks (the ETA's accuracy): what they measure is only true while
nothing else loads the machine. ``just test`` runs the suite on two workers without them
(``--alone=skip``), then runs them by themselves in one process (``--alone=only``), once every worker
and whatever it started has gone. A plain ``pytest`` runs every test (``--alone=run``).

Inside one run on several workers, an ``alone`` test would share the cores with the other worker's test
or what that test left running, and a load that starts or stops between its warm-up and its measurement
is nothing the ETA can foresee: medians of 20% and 33% against 3-11% alone on the same machine.
"""

import pytest

_MODES = ("run", "skip", "only")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--alone",
        choices=_MODES,
        default="run",
        help="tests marked alone: run them with the others (run), leave them out (skip), or run only them (only)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "alone: a timing check that must have the machine to itself (just test runs it after the rest)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mode = config.getoption("alone")
    if mode == "run":
        return
    wanted = mode == "only"
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        (kept if (item.get_closest_marker("alone") is not None) == wanted else left_out).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Only the alone tests of a selection that holds none (`just test tests/pipeline`): nothing to run is fine.
    if session.config.getoption("alone") == "only" and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
