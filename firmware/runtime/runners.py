"""The effects the core asks for, and how each runs: one table, effect type -> (run,
fallback). The loop (app.py) runs them in order; `answer` spawns work whose result is the
core's next event, `spawn` work that answers by itself (a print, the batch close)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from firmware.core.effects import (
    Authorize, Beep, CheckPin, ChipBegin, ChipChoice, ChipComplete, ChipSettle, ChipStop,
    CloseBatch, CloseSale, DecideOffline, FindForVoid, Log, Print, PrintReport, PrintTotals,
    Show, StartTimer, TakePin, Void,
)
from firmware.core.emv.steps import Outcome, PinResult
from firmware.core.events import (
    ChipFinished, CloseFinished, Event, PinChecked, PinTaken, PrintFinished, SaleClosed,
    VoidCandidate,
)
from firmware.runtime.current import Current
from firmware.runtime.graph import Parts, Spawn
from firmware.runtime.journal import Journal

log = logging.getLogger("posterm")
Runner = Callable[[Any], object]  # runs an effect (spawning a task for background work)
Fallback = Callable[[Any], Event]  # the event that ends the effect's flow if running it fails


def table(p: Parts, current: Current, journal: Journal, *, spawn: Spawn,
          answer: Callable[[Callable[[], Coroutine[Any, Any, Event]], str], None],
          start_timer: Runner) -> dict[type[Any], tuple[Runner, Fallback | None]]:
    """Effect type -> (how it runs, the event that still ends its flow if running it
    fails unexpectedly). Every effect the core can ask for is here (a test checks);
    an effect that runs in the background is spawned, and its task answers itself."""
    return {
        Show: (lambda e: p.announcer.show(e.rows, current.state), None),
        StartTimer: (start_timer, None),
        Authorize: (lambda e: answer(lambda: p.authorizer.authorize(e.request, e.sale_id),
                                     "authorize"), None),
        Print: (lambda e: spawn(p.prints.print(e), "print"),
                lambda e: PrintFinished(False, "PRINTER FAULT", job=e.job)),
        CloseSale: (p.decisions.close_sale,
                    lambda e: SaleClosed(journal.sale(e.sale_id))),
        DecideOffline: (p.decisions.decide_offline, p.decisions.offline_failed),
        PrintReport: (lambda e: spawn(p.prints.offline_report(), "report"), None),
        Log: (lambda e: log.log(logging.getLevelName(e.level.upper()), "%s", e.text), None),
        Beep: (lambda e: spawn(p.signals.beep(), "beep"), None),
        CheckPin: (lambda e: answer(lambda: p.operator.answer(e.pin, e.function),
                                    "pin check"),
                   lambda e: PinChecked(False, e.function, "PIN CHECK FAILED")),
        FindForVoid: (p.decisions.find_for_void,
                      lambda e: VoidCandidate(None, "CANNOT BE VOIDED")),
        Void: (lambda e: p.decisions.void(e.sale_id),
               lambda e: VoidCandidate(None, "CANNOT BE VOIDED")),
        CloseBatch: (lambda e: spawn(p.closer.run(e.scheduled), "batch close"),
                     lambda e: CloseFinished(False, journal.open_batch(),
                                             message="TERMINAL ERROR")),
        ChipBegin: (p.chip_begin, lambda e: ChipFinished(Outcome(
            "fallback", message="CHIP ERROR", detail="the chip session could not start"))),
        ChipChoice: (p.chip_choose, None),
        ChipComplete: (p.chip_complete, lambda e: ChipFinished(Outcome(
            "failed", message="CHIP ERROR", detail="the card could not be told the answer"))),
        ChipSettle: (p.decisions.settle_chip, p.decisions.chip_failed),
        ChipStop: (p.chip_stop, None),
        TakePin: (p.take_pin, lambda e: PinTaken(PinResult("no_pinpad"))),
        PrintTotals: (lambda e: spawn(p.prints.totals(e.kind), "totals"),
                      lambda e: PrintFinished(False, "PRINTER FAULT", job="x-report"
                                              if e.kind == "X" else "z-report")),
    }
