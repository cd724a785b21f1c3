"""The stateful model test of the core, run long: as many steps as asked.

Runs the RuleBasedStateMachine of tests/test_model_core.py (the real core, journal and
runtime pieces against a model host with its own ledger; its docstring says what is
real and what is modelled) for about `--steps` rule steps, in examples of
`--per-example` steps each, and prints the steps run, the examples, the time and the
rate. A counterexample is shrunk by Hypothesis and printed as the sequence of steps;
the exit status is then 1.

    ./run bench                                    20,000 steps (a few minutes)
    .venv/bin/python bench/model.py --steps 1000000
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from tests.test_model_core import CoreModel  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000, help="rule steps, about")
    parser.add_argument("--per-example", type=int, default=50,
                        help="steps per example at most (stateful_step_count)")
    parser.add_argument("--derandomize", action="store_true",
                        help="the same examples every run, as in CI (default: new ones)")
    parser.add_argument("--chunk", type=int, default=500,
                        help="examples per Hypothesis run (bounds its memory)")
    parser.add_argument("--progress", type=float, default=0.0, metavar="SECONDS",
                        help="print the steps so far every SECONDS (default: only at the end)")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the firmware's own log lines, thousands of them
    # an example runs up to --per-example steps (about 95 % of it on average)
    examples = max(1, -(-args.steps // args.per_example))
    cfg = settings(max_examples=examples, stateful_step_count=args.per_example,
                   deadline=None, database=None, derandomize=args.derandomize,
                   suppress_health_check=list(HealthCheck), print_blob=True)
    machines = 0
    real_init = CoreModel.__init__

    shown = [time.monotonic()]

    def counting_init(self: CoreModel) -> None:
        nonlocal machines
        machines += 1
        if args.progress and time.monotonic() - shown[0] >= args.progress:
            shown[0] = time.monotonic()
            print(f"... {CoreModel.steps} steps, {machines} examples, "
                  f"{shown[0] - start:.0f} s", flush=True)
        real_init(self)

    start = time.monotonic()
    CoreModel.__init__ = counting_init  # type: ignore[method-assign]
    failed = ""
    runs = 0
    try:
        # in runs of at most --chunk examples, each a new Hypothesis engine: one engine
        # keeps the tree of every example it tried, and a million steps in one would
        # take gigabytes
        while CoreModel.steps < args.steps:
            left = -(-(args.steps - CoreModel.steps) // args.per_example)
            runs += 1
            run_state_machine_as_test(CoreModel, settings=settings(
                cfg, max_examples=max(1, min(args.chunk, left))))
            if args.derandomize:
                break  # the same examples again would add nothing
    except Exception as exc:  # the shrunk counterexample (AssertionError, Flaky, ...)
        failed = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - start
    steps = CoreModel.steps
    print(f"model test: {steps} steps in {machines} examples, {runs} run(s) (asked "
          f"{args.steps} steps, up to {args.per_example} per example), {elapsed:.1f} s, "
          f"{steps / elapsed if elapsed else 0:.0f} steps/s")
    if failed:
        print("COUNTEREXAMPLE (shrunk, including the shrinking's own runs in the counts "
              "above):")
        print(failed)
        return 1
    print("no counterexample: the money invariant held after every step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
