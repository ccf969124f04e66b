"""The settings a running stack leaves in its state folder, so ``i2v`` commands find it without exports.

``<state>/stack.env`` holds ``I2V_*=value`` lines (shell-quoted, so ``set -a; . .i2v/stack.env`` works
too), mode 0600 since it carries the S3 secret key. The stack writes it once its servers answer and
removes it when it stops; a stack killed with -9 leaves it behind, and commands then report that they
cannot reach the servers it names.
"""

import shlex
from collections.abc import Mapping
from pathlib import Path

from infra.process import write_private

STACK_FILE = "stack.env"
DEFAULT_STATE_DIR = Path(".i2v")
SECRET_SETTINGS = frozenset(
    {"I2V_NATS_PASSWORD", "I2V_S3_SECRET_KEY", "I2V_GATEWAY_SECRET", "I2V_BILLING_SECRET", "I2V_LEDGER_DSN"}
)
"""Kept in the file, never printed: passwords and keys (a PostgreSQL DSN may hold a password)."""


def stack_file(state_dir: Path) -> Path:
    return state_dir / STACK_FILE


def write_stack_file(state_dir: Path, env: Mapping[str, str]) -> Path:
    """Write ``env`` atomically, readable by the owner only; returns the file's path."""
    path = stack_file(state_dir)
    write_private(path, "".join(f"{key}={shlex.quote(value)}\n" for key, value in sorted(env.items())))
    return path


def read_stack_file(state_dir: Path) -> dict[str, str] | None:
    """The settings of the stack running from ``state_dir``; None when there is no such file."""
    try:
        text = stack_file(state_dir).read_text()
    except FileNotFoundError:
        return None
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("I2V_"):
            words = shlex.split(value)
            env[key] = words[0] if words else ""
    return env


def public_settings(env: Mapping[str, str]) -> list[str]:
    """``export`` lines of the settings that are safe to print; each secret named, its value left out."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items()) if key not in SECRET_SETTINGS]
    hidden = sorted(SECRET_SETTINGS & env.keys())
    if hidden:
        lines.append(f"# not printed: {', '.join(hidden)} (in {STACK_FILE})")
    return lines


def remove_stack_file(state_dir: Path) -> None:
    stack_file(state_dir).unlink(missing_ok=True)
