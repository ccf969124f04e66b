"""Named places where a crash test may kill the process (``os._exit``), each at most once per state folder.

Off unless ``I2V_FAILPOINTS`` lists names; the crash tests use it to die exactly where a random kill
rarely lands, e.g. billing between its ledger write and its publish.
"""

import os
from pathlib import Path


def hit(name: str) -> None:
    """Exit at once, like ``kill -9``, if ``name`` is armed and has not fired yet."""
    armed = os.environ.get("I2V_FAILPOINTS", "")
    if not armed or name not in armed.split(","):
        return
    marker = Path(os.environ.get("I2V_STATE_DIR", ".")) / "failpoints" / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os._exit(137)


def fault(name: str, job_id: str) -> None:
    """Raise an unexpected error for the first N hits of ``name`` for one job, when ``I2V_FAULTS`` holds
    ``name:job_id:N``; lets a test drive a real job into the dead-letter stream and back out."""
    for item in os.environ.get("I2V_FAULTS", "").split(","):
        armed_name, _, rest = item.partition(":")
        armed_job, _, limit = rest.partition(":")
        if armed_name != name or armed_job != job_id or not limit.isdigit():
            continue
        folder = Path(os.environ.get("I2V_STATE_DIR", ".")) / "faults" / f"{name}-{job_id}"
        folder.mkdir(parents=True, exist_ok=True)
        hits = len(list(folder.iterdir()))
        if hits < int(limit):
            (folder / str(hits + 1)).touch()
            raise RuntimeError(f"injected fault {name} #{hits + 1} for job {job_id}")
