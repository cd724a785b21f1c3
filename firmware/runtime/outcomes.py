"""A sale's outcome told: on the display, in the journal (shown), and in one log line.

`Announcer.show` hands each screen to the display without waiting for the bus.
When a screen shows a sale's outcome for the first time, once its write is done
(or given up) the journal records that the merchant was told, so that after a
crash the restarted terminal tells an outcome that never reached the glass
(recovery.py), and the outcome is logged once, in words.

`journalctl -u posterm SALE_ID=42` finds the line of sale 42; OUTCOME, AMOUNT,
STAN, RC and PAN (masked, first 6 and last 4) are fields of it. Under systemd
they are journal fields (journald.py); on stderr the words say the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.state import Phase, State
from firmware.runtime.display import DisplayKeeper
from firmware.runtime.journal import Journal
from firmware.runtime.supervisor import is_fatal
from firmware.core.texts import customer_not_moved, money, not_moved, outcome

log = logging.getLogger("posterm.sale")


def describe(rec: SaleRecord, currency: str, cause: str = "") -> tuple[str, str, int]:
    """(OUTCOME field, the words, logging level) for a sale's final record."""
    amount = money(rec.amount, currency)
    if rec.status == SaleStatus.APPROVED:
        return "APPROVED", f"approved, {amount}, auth {rec.approval}", logging.INFO
    if rec.status == SaleStatus.OFFLINE_APPROVED:
        return ("OFFLINE_APPROVED", f"approved offline, {amount}, code {rec.approval}, "
                "to be sent to the bank", logging.INFO)
    if rec.status == SaleStatus.DECLINED:
        out = outcome(rec.response_code)
        why = f" ({out.reason.lower()})" if out.reason else ""
        return ("DECLINED", f"declined by the bank, code {rec.response_code}{why}, {amount}, "
                f"{not_moved(rec.kind).lower()}", logging.INFO)
    if rec.status == SaleStatus.NOT_COMPLETED:
        return ("NOT_COMPLETED", f"no answer from the bank, {amount}: reversal recorded, "
                f"{customer_not_moved(rec.kind)}", logging.WARNING)
    why = ", ".join(x.lower() for x in (cause, rec.reason) if x) or "not completed"
    return "NOT_CHARGED", f"not completed ({why}), {amount}, {customer_not_moved(rec.kind)}", \
        logging.WARNING


def log_outcome(rec: SaleRecord, currency: str, *, cause: str = "") -> None:
    kind, words, level = describe(rec, currency, cause)
    label = f"sale {rec.sale_id}" if rec.sale_id else "sale (not journaled)"
    fields = {"OUTCOME": kind, "AMOUNT": rec.amount, "CURRENCY": currency,
              "PAN": rec.pan_masked, "RC": rec.response_code, "STAN": rec.stan}
    if rec.sale_id:
        fields["SALE_ID"] = rec.sale_id
    if rec.kind == "refund":
        label += " (refund)"
    log.log(level, "%s: %s, card %s", label, words, rec.pan_masked, extra={"journal": fields})


class Announcer:
    def __init__(self, display: DisplayKeeper, journal: Journal, currency: str, *,
                 on_fatal: Callable[[BaseException], None],
                 on_outcome: Callable[[SaleRecord], None] | None = None) -> None:
        self.display, self.journal, self.currency, self.on_fatal = (display, journal,
                                                                     currency, on_fatal)
        self.on_outcome = on_outcome  # the fleet channel's `sale` event (fleet.py)
        self._told: SaleRecord | None = None  # the last outcome shown and logged

    def show(self, rows: tuple[str, str, str, str], state: State | None) -> None:
        """Hand the screen to the display; journal and log a sale's outcome the first
        time a screen shows it, once the write is done."""
        done = self.display.submit(rows)
        if state is None or state.result is None or state.phase not in (Phase.PRINTING,
                                                                        Phase.RESULT):
            return
        rec, cause = state.result, state.cause
        if rec is self._told:
            return
        self._told = rec
        done.add_done_callback(lambda _done: self._shown(rec, cause))

    def _shown(self, rec: SaleRecord, cause: str) -> None:
        """The display now shows a sale's outcome (or was given it, if it fails): journal
        that the merchant was told, and log it once, in words, with the journal fields an
        operator searches by."""
        try:
            if rec.sale_id:
                self.journal.mark_shown(rec.sale_id)
            log_outcome(rec, self.currency, cause=cause)
            if self.on_outcome is not None:
                self.on_outcome(rec)
        except Exception as exc:
            if is_fatal(exc):  # stop through the one path that says OUT OF ORDER
                self.on_fatal(exc)
                return
            log.error("after showing sale %d: %s: %s", rec.sale_id, type(exc).__name__, exc)
