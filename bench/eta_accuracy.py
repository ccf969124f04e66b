"""The ETA's accuracy at submit, several times over: what tests/services/stack/test_eta.py does once
(a warm-up pair, then a batch of 8 tiny jobs submitted together, each asked its ETA right after its submit).

Prints, per run, every job's ETA against the time it really took from its submit to its end, with the
|error| relative to that time, and the median |error| (issue 11's goal: at most 25%); then the medians of
all runs.

    .venv/bin/python bench/eta_accuracy.py --runs 3
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services.stack.test_eta import GOAL, eta_errors, eta_stack, report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="fresh stacks to run the check on (default 3)")
    parser.add_argument(
        "--one-by-one", action="store_true", help="submit the batch one job after another instead of all at once"
    )
    args = parser.parse_args()
    medians = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as folder, eta_stack(Path(folder) / "state") as stack:
            guesses = asyncio.run(eta_errors(stack, together=not args.one_by_one))
        median = statistics.median(g.error for g in guesses)
        medians.append(median)
        print(f"run {run}: ETA/actual at submit: {report(guesses)}; median error {median:.0%}", flush=True)
    shown = ", ".join(f"{m:.0%}" for m in medians)
    print(f"median errors: {shown} (goal <= {GOAL:.0%}; {sum(m <= GOAL for m in medians)}/{len(medians)} met)")


if __name__ == "__main__":
    main()
