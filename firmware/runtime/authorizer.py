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
from collections.abc import Callable
from datetime import datetime, timezone

from firmware.core import iso
from firmware.core.events import Event, HostAnswered, HostBusy, HostOutcomeUnknown
from firmware.core.model import SaleRequest
from firmware.core.texts import is_busy
from firmware.errors import HostError, HostUnreachableError, ProtocolError
from firmware.runtime import failpoints
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Attempt, Journal

log = logging.getLogger("posterm.sale")


class Authorizer:
    def __init__(self, journal: Journal, link: HostLink, ident: iso.Identity,
                 response_timeout: float, before_request: Callable[[], object],
                 reversal_recorded: Callable[[], None],
                 on_result: Callable[[bool, str], None] = lambda ok, why: None) -> None:
        self.journal, self.link, self.ident = journal, link, ident
        self.response_timeout = response_timeout
        self.before_request = before_request
        self.reversal_recorded = reversal_recorded
        self.on_result = on_result

    async def authorize(self, request: SaleRequest, sale_id: int | None) -> Event:
        utc = datetime.now(timezone.utc)
        code = iso.REFUND if request.kind == "refund" else iso.PURCHASE
        base = iso.sale_fields(self.ident, card=request.card, amount=request.amount,
                               processing_code=code, local=request.local, batch=0, invoice=0)
        attempt, fixed = self.journal.start_attempt(
            sale_id, fields=base, card=request.card, kind=request.kind, amount=request.amount,
            currency=self.ident.currency, local=request.local, f7=iso.f7(utc))
        failpoints.hit("after_record_sending")
        doc = iso.financial_request(fixed, stan=int(attempt.stan), utc=utc,
                                    track2=request.card.track2)
        try:
            await self.link.ensure_connected()
            await _maybe_await(self.before_request())
            pending = await self.link.send(doc)
        except HostUnreachableError as exc:
            self.journal.attempt_not_sent(attempt)
            return HostBusy(attempt.sale_id, str(exc))
        failpoints.hit("after_send")
        log.info("sale %d: 0200 stan %s sent, amount %d", attempt.sale_id, attempt.stan,
                 request.amount)
        try:
            answer = await pending.wait(self.response_timeout)
        except ProtocolError as exc:
            return self._unknown(attempt, "06", f"garbled answer from host ({exc})")
        except HostError as exc:
            return self._unknown(attempt, "68", str(exc))
        wrong = iso.mismatch(doc, answer)
        if wrong:
            return self._unknown(attempt, "06", f"answer does not match the request: {wrong}")
        rc = answer["39"]
        failpoints.hit("after_answer")
        self.on_result(not is_busy(rc), f"host answered {rc}")
        if is_busy(rc):
            self.journal.attempt_busy(attempt, rc)
            return HostBusy(attempt.sale_id, f"host answered {rc}")
        record = self.journal.record_answer(attempt, code=rc, approval=answer.get("38", ""),
                                            rrn=answer.get("37", ""))
        failpoints.hit("after_answer_recorded")
        return HostAnswered(record)

    def _unknown(self, attempt: Attempt, reason: str, why: str) -> Event:
        self.on_result(False, why)
        record = self.journal.attempt_unknown(attempt, reason)
        log.warning("sale %d: outcome unknown (%s): reversal %s recorded", attempt.sale_id,
                    why, reason)
        self.reversal_recorded()
        return HostOutcomeUnknown(record, why)


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value
