"""Recovery at start: resolve what the journal shows as unfinished, and say what happened.

Before the terminal takes a new sale (app.py runs this first), the journal's
`recover` resolves the sales a stop left open: an attempt sent without a
recorded answer becomes a pending reversal, one never sent is closed as not
charged. This module turns that into what people see:

- the log names each sale resolved, in its own words (a refund is credited, not
  charged);
- the receipts never printed are printed as copies after READY, the
  `RECOVERY_COPIES` most recent per start (the rest at later starts or from the
  menu), so that a new sale's receipt never waits behind a backlog;
- the idle screen's notice, the first of: the last transaction, when the
  restart changed it, prints its copy, or its result was never shown (LAST SALE
  REVERSED / NOT CHARGED, LAST REFUND APPROVED / PRINTING COPY, ...); a sale
  keyed in and stopped before anything of it was journaled (LAST SALE NOT DONE,
  from the journal's note of the sale in hand); a close finished before the
  restart whose Z report never came out (BATCH n CLOSED / IN BALANCE).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from firmware.core import merchant
from firmware.core.events import CloseFinished
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.state import Phase, State
from firmware.core.texts import customer_not_moved, kind_word, money, not_moved
from firmware.runtime.journal import Journal
from firmware.runtime.journal_base import IN_HAND

log = logging.getLogger("posterm")
RECOVERY_COPIES = 3  # copies printed after one start, most recent first


@dataclass(frozen=True)
class Recovered:
    notice: str  # the idle screen's two lines ("" for none)
    copies: list[SaleRecord] = field(default_factory=list)  # receipts to print as copies


class InHand:
    """Keeps the journal's note of a sale whose amount is confirmed but which is not yet
    in the journal (Journal.in_hand), from the core's state after each event: set when
    the card is asked for, cleared when the sale ends without reaching the journal (the
    sale's own first write clears it otherwise). One write per change, none per event."""

    WAITING = (Phase.WAIT_CARD, Phase.DUPLICATE, Phase.AUTHORIZING, Phase.BUSY_WAIT)

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.noted: tuple[str, int] | None = None  # the sale noted as in hand

    def update(self, state: State) -> None:
        sale = state.sale
        if sale is not None and sale.sale_id is not None:
            self.noted = None  # journaled: the sale's own first write deleted the note
        elif sale is not None and state.phase in self.WAITING:
            if self.noted != (sale.kind, sale.amount):
                self.journal.in_hand(sale.kind, sale.amount)
                self.noted = (sale.kind, sale.amount)
        elif sale is None and self.noted is not None:
            self.journal.in_hand("", 0)  # ended (cancelled, timed out) before the journal
            self.noted = None


def recover(journal: Journal, currency_code: str) -> Recovered:
    """Resolve the journal, and what the terminal shows and prints about it."""
    rec = journal.recover()
    for r in rec.reversed:
        log.warning("recovery: %s %d was sent without a recorded answer: reversal "
                    "pending, %s", kind_word(r.kind).lower(), r.sale_id,
                    customer_not_moved(r.kind))
    for r in rec.closed:
        log.warning("recovery: %s %d never completed; %s", kind_word(r.kind).lower(),
                    r.sale_id, customer_not_moved(r.kind))
    copies = rec.unprinted[-RECOVERY_COPIES:]
    if len(rec.unprinted) > RECOVERY_COPIES:
        log.warning("recovery: %d receipts were never printed; the %d most recent are "
                    "printed now, the rest at the next starts", len(rec.unprinted),
                    RECOVERY_COPIES)
    notice = ""
    last = journal.last_sale()
    if last is not None:
        changed = {r.sale_id for r in rec.reversed} | {r.sale_id for r in rec.closed}
        notice = _last_sale_notice(journal, last, last.sale_id in {r.sale_id for r in copies},
                                   changed)
        if notice:
            log.warning("recovery: the display tells the operator: %s (sale %d)",
                        notice.replace("\n", " / "), last.sale_id)
    notice = notice or _in_hand_notice(journal, currency_code) or _close_notice(journal)
    journal.in_hand("", 0)  # told (or superseded): not again at the next start
    return Recovered(notice, copies)


def _last_sale_notice(journal: Journal, last: SaleRecord, copy: bool,
                      changed: set[int]) -> str:
    """The two lines about the last transaction: only when the restart changed it, prints
    its copy, or its result was never shown. The copy is printed after READY: "PRINTING
    COPY" becomes COPY PRINTED (or REPRINT FROM MENU) when the printer has answered."""
    unseen = last.sale_id in changed or copy or not journal.was_shown(last.sale_id)
    pending = last.status == SaleStatus.NOT_COMPLETED and \
        journal.reversal_pending_for(last.sale_id)
    if not unseen and not pending:
        return ""
    what = f"LAST {kind_word(last.kind)}"  # a refund is credited, not charged
    if last.status == SaleStatus.NOT_COMPLETED:
        return f"{what} REVERSED\n{not_moved(last.kind)}"
    if last.status in (SaleStatus.FAILED, SaleStatus.AUTHORIZING):
        return f"{what} NOT DONE\n{not_moved(last.kind)}"
    verdict = {SaleStatus.APPROVED: "APPROVED", SaleStatus.OFFLINE_APPROVED: "APPROVED",
               SaleStatus.DECLINED: "DECLINED"}.get(last.status, "")
    if not verdict:
        return ""
    return f"{what} {verdict}\n" + ("PRINTING COPY" if copy else "RECEIPT PRINTED")


def _in_hand_notice(journal: Journal, currency_code: str) -> str:
    """A sale keyed in whose card was being read or sent when the terminal stopped,
    before anything of it was journaled: nothing was sent and nobody was charged, and
    the merchant is told so (LAST SALE NOT DONE / NOT CHARGED)."""
    kind, _, amount = journal.note(IN_HAND).partition(" ")
    if not kind or not amount.isdigit():
        return ""
    log.warning("recovery: a %s of %s was stopped before it was recorded: nothing was "
                "sent, %s", kind_word(kind).lower(), money(int(amount), currency_code),
                customer_not_moved(kind))
    return f"LAST {kind_word(kind)} NOT DONE\n{not_moved(kind)}"


def _close_notice(journal: Journal) -> str:
    """A close the terminal finished before a restart whose Z report never came out (it
    stopped between the close and the report): its result may never have been on the
    display, so the idle screen says it (BATCH n CLOSED / IN BALANCE) while the report
    prints."""
    unprinted = journal.unprinted_z()
    if not unprinted:
        return ""
    close = unprinted[-1]
    log.warning("recovery: batch %d was closed before the restart; its Z report prints "
                "now", close.batch)
    return merchant.close_notice(CloseFinished(True, close.batch,
                                               balanced=close.balanced is not False))
