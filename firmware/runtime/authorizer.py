"""One online authorization attempt, in the order of durable writes.

1. Journal the attempt as `sending` (new STAN, field 7; the sale and its sealed
   card data on the first attempt).          -> failpoint after_record_sending
2. Write the 0200 (pending reversals go first). Nothing written -> HostBusy.
                                              -> failpoint after_send
3. Wait for the 0210 up to the response timeout. No usable answer -> journal a
   pending reversal (68, or 06 for a garbled/mismatching answer) -> HostOutcomeUnknown.
4. 91/96 -> journal it -> HostBusy (the core retries with a new STAN).
5. Journal the answer                         -> failpoint after_answer(_recorded)
   and only then report HostAnswered, which is what the display shows.
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from firmware.core import iso
from firmware.core.events import (
    AttemptFailed, Event, HostAnswered, HostBusy, HostOutcomeUnknown, HostUntrusted, SaleClosed,
)
from firmware.core.model import SaleRecord, SaleRequest
from firmware.core.texts import is_busy
from firmware.errors import HostError, HostNotTrustedError, HostUnreachableError, ProtocolError
from firmware.runtime import failpoints
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Attempt, Journal

log = logging.getLogger("posterm.sale")


@dataclass
class _Progress:
    """How far an attempt got, for ending it safely after an unexpected error."""

    sale_id: int | None = None
    attempt: Attempt | None = None
    may_have_sent: bool = False  # the 0200 may be on the wire
    answered: SaleRecord | None = None  # the host's answer is journaled
    unknown: SaleRecord | None = None  # outcome unknown: the reversal is journaled


class Authorizer:
    def __init__(self, journal: Journal, link: HostLink, ident: iso.Identity,
                 response_timeout: float, before_request: Callable[[], object],
                 reversal_recorded: Callable[[], None],
                 on_result: Callable[[bool, str], None] = lambda ok, why: None,
                 clock: Clock = SYSTEM, pin_pad: bool = False,
                 pin_block: Callable[[], tuple[bytes, bytes] | None] = lambda: None) -> None:
        self.journal, self.link, self.ident, self.clock = journal, link, ident, clock
        self.pin_pad = pin_pad  # field 22's third digit
        # the online PIN's block and KSN (fields 52, 53), from the PIN pad: in memory only,
        # never journaled; a retry after 91/96 sends the same again (host-interface 9.1)
        self.pin_block = pin_block
        self._pin: tuple[bytes, bytes] | None = None
        self.response_timeout = response_timeout
        self.before_request = before_request
        self.reversal_recorded = reversal_recorded
        self.on_result = on_result

    async def authorize(self, request: SaleRequest, sale_id: int | None) -> Event:
        """One attempt; always ends in an event for the core, whatever goes wrong inside.

        An unexpected exception (a bug, a value the host messages cannot carry) ends
        the sale like any unknown outcome: reversed if its request may have been
        written, closed as not charged if not. Only a journal failure (sqlite3.Error)
        propagates: the terminal then stops rather than take sales it cannot record.
        """
        progress = _Progress()
        try:
            return await self._attempt(request, sale_id, progress)
        except sqlite3.Error:
            raise
        except Exception as exc:  # no internal error may leave a sale hanging
            why = f"internal error ({type(exc).__name__}: {exc})"
            log.error("sale %s: attempt failed: %s", progress.sale_id or "(new)", why,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            # a fault inside the terminal says nothing about the bank: the link breaker
            # is not told
            try:
                return self._settle(progress, why)
            except sqlite3.Error:
                raise
            except Exception as again:  # last resort: the next start reads the journal
                log.error("sale %s: could not settle after the internal error: %s: %s",
                          progress.sale_id, type(again).__name__, again)
                return AttemptFailed(progress.sale_id, "TERMINAL ERROR")

    def _settle(self, progress: _Progress, why: str) -> Event:
        """End an attempt that failed unexpectedly, by what the journal already holds."""
        attempt = progress.attempt
        if progress.answered is not None:  # journaled: that is the outcome
            return HostAnswered(progress.answered)
        if progress.unknown is not None:  # the reversal is journaled already
            return HostOutcomeUnknown(progress.unknown, why)
        if attempt is not None and progress.may_have_sent:
            return self._unknown(attempt, "68", why)
        if attempt is not None:
            self.journal.attempt_not_sent(attempt)
        sale = progress.sale_id if attempt is None else attempt.sale_id
        if sale is None:
            return AttemptFailed(None, "TERMINAL ERROR")
        return SaleClosed(self.journal.close_sale(sale, "TERMINAL ERROR"))

    async def _attempt(self, request: SaleRequest, sale_id: int | None,
                       progress: _Progress) -> Event:
        progress.sale_id = sale_id
        failpoints.hit("before_record_sending")
        utc = self.clock.utc()
        code = iso.REFUND if request.kind == "refund" else iso.PURCHASE
        base = request_fields(self.ident, request, code, self.pin_pad)
        attempt, fixed = self.journal.start_attempt(
            sale_id, fields=base, card=request.card, kind=request.kind, amount=request.amount,
            currency=self.ident.currency, local=request.local, f7=iso.f7(utc),
            chip=request.chip)
        progress.attempt = attempt
        failpoints.hit("after_record_sending")
        doc = iso.financial_request(fixed, stan=int(attempt.stan), utc=utc,
                                    track2=request.card.track2, pin=self._pin_for(request,
                                                                                   sale_id))
        payload = iso.encode(doc)  # a message that cannot be encoded is never half sent
        try:
            await self.link.ensure_connected()
            await _maybe_await(self.before_request())
            progress.may_have_sent = True
            pending = await self.link.send(doc, payload)
        except HostNotTrustedError as exc:
            self.journal.attempt_not_sent(attempt)
            return HostUntrusted(attempt.sale_id, str(exc))
        except HostUnreachableError as exc:
            self.journal.attempt_not_sent(attempt)
            return HostBusy(attempt.sale_id, str(exc))
        failpoints.hit("after_send")
        log.info("sale %d: 0200 stan %s sent, amount %d", attempt.sale_id, attempt.stan,
                 request.amount)
        try:
            answer = await pending.wait(self.response_timeout)
        except ProtocolError as exc:
            return self._unknown(attempt, "06", f"garbled answer from host ({exc})", progress)
        except HostError as exc:
            return self._unknown(attempt, "68", str(exc), progress)
        wrong = iso.mismatch(doc, answer)
        if wrong:
            return self._unknown(attempt, "06", f"answer does not match the request: {wrong}",
                                 progress)
        rc = answer["39"]
        failpoints.hit("after_answer")
        self.on_result(not is_busy(rc), f"host answered {rc}")
        if is_busy(rc):
            self.journal.attempt_busy(attempt, rc)
            return HostBusy(attempt.sale_id, f"host answered {rc}")
        self._pin = None  # final: the PIN block is not needed again
        record = self.journal.record_answer(attempt, code=rc, approval=answer.get("38", ""),
                                            rrn=answer.get("37", ""))
        progress.answered = record
        failpoints.hit("after_answer_recorded")
        # a chip sale's answer carries the issuer's data for the card (tag 91, scripts)
        return HostAnswered(record, icc=answer.get("55", "") if request.chip else "")

    def _pin_for(self, request: SaleRequest, sale_id: int | None) -> tuple[bytes, bytes] | None:
        """The sale's PIN block: taken from the PIN pad on its first attempt, the same
        one on a retry (same 52, 53 with a new STAN); none without an online PIN."""
        if not request.pin:
            return None
        if sale_id is None or self._pin is None:
            self._pin = self.pin_block()
            if self._pin is None:
                raise HostError("the online PIN's block is gone: the sale cannot carry it")
        return self._pin

    def _unknown(self, attempt: Attempt, reason: str, why: str,
                 progress: _Progress | None = None) -> Event:
        if progress is not None:
            self.on_result(False, why)
        record = self.journal.attempt_unknown(attempt, reason)
        if progress is not None:
            progress.unknown = record
        failpoints.hit("after_reversal_recorded")
        log.warning("sale %d: outcome unknown (%s): reversal %s recorded", attempt.sale_id,
                    why, reason)
        self.reversal_recorded()
        return HostOutcomeUnknown(record, why)


def request_fields(ident: iso.Identity, request: SaleRequest, code: str,
                   pin_pad: bool) -> dict[str, str]:
    """A sale's fixed fields: field 22 from how the card was read; a chip sale's 23 and 55."""
    chip = request.chip
    return iso.sale_fields(ident, card=request.card, amount=request.amount,
                           processing_code=code, local=request.local, batch=0, invoice=0,
                           entry=iso.entry_mode(request.entry, pin_pad),
                           psn=chip.psn if chip else "", icc=chip.field55 if chip else b"")


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value
