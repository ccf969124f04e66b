"""Where a command finds its stack: flags first, then ``I2V_*`` environment variables, then the file a
running ``i2v stack up`` leaves in its state folder (``--state-dir``, else ``I2V_STATE_DIR``, else ``.i2v``)."""

import os
from pathlib import Path

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
