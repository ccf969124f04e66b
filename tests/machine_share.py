"""Tests marked ``alone`` get the machine to themselves when the suite runs on several workers
(pytest-xdist): a timing check, such as the ETA's accuracy, measures nothing true while another worker's
test loads the same cores.

Every test holds a shared lock for as long as it runs, its fixtures' set-up and tear-down included; an
``alone`` test holds it exclusively, so it starts once the tests running on the other workers end, and they
start their next only after it ends. A gate lock taken before either keeps the other workers from slipping
in a shared lock ahead of a waiting ``alone`` test. The locks live in a folder of the run's own, removed at
its end; a worker that dies lets go of its locks with its process.
"""

import contextlib
import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_RUN_ID = "PYTEST_XDIST_TESTRUNUID"


def _folder(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"i2v-tests-{run_id}"


@contextlib.contextmanager
def machine_share(folder: Path, alone: bool) -> Iterator[None]:
    """Hold the machine shared with the other workers, or alone, while the body runs."""
    folder.mkdir(exist_ok=True)
    with (folder / "gate").open("a") as gate, (folder / "share").open("a") as share:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(share, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(share, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "alone: a timing check; on several workers it runs while no other worker runs a test"
    )
    # The controller names the run, so that it knows which lock folder to remove at the end.
    if not hasattr(config, "workerinput") and getattr(config.option, "testrunuid", "unset") is None:
        config.option.testrunuid = uuid.uuid4().hex


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    run_id = os.environ.get(_RUN_ID)
    if run_id is None:  # one process: nothing runs beside the test
        yield
        return
    with machine_share(_folder(run_id), alone=item.get_closest_marker("alone") is not None):
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    run_id = getattr(config.option, "testrunuid", None)
    if not hasattr(config, "workerinput") and run_id is not None:
        shutil.rmtree(_folder(run_id), ignore_errors=True)
