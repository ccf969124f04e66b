"""Stages and the runner depend on the bus ports only: importing them loads neither NATS nor FastStream."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "module",
    [
        "services.bus.ports",
        "services.bus.runner",
        "services.ingest.stage",
        "services.latent.stage",
        "services.decode.stage",
        "services.mux.stage",
    ],
)
def test_importing_loads_no_nats_and_no_faststream(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "loaded = sorted({name.split('.')[0] for name in sys.modules} & {'nats', 'faststream'})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} loads {result.stdout.strip()}"
