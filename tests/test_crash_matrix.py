"""Crash matrix: SIGKILL the firmware at every step of a sale, restart it, check the money.

Steps with no time inside them (between two statements) are hit with the
firmware's named failpoints, which SIGKILL the process right there, like a power
cut. Steps that last (waiting for the host, printing) are hit from outside at a
random moment inside the step. The host answers after a random delay, so the
kill also lands at random points of the host's own processing. After each kill
the firmware restarts, resolves what the journal shows, tells the operator, and
the invariant checker reconciles journal and host ledger once queues drain.

POSTERM_CRASH_REPEATS (default 4) sets how many times each step is repeated.
"""

from __future__ import annotations

import os
import pathlib
import random
import time

import pytest

from tests.invariants import wait_and_check
from tests.rig import Rig

PAN = "4761739001010010"
REPEATS = int(os.environ.get("POSTERM_CRASH_REPEATS", "4"))
RESULTS: dict[str, int] = {}

# step -> what the operator must be told after the restart
FAILPOINT_STEPS = {
    "after_record_sending": "LAST SALE REVERSED",
    "after_send": "LAST SALE REVERSED",
    "after_answer": "LAST SALE REVERSED",
    "after_answer_recorded": "COPY PRINTED",
}


def _amount(rng: random.Random) -> str:
    return str(rng.randrange(10, 990) * 10)  # ends in 0: never a decline convention


def _restart_and_check(rig: Rig, expect: str | None) -> None:
    rig.start_fw()
    if expect:
        rig.hw.wait_display(expect, timeout=10)
    wait_and_check(rig)
    rig.hw.press("CANCEL")  # acknowledge the notice


@pytest.mark.parametrize("step", sorted(FAILPOINT_STEPS))
def test_kill_at_failpoint(tmp_path: pathlib.Path, step: str) -> None:
    rng = random.Random(step)
    with Rig(tmp_path) as rig:
        rig.start_sim()
        for _ in range(REPEATS):
            rig.hw.host_fault("delay", seconds=round(rng.uniform(0, 0.3), 3))
            rig.start_fw(failpoint=step)
            rig.sale(_amount(rng), PAN)
            assert rig.wait_fw_exit() == -9, "the failpoint did not fire"
            _restart_and_check(rig, FAILPOINT_STEPS[step])
            rig.kill_fw()
        approved = [r for r in rig.hw.receipts() if "APPROVED" in r]
        if step == "after_answer_recorded":
            assert len(approved) == REPEATS and all("*** COPY ***" in r for r in approved)
        else:
            assert approved == [] and not any(e["charged"] for e in rig.hw.ledger())


def test_kill_while_waiting_for_the_host(tmp_path: pathlib.Path) -> None:
    rng = random.Random(11)
    with Rig(tmp_path) as rig:
        rig.start_sim()
        for _ in range(REPEATS * 2):
            rig.hw.host_fault("delay", seconds=1.0)
            rig.start_fw()
            rig.sale(_amount(rng), PAN)
            time.sleep(rng.uniform(0.0, 1.1))  # anywhere from before the send to the answer
            rig.kill_fw()
            rig.hw.host_clear()
            _restart_and_check(rig, None)
            rig.kill_fw()


def test_kill_while_printing(tmp_path: pathlib.Path) -> None:
    rng = random.Random(12)
    with Rig(tmp_path) as rig:
        rig.start_sim()
        for _ in range(REPEATS):
            rig.hw.printer_fault(slow_seconds=0.08)
            rig.start_fw()
            rig.sale(_amount(rng), PAN)
            rig.hw.wait_display("PRINTING")
            time.sleep(rng.uniform(0.05, 1.2))
            rig.kill_fw()
            rig.hw.printer_clear()
            _restart_and_check(rig, "COPY PRINTED")
            assert "*** COPY ***" in rig.wait_receipts(1)[-1]
            rig.kill_fw()


@pytest.mark.parametrize("step", ["after_reversal_identity", "after_reversal_sent"])
def test_kill_while_reversing(tmp_path: pathlib.Path, step: str) -> None:
    rng = random.Random(step)
    with Rig(tmp_path) as rig:
        rig.start_sim()
        for _ in range(REPEATS):
            rig.hw.host_fault("swallow")  # charged, never answered: a reversal follows
            rig.start_fw(failpoint=step)
            rig.sale(_amount(rng), PAN)
            assert rig.wait_fw_exit(timeout=20) == -9
            _restart_and_check(rig, None)
            rig.kill_fw()
        assert not any(e["charged"] for e in rig.hw.ledger())
