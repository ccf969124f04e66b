"""A service's log file, rotated by size: the process's stdout and stderr follow it to each new file.

``i2v stack up`` starts each service with its stdout and stderr on ``<state>/logs/<name>.log`` and
``I2V_LOG_FILE`` naming that file. The service then logs through a :class:`RotatingFileHandler` on it,
and after each rotation points file descriptors 1 and 2 at the new file, so prints, warnings, uvicorn's
own loggers and a crash's traceback land in the current file too, never in a renamed one that grows on.
"""

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _StdioFollowingHandler(RotatingFileHandler):
    """Rotates at ``maxBytes`` and moves stdout and stderr to the new file."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._follow()

    def _follow(self) -> None:
        if self.stream is None:  # pragma: no cover - delay=False opens the stream at once
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.stream.fileno(), 1)
        os.dup2(self.stream.fileno(), 2)

    def doRollover(self) -> None:
        super().doRollover()
        self._follow()


def configure_service_log(path: Path, max_bytes: int, backups: int, level: int = logging.INFO) -> None:
    """Log to ``path`` (rotated at ``max_bytes``, ``backups`` old copies kept), stdout and stderr with it.

    Replaces the root logger's handlers: one that wrote to stderr would now write every line twice.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _StdioFollowingHandler(path, max_bytes, backups)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
