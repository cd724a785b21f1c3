"""The journal writes the core asks for directly, each journaled before it is answered.

Four effects are a journal write and an answer, with no device and no host in
between: a sale closed without a host answer (CloseSale), an offline decision
(DecideOffline), the lookup of a transaction to void (FindForVoid) and the void
itself (Void). Each is journaled first, in one transaction; then the answer
event goes to the core; then the forwarder is woken when the host must hear of
it (a void's 0400). From the journal write on, its record is the outcome,
whatever fails next: a failure after it is logged and never unwinds the sale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.core import iso
from firmware.core.effects import ChipSettle, CloseSale, DecideOffline, FindForVoid
from firmware.core.emv import tlv
from firmware.core.events import (
    AttemptFailed, ChipSettled, Event, OfflineDecided, SaleClosed, VoidCandidate, VoidRecorded,
)
from firmware.core.model import SaleRecord
from firmware.runtime import failpoints
from firmware.runtime.authorizer import request_fields
from firmware.runtime.journal import Journal
from firmware.runtime.supervisor import is_fatal

log = logging.getLogger("posterm")


class Decisions:
    def __init__(self, journal: Journal, ident: iso.Identity, *,
                 emit: Callable[[Event], None], queue_changed: Callable[[], None],
                 kick: Callable[[], None], pin_pad: bool = False) -> None:
        self.journal, self.ident, self.emit, self.pin_pad = journal, ident, emit, pin_pad
        self.queue_changed, self.kick = queue_changed, kick

    def close_sale(self, effect: CloseSale) -> None:
        record = self.journal.close_sale(effect.sale_id, effect.reason)
        failpoints.hit("after_sale_closed")
        self.emit(SaleClosed(record))

    def decide_offline(self, effect: DecideOffline) -> None:
        req = effect.request
        code = iso.REFUND if req.kind == "refund" else iso.PURCHASE
        fields = request_fields(self.ident, req, code, self.pin_pad)
        record = self.journal.record_offline(
            effect.sale_id, approved=effect.approved, reason=effect.reason, fields=fields,
            card=req.card, kind=req.kind, amount=req.amount, currency=self.ident.currency,
            local=req.local, chip=req.chip, prefix=effect.code)
        # journaled: from here on this record is the outcome, whatever fails next
        self.emit(OfflineDecided(record))
        try:
            self._offline_recorded(effect, record)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.error("after the offline decision of sale %d: %s: %s", record.sale_id,
                      type(exc).__name__, exc)

    def _offline_recorded(self, effect: DecideOffline, record: SaleRecord) -> None:
        if effect.approved:
            log.info("sale %d approved offline (%s), code %s", record.sale_id, effect.reason,
                     record.approval)
        else:
            log.warning("sale %d not approved offline: %s", record.sale_id, effect.reason)
        failpoints.hit("after_offline_recorded")
        self.queue_changed()

    def offline_failed(self, effect: DecideOffline) -> Event:
        """The event that ends the sale when its offline decision could not be made."""
        if effect.sale_id is None:
            return AttemptFailed(None, "TERMINAL ERROR")
        return SaleClosed(self.journal.close_sale(effect.sale_id, "TERMINAL ERROR"))

    def settle_chip(self, effect: ChipSettle) -> None:
        """The card's decision on a purchase the host approved, journaled before it shows
        (host-interface 8.1): its TC, or a reversal (06) and DECLINED BY CARD."""
        out = effect.outcome
        chip = out.chip
        approved = out.decision == "approved" and chip is not None and chip.kind == "TC"
        aac = ""
        if not approved and chip is not None and chip.kind == "AAC" and chip.cryptogram:
            aac = tlv.encode_all([(0x9F26, bytes.fromhex(chip.cryptogram)),
                                  (0x9F27, bytes([chip.cid])),
                                  (0x9F36, bytes.fromhex(chip.atc))]).hex().upper()
        record = self.journal.settle_chip(effect.sale_id, chip, approved=approved, aac=aac,
                                          script_results=out.script_results.hex().upper())
        failpoints.hit("after_chip_settled")
        self.emit(ChipSettled(record))
        if not approved:
            log.warning("sale %d: the host approved it, the card did not (%s): reversal 06 "
                        "recorded", effect.sale_id, out.message or out.decision)
            self.kick()
            self.queue_changed()

    def chip_failed(self, effect: ChipSettle) -> Event:
        """ChipSettle could not run: the sale is reversed like a card that declined."""
        return ChipSettled(self.journal.settle_chip(effect.sale_id, None, approved=False))

    def find_for_void(self, effect: FindForVoid) -> None:
        rec, problem = self.journal.void_candidate(effect.invoice)
        self.emit(VoidCandidate(None if problem else rec, problem))

    def void(self, sale_id: int) -> None:
        """Journal the void first (one transaction), then tell the core, then the forwarder."""
        result = self.journal.record_void(sale_id)
        if result.record is None:
            log.warning("void of sale %d refused: %s", sale_id, result.problem)
            self.emit(VoidCandidate(None, result.problem))
            return
        rec = result.record
        self.emit(VoidRecorded(rec, result.sent_to_host))
        if result.sent_to_host:
            log.info("sale %d (batch %d invoice %d, %s %d) voided: 0400 reason 17 queued",
                     rec.sale_id, rec.batch, rec.invoice, rec.kind, rec.amount)
            self.kick()
        else:
            log.info("sale %d (batch %d invoice %d, %s %d) voided: approved offline and never "
                     "sent, its advice is taken off the queue", rec.sale_id, rec.batch,
                     rec.invoice, rec.kind, rec.amount)
        self.queue_changed()
