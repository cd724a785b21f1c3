"""Store-and-forward: what the host must still hear, in the order the interface asks.

1. Pending reversals and voids, before any other message. A reversal (or a void:
   a reversals row with reason 17, built as the void message without card data)
   is journaled before its first send; it gets its own STAN and field 7 at that
   first send (journaled too) and every later send is a 0401 repeat with exactly
   the same fields. It ends only with an 0410 answering 00 or 25 (for a void, 25
   means the host did not know the original: logged as a warning, the original
   stays voided); anything else schedules a repeat with full-jitter backoff,
   without limit, across restarts. `flush()` writes the due ones right after each
   sign-on and before each sale's request.
2. Then advices (sales approved offline), strictly in order, one at a time: a
   0220, repeated as 0221 with the same field 7 and STAN when its answer is lost
   or says 91/96, so the host's idempotency makes delivery exactly-once. 00 means
   accepted; any other code means refused: kept as "refused by host", reported,
   never sent again. Either way the sealed card data is deleted.
Live sales come first: no advice is started while a sale is in progress (a sale
never waits behind the queue; its request may share the connection with an
advice already in flight), and nothing is sent while the link is DOWN (the link
monitor probes then, and kicks the forwarder when the host is back).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.iso import MessageError
from firmware.core.backoff import full_jitter
from firmware.core.texts import is_busy
from firmware.errors import HostError, HostUnreachableError, JournalError, KeyStoreError
from firmware.runtime import failpoints
from firmware.runtime.hostlink import HostLink, Pending
from firmware.runtime.journal import Journal, PendingAdvice, PendingReversal

log = logging.getLogger("posterm.forward")
REVERSAL_DONE = {"00", "25"}


def _never() -> bool:
    return False


def _always() -> bool:
    return True


class Forwarder:
    def __init__(self, journal: Journal, link: HostLink, cfg: HostConfig, *,
                 rng: random.Random | None = None,
                 sale_active: Callable[[], bool] = _never,
                 link_usable: Callable[[], bool] = _always,
                 on_result: Callable[[bool, str], None] = lambda ok, why: None,
                 on_queue_change: Callable[[], None] = lambda: None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.journal, self.link, self.cfg = journal, link, cfg
        self.on_error = on_error or self._log_error
        self.rng = rng or random.Random()
        self.sale_active, self.link_usable = sale_active, link_usable
        self.on_result, self.on_queue_change = on_result, on_queue_change
        self._in_flight: set[int] = set()
        self._not_before: dict[str, float] = {}  # "r12" / "a7" -> monotonic time
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def kick(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the answer-waiting tasks: nothing may touch the journal after this."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the loop ---------------------------------------------------------------
    async def run(self) -> None:
        while True:
            self._wake.clear()
            progressed = False
            if self.link_usable():
                try:
                    progressed = await self._step()
                except HostUnreachableError:
                    self._postpone_all()
            if progressed:
                continue
            # while the link is down the link monitor kicks us when it is back, and a sale
            # kicks us when it ends: no polling (each poll would unseal card data)
            usable = self.link_usable() and not self.sale_active()
            wait = self._next_wakeup() if usable else None
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _step(self) -> bool:
        now = time.monotonic()
        due = [i for i in self.journal.pending_reversal_ids()
               if i not in self._in_flight and self._not_before.get(f"r{i}", 0.0) <= now]
        if due:
            await self.link.ensure_connected()  # a new connection flushes by itself
            await self.flush()
            return False
        if self.journal.pending_reversal_ids() or self.sale_active():
            return False
        advices = self.journal.pending_advices(limit=1)
        if not advices or self._not_before.get(f"a{advices[0].id}", 0.0) > now:
            return False
        await self._send_advice(advices[0])
        return True

    def _next_wakeup(self) -> float | None:
        keys = [f"r{i}" for i in self.journal.pending_reversal_ids() if i not in self._in_flight]
        if not self.journal.pending_reversal_ids():
            keys += [f"a{i}" for i in self.journal.pending_advice_ids(limit=1)]
        if not keys:
            return None
        due = min(self._not_before.get(k, 0.0) for k in keys)
        return max(0.05, due - time.monotonic())

    def _postpone_all(self) -> None:
        for rev_id in self.journal.pending_reversal_ids():
            if rev_id not in self._in_flight:
                self._backoff(f"r{rev_id}", self.journal.reversal_tries(rev_id))
        for adv in self.journal.pending_advices(limit=1):
            self._backoff(f"a{adv.id}", adv.tries)

    def _backoff(self, key: str, tries: int) -> None:
        delay = full_jitter(max(0, tries - 1), self.cfg.repeat_backoff_base,
                            self.cfg.repeat_backoff_cap, self.rng.random())
        self._not_before[key] = time.monotonic() + delay

    # -- faults -----------------------------------------------------------------
    def _unsendable(self, table: str, item_id: int, what: str, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}"
        self.journal.unsendable(table, item_id, why)
        log.error("%s CANNOT BE SENT: its message cannot be built (%s). It is out of the "
                  "queue so the rest goes on, kept in the journal, and counted in `posterm "
                  "status`; settle it with the acquirer by hand", what, why)
        self.on_queue_change()

    def _task_finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            self.on_error(exc)

    @staticmethod
    def _log_error(exc: BaseException) -> None:
        log.error("waiting for an answer failed: %s: %s", type(exc).__name__, exc)

    # -- reversals --------------------------------------------------------------
    async def flush(self, *, due_only: bool = True) -> None:
        """Write every pending reversal that is due and not in flight (no waiting).

        Best effort: it runs before each sale's request and after each sign-on, so a
        fault here is logged and the reversal waits for its next turn; it never fails
        the sale. Only a journal failure goes on up (the terminal stops). It writes on
        the connection that is open and never opens one: a reversal must not hold a sale
        up by connecting (the forwarder's own loop connects for it)."""
        if not self.link.connected:
            return
        now = time.monotonic()
        for rev in self.journal.pending_reversals():
            if rev.id in self._in_flight:
                continue
            if due_only and self._not_before.get(f"r{rev.id}", 0.0) > now:
                continue
            try:
                await self._send_reversal(rev)
            except Exception as exc:
                if isinstance(exc, sqlite3.Error | JournalError | KeyStoreError):
                    raise
                log.error("%s not sent: %s: %s; will try again", _what(rev),
                          type(exc).__name__, exc)
                self._backoff(f"r{rev.id}", rev.tries + 1)

    async def _send_reversal(self, rev: PendingReversal) -> None:
        stan, f7, written = self.journal.reversal_identity(
            rev.id, iso.f7(datetime.now(timezone.utc)))
        failpoints.hit("after_reversal_identity")
        what = _what(rev)
        try:
            if rev.is_void:
                doc = iso.void(rev.fields, orig_mti=rev.orig_mti, orig_stan=rev.orig_stan,
                               orig_f7=rev.orig_f7, rrn=rev.orig_rrn, stan=int(stan), f7=f7)
            else:
                doc = iso.reversal(rev.fields, orig_mti="0200", orig_stan=rev.orig_stan,
                                   orig_f7=rev.orig_f7, stan=int(stan), f7=f7,
                                   reason=rev.reason)
            iso.encode(doc)
        except (MessageError, ValueError, KeyError) as exc:
            self._unsendable("reversals", rev.id, what, exc)
            return
        if written:  # only a transmission after one that was written is a repeat
            doc = iso.repeat(doc)
        self._in_flight.add(rev.id)
        handed_over = False
        try:
            try:
                if self.link.connected:
                    pending = self.link._write(doc)
                    await self.link.flushed()  # out of the terminal before "written"
                else:
                    pending = await self.link.send(doc)
            except HostUnreachableError:
                self._backoff(f"r{rev.id}", rev.tries + 1)
                return
            if not written:
                self.journal.reversal_written(rev.id)
            log.info("%s: %s stan %s sent (reason %s)", what, doc["t"], stan, rev.reason)
            task = asyncio.create_task(self._await_reversal(rev, pending))
            handed_over = True
            self._tasks.add(task)
            task.add_done_callback(self._task_finished)
        finally:
            if not handed_over:
                self._in_flight.discard(rev.id)
        failpoints.hit("after_reversal_sent")

    async def _answer_code(self, pending: Pending, what: str) -> str:
        """Field 39 of the answer, or "" when none came; the link breaker hears either way."""
        return (await self._answer(pending, what))[0]

    async def _answer(self, pending: Pending, what: str) -> tuple[str, str]:
        """Fields 39 and 37 of the answer, or ("", "") when none came."""
        try:
            answer = await pending.wait(self.cfg.response_timeout)
        except HostError as exc:
            log.warning("%s: %s; will repeat", what, exc)
            self.on_result(False, str(exc))
            return "", ""
        code = answer.get("39", "")
        self.on_result(not is_busy(code), f"{what} answered {code}")
        return code, answer.get("37", "").strip()

    async def _await_reversal(self, rev: PendingReversal, pending: Pending) -> None:
        what = _what(rev)
        code = await self._answer_code(pending, what)
        try:
            if code in REVERSAL_DONE:
                self.journal.reversal_done(rev.id, code)
                self._not_before.pop(f"r{rev.id}", None)
                if rev.is_void and code == "25":
                    log.warning("%s: the host does not know the original %s stan %s (0410 "
                                "code 25); it stays voided and is neither charged nor "
                                "credited; the batch close will show whether the totals "
                                "agree", what, rev.orig_mti, rev.orig_stan)
                else:
                    log.info("%s done (0410 code %s)", what, code)
            else:
                if code:
                    log.warning("%s answered %s; will repeat", what, code)
                self.journal.reversal_tried(rev.id, code)
                self._backoff(f"r{rev.id}", rev.tries + 1)
        finally:
            self._in_flight.discard(rev.id)
            self.on_queue_change()
            self.kick()

    # -- advices ----------------------------------------------------------------
    async def _send_advice(self, adv: PendingAdvice) -> None:
        stan, f7, written = self.journal.advice_identity(
            adv.id, iso.f7(datetime.now(timezone.utc)))
        failpoints.hit("after_advice_identity")
        try:
            doc = iso.advice(adv.fields, approval=adv.approval, stan=int(stan), f7=f7)
            iso.encode(doc)
        except (MessageError, ValueError, KeyError) as exc:
            self._unsendable("advices", adv.id, f"advice of sale {adv.sale_id}", exc)
            return
        if written:  # only a transmission after one that was written is a repeat
            doc = iso.repeat(doc)
        try:
            pending = await self.link.send(doc)
        except HostUnreachableError:
            self._backoff(f"a{adv.id}", adv.tries + 1)
            raise
        if not written:
            self.journal.advice_written(adv.id)
        failpoints.hit("after_advice_sent")
        code, rrn = await self._answer(pending,
                                       f"advice of sale {adv.sale_id} ({doc['t']} stan {stan})")
        if code and not is_busy(code):
            self.journal.advice_done(adv.id, code, rrn)
            self._not_before.pop(f"a{adv.id}", None)
            if code == "00":
                log.info("advice of sale %d accepted by the host (%s stan %s)", adv.sale_id,
                         doc["t"], stan)
            else:
                log.error("advice of sale %d REFUSED by the host with code %s: the sale is "
                          "unpaid; it is listed in the offline report", adv.sale_id, code)
        else:
            self.journal.advice_tried(adv.id, code)
            self._backoff(f"a{adv.id}", adv.tries + 1)
        self.on_queue_change()


def _what(rev: PendingReversal) -> str:
    """How the log names a queued reversal or void."""
    return f"{'void' if rev.is_void else 'reversal'} of sale {rev.sale_id}"
