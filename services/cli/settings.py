"""Where a command finds its stack: flags first, then ``I2V_*`` environment variables, then the file a
running ``i2v stack up`` leaves in its state folder (``--state-dir``, else ``I2V_STATE_DIR``, else ``.i2v``).

``generate`` is the exception: it starts a stack of its own unless told of one (``--nats``/``--s3`` or their
variables, ``--stack DIR``) or one answers from the default state folder (:func:`generate_settings`)."""

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from services.cli.errors import CliError
from services.config import Settings, settings_from
from services.stack.state_file import DEFAULT_STATE_DIR, STACK_FILE, read_stack_file


def state_folder(flag: Path | None) -> Path:
    """The state folder a command looks in."""
    if flag is not None:
        return flag
    named = os.environ.get("I2V_STATE_DIR")
    return Path(named) if named else DEFAULT_STATE_DIR


def load_settings(state_dir: Path | None = None, *, from_stack_file: bool = True, **flags: object) -> Settings:
    """Settings from flags (``None`` = not given) over the environment over the state folder's stack file."""
    layers: dict[str, str] = {}
    if from_stack_file:
        layers.update(read_stack_file(state_folder(state_dir)) or {})
    layers.update({k: v for k, v in os.environ.items() if k.startswith("I2V_")})
    if state_dir is not None:
        layers["I2V_STATE_DIR"] = str(state_dir)
    layers.update({f"I2V_{name.upper()}": str(value) for name, value in flags.items() if value is not None})
    try:
        return settings_from(layers)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"setting I2V_{str(first['loc'][0]).upper()}: {first['msg']}") from None


def require_stack(settings: Settings, state_dir: Path | None) -> None:
    """Refuse in one line when no stack is named anywhere, saying how to name one."""
    if settings.nats_url and settings.s3_endpoint:
        return
    folder = state_folder(state_dir)
    raise CliError(
        f"no running stack found: no {folder / STACK_FILE}, and I2V_NATS_URL and I2V_S3_ENDPOINT are not both set; "
        "start one with `i2v stack up`, or point at its state folder with --state-dir",
        1,
    )


_PROBE_TIMEOUT_S = 1.0
"""A stack on this machine answers a TCP connect at once; a stale stack.env is told apart in a second."""


def generate_settings(
    stack: Path | None, nats_url: str | None, s3_endpoint: str | None, embedded_state: Path | None
) -> tuple[Settings, Path | None]:
    """The settings ``generate`` runs with, and the state folder of the running stack they name (None when
    generate starts its own, or ``--nats``/``--s3`` name the servers).

    ``--stack DIR`` names a running stack by its state folder: its ``stack.env`` wins over ``I2V_*``
    variables, and a folder without a stack that answers is a one-line error. Without it, and without
    servers named by flags or variables or a ``--state-dir`` for a stack of its own, a stack answering from
    the default state folder (``I2V_STATE_DIR``, else ``.i2v``) is used.
    """
    if stack is not None:
        if nats_url or s3_endpoint:
            raise CliError("--stack names a running stack; --nats and --s3 name servers: give one or the other")
        if embedded_state is not None:
            raise CliError("--stack uses a running stack; --state-dir is for the stack generate starts: give one")
        found = _answering_stack(stack)
        if isinstance(found, str):
            raise CliError(f"--stack {stack}: {found}; start one with `i2v stack up --state-dir {stack}`", 1)
        return found, stack
    settings = load_settings(from_stack_file=False, nats_url=nats_url, s3_endpoint=s3_endpoint)
    if settings.nats_url or settings.s3_endpoint or embedded_state is not None:
        return settings, None
    folder = state_folder(None)
    found = _answering_stack(folder)
    return (found, folder) if isinstance(found, Settings) else (settings, None)


def _answering_stack(folder: Path) -> Settings | str:
    """The settings of the stack running from ``folder``, or why there is none."""
    recorded = read_stack_file(folder)
    if recorded is None:
        return f"no running stack there (no {folder / STACK_FILE})"
    shell = {k: v for k, v in os.environ.items() if k.startswith("I2V_")}
    try:
        settings = settings_from({**shell, **recorded})
    except ValidationError as exc:
        return f"{folder / STACK_FILE} is not readable ({exc.errors()[0]['msg']})"
    if not (settings.nats_url and settings.s3_endpoint):
        return f"{folder / STACK_FILE} names no NATS and S3 servers"
    # A cluster's URLs, separated by commas: the stack runs while one of its nodes answers.
    if not any(_answers(url.strip()) for url in settings.nats_url.split(",")):
        return f"the stack {folder / STACK_FILE} names is not running (nothing answers at {settings.nats_url})"
    return settings


def _answers(url: str) -> bool:
    """Whether something accepts a TCP connection at the URL's host and port."""
    try:
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 4222)
    except ValueError:
        return False
    try:
        with socket.create_connection(address, timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False
