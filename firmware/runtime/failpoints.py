"""Named fault points for the crash-matrix and fault-injection tests.

The runtime calls `hit("after_record_sending")` and the like at each step of a
sale where power could fail. Normally nothing happens. Two environment
variables arm a point, each as `name` or `name:N` (its N-th hit only):

- POSTERM_FAILPOINT: the process kills itself with SIGKILL right there —
  exactly what a power cut does — so tests can prove that recovery handles
  every step.
- POSTERM_RAISE: the point raises `InjectedFault` (once, at the chosen hit),
  an exception nobody expects, so tests can prove that no internal error leaves
  a sale or a background task dead. `name:N:journal` raises the error a full
  or failing disk gives instead (sqlite3.OperationalError), which must stop the
  terminal with a clear message; `name:N:stall` blocks the thread there for
  good, as a driver call that never returns would (the watchdog's case).

Every name in POINTS is hit somewhere in the runtime; a test arms each one and
fails if it never fires.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading

POINTS = (
    "before_record_sending",  # a sale attempt starts, nothing journaled yet
    "after_record_sending",  # sale journaled as sending, request not yet written
    "after_send",  # request written, no answer yet
    "after_answer",  # answer received, not yet journaled
    "after_answer_recorded",  # answer journaled, result not yet shown/printed
    "after_reversal_recorded",  # no answer: reversal journaled, NO RESPONSE not yet shown
    "after_sale_closed",  # sale closed (cancelled, not charged), not yet shown
    "after_offline_recorded",  # offline decision journaled, not yet shown
    "during_print",  # receipt being printed
    "after_reversal_identity",  # reversal has its STAN, not yet sent
    "after_reversal_sent",  # reversal written, no 0410 yet
    "after_advice_identity",  # advice has its STAN, not yet sent
    "after_advice_sent",  # advice written, no 0230 yet
    "link_probe",  # the link monitor is about to probe or echo
    "main_loop_key",  # the main loop takes a key press
    # the batch close (firmware/runtime/batch.py)
    "close_started",  # a close begins, the queue drained, totals not yet journaled
    "close_totals_recorded",  # totals journaled, no 0500 yet
    "close_0500_sent",  # 0500 920000 written, no 0510 yet
    "close_answer_recorded",  # 0510 95 journaled, upload not started
    "upload_item_sent",  # a 0320 / 0321 written, no 0330 yet
    "upload_item_answered",  # a 0330 journaled, the next item not yet sent
    "close_960000_sent",  # 0500 960000 written after the upload, no 0510 yet
    "close_done",  # batch closed and advanced in the journal, Z report not yet printed
    # chip sales (firmware/runtime/chip.py, decisions.py)
    "chip_second_ac",  # the host's answer journaled, the second GENERATE AC not yet sent
    "after_chip_settled",  # the card's decision journaled, not yet shown
    # the online PIN (firmware/runtime/pinkeys.py)
    "after_pin_counter",  # the DUKPT counter advanced and journaled, the PIN block not yet
    #                       made nor sent: that KSN is skipped, never used
)


class InjectedFault(RuntimeError):
    """An exception raised on purpose by POSTERM_RAISE (tests only)."""


def _parse(variable: str) -> tuple[str, int, str]:
    name, _, rest = os.environ.get(variable, "").partition(":")
    nth, _, kind = rest.partition(":")
    return name, int(nth) if nth.isdigit() else 0, kind


_KILL = _parse("POSTERM_FAILPOINT")
_RAISE = _parse("POSTERM_RAISE")
_COUNT = {"kill": 0, "raise": 0}


def hit(name: str) -> None:
    if name == _KILL[0] and _due("kill", _KILL[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    if name == _RAISE[0] and _due("raise", _RAISE[1] or 1):
        if _RAISE[2] == "stall":
            threading.Event().wait()  # never returns: the loop that called us is stuck
        if _RAISE[2] == "journal":
            raise sqlite3.OperationalError(f"disk I/O error (injected at {name})")
        raise InjectedFault(f"injected fault at {name}")


def _due(kind: str, nth: int) -> bool:
    _COUNT[kind] += 1
    return not nth or _COUNT[kind] == nth
