"""Thread budgets: how services sharing a host split its cores, and what one alone takes."""

import subprocess
import sys

import pytest

from services.config import settings_from
from services.threads import available_cores, service_threads, shared_host_env, split_cores, thread_shares

PIPELINE = ("ingest", "billing", "latent", "decode", "mux")


@pytest.mark.parametrize(
    ("cores", "expected"),
    [
        (1, {"ingest": 1, "latent": 1, "decode": 1, "mux": 1}),
        (2, {"ingest": 1, "latent": 1, "decode": 1, "mux": 1}),
        (4, {"ingest": 1, "latent": 2, "decode": 1, "mux": 1}),
        (8, {"ingest": 1, "latent": 4, "decode": 3, "mux": 1}),
        (16, {"ingest": 1, "latent": 7, "decode": 7, "mux": 2}),
    ],
)
def test_the_stages_split_the_cores_by_their_work_with_one_thread_at_least(
    cores: int, expected: dict[str, int]
) -> None:
    shares = split_cores(cores, PIPELINE)
    assert shares == expected
    # Billing has no compute: it takes no share. The stages use every core, and never fewer than one each.
    assert "billing" not in shares
    assert sum(shares[name] for name in ("latent", "decode", "mux")) == max(cores, 3)


def test_a_stage_running_with_fewer_siblings_takes_their_cores() -> None:
    assert split_cores(8, ("latent", "mux")) == {"latent": 6, "mux": 2}
    assert split_cores(8, ("decode",)) == {"decode": 8}
    assert split_cores(8, ("billing", "gateway")) == {}


def test_no_cores_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="cores must be at least 1, got 0"):
        split_cores(0, PIPELINE)


def test_a_service_alone_takes_every_core_unless_its_own_budget_is_set() -> None:
    assert service_threads(settings_from({}), "latent") == available_cores()
    assert service_threads(settings_from({"I2V_THREADS": "6"}), "latent") == 6
    assert service_threads(settings_from({"I2V_THREADS": "6", "I2V_THREADS_LATENT": "2"}), "latent") == 2


def test_a_service_budget_set_by_hand_wins_over_the_split() -> None:
    settings = settings_from({"I2V_THREADS": "8", "I2V_THREADS_MUX": "3"})
    assert thread_shares(settings, PIPELINE) == {"ingest": 1, "latent": 4, "decode": 3, "mux": 3}


def test_the_shared_host_env_names_each_service_budget() -> None:
    env = shared_host_env({"I2V_THREADS": "4"}, PIPELINE)
    assert env == {
        "I2V_THREADS_INGEST": "1",
        "I2V_THREADS_LATENT": "2",
        "I2V_THREADS_DECODE": "1",
        "I2V_THREADS_MUX": "1",
    }
    assert settings_from(env).threads_latent == 2


def test_a_budget_below_one_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="threads_latent"):
        settings_from({"I2V_THREADS_LATENT": "0"})


def test_the_budget_reaches_torch_and_opencv_loaded_before_and_after() -> None:
    # A fresh interpreter: the budget is process-wide, and this test process's pools must stay as they are.
    script = (
        "import cv2\n"
        "from services.threads import apply_thread_budget, threads_in_use\n"
        "apply_thread_budget(1)\n"
        "import torch\n"  # loaded after: takes the budget from OMP_NUM_THREADS
        "print(threads_in_use())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "torch 1, OpenCV 1"
