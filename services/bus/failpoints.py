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
