"""The embedded stack splits the host's cores among its services, and each service process holds its
torch and OpenCV pools to its share."""

from pathlib import Path

import pytest

from services.stack.embedded import SERVICES, EmbeddedStack

pytestmark = pytest.mark.integration


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_each_service_runs_on_its_share_of_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I2V_THREADS", "6")  # more than this machine has: the budget is what was asked
    monkeypatch.setenv("I2V_THREADS_MUX", "2")  # one service's own budget wins over its share

    with EmbeddedStack(tmp_path / "state", services=SERVICES) as stack:
        budgets = {name: _environ_of(stack.pid(name)).get(f"I2V_THREADS_{name.upper()}") for name in SERVICES}
        logs = {name: stack.log_path(name).read_text() for name in SERVICES}
        cli = stack.settings()

    # Six cores: latent 3 and decode 2 by their work; mux its own 2; ingest 1; billing does no compute.
    assert budgets == {"ingest": "1", "billing": None, "latent": "3", "decode": "2", "mux": "2"}
    assert (cli.threads_latent, cli.threads_decode, cli.threads_mux) == (3, 2, 2)
    # Each process says what its libraries took, once its model is loaded.
    assert "latent thread budget 3 (torch 3" in logs["latent"]
    assert "decode thread budget 2 (torch 2, OpenCV 2)" in logs["decode"]
    assert "mux thread budget 2 (" in logs["mux"]
    assert "ingest thread budget 1 (" in logs["ingest"]
