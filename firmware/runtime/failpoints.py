"""Named crash points for the crash-matrix tests.

The runtime calls `hit("after_record_sending")` and the like at each step of a
sale where power could fail. Normally nothing happens. When the environment
variable POSTERM_FAILPOINT names the point (optionally `name:N` for its N-th
hit), the process kills itself with SIGKILL right there — exactly what a power
cut does — so tests can prove that recovery handles every step.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("POSTERM_FAILPOINT", "")
_NAME, _, _NTH = _SPEC.partition(":")
_COUNT = {"hits": 0}

POINTS = (
    "after_record_sending",  # sale journaled as sending, request not yet written
    "after_send",  # request written, no answer yet
    "after_answer",  # answer received, not yet journaled
    "after_answer_recorded",  # answer journaled, result not yet shown/printed
    "during_print",  # receipt half printed
    "after_reversal_identity",  # reversal has its STAN, not yet sent
    "after_reversal_sent",  # reversal written, no 0410 yet
)


def hit(name: str) -> None:
    if not _NAME or name != _NAME:
        return
    _COUNT["hits"] += 1
    if _NTH and _COUNT["hits"] != int(_NTH):
        return
    os.kill(os.getpid(), signal.SIGKILL)
