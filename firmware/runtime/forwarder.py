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
2. Then advices (sales approved offline), pipelined (host-interface.md 1.1): sent
   in queue order, at most `[host] advice_window` messages of the queues
   outstanding at once (a window that slides along the queue: a new advice goes out
   as soon as an earlier one is answered). Each is a 0220, repeated as 0221 with the
   same field 7 and STAN when its answer is lost or says 91/96, so the host's
   idempotency makes delivery exactly-once. 00 means accepted; any other code means
   refused: kept as "refused by host", reported, never sent again. Either way the
   sealed card data is deleted. After a lost or busy answer the whole advice
   pipeline pauses for one full-jitter backoff and then goes on in queue order,
   repeats first. Reversals are never held back by advices in flight: they are
   bounded by the window among themselves, and no new advice is started while a
   reversal is pending.
Durable-write order, per batch of messages written together: their identities in
one transaction before the first of them is written; their `written` marks in one
transaction once they have left the terminal (only then is the next transmission a
repeat); their answers journaled in one transaction per group that arrived together
(group commit) before anything is reported or another message takes their place.
The writing and the group commit are pipeline.py's, shared with the batch upload.
Live sales come first: no advice is started while a sale is in progress (a sale
never waits behind the queue; its request may share the connection with advices
already in flight), and nothing is sent while the link is DOWN (the link monitor
probes then, and kicks the forwarder when the host is back). The forwarder keeps its
own view of the queues and reads them again only when the journal says they changed
(`Journal.add_queue_listener`): a kick costs no query.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import Callable, Sequence

from firmware.config import HostConfig
from firmware.core.backoff import full_jitter
from firmware.errors import HostUnreachableError, JournalError, KeyStoreError
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.outbox import URGENT, Answer, Kind, Outbox, OutboxItem, OutboxKey, Sent
from firmware.runtime.pipeline import Pipeline

log = logging.getLogger("posterm.forward")


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
                 on_error: Callable[[BaseException], None] | None = None,
                 clock: Clock = SYSTEM) -> None:
        self.journal, self.link, self.cfg, self.clock = journal, link, cfg, clock
        self.outbox = Outbox(journal, link, cfg.response_timeout, on_result, utc=clock.utc)
        self.window = max(1, cfg.advice_window)
        self.rng = rng or random.Random()
        self.sale_active, self.link_usable = sale_active, link_usable
        self.on_queue_change = on_queue_change
        # what the forwarder knows of the queues; None: read it again (the journal said so)
        self._reversals: list[OutboxKey] | None = None  # reversals and voids
        self._advices: list[OutboxKey] | None = None
        self.pipe = Pipeline(journal, self.outbox, answered=self._answered,
                             after=self._answers_journaled, on_error=on_error)
        self._outstanding = self.pipe.outstanding  # written, answer not journaled
        self._not_before: dict[OutboxKey, float] = {}  # a reversal's next repeat (monotonic)
        self._advices_resume = 0.0  # the advice pipeline pauses until then after a failure
        self._wake = asyncio.Event()
        journal.add_queue_listener(self.queues_changed)

    def kick(self) -> None:
        """Look again (a sale ended, the link is back): no journal query unless the
        queues changed."""
        self._wake.set()

    def queues_changed(self) -> None:
        """The journal queued or dropped a reversal, void or advice: read them again."""
        self._reversals = self._advices = None
        self._wake.set()

    @property
    def outstanding(self) -> int:
        """Reversals, voids and advices written whose answers are not yet journaled."""
        return len(self._outstanding)

    async def stop(self) -> None:
        """Cancel the answer-waiting tasks: nothing may touch the journal after this."""
        await self.pipe.stop()

    # -- the view of the queues -------------------------------------------------
    def _reversal_keys(self) -> list[OutboxKey]:
        if self._reversals is None:
            self._reversals = self.journal.pending_keys(*URGENT)
        return self._reversals

    def _advice_keys(self) -> list[OutboxKey]:
        if self._advices is None:
            self._advices = self.journal.pending_keys(Kind.ADVICE)
        return self._advices

    def _reread(self, kind: Kind) -> None:
        """Read the queue of `kind` again at its next look."""
        if kind in URGENT:
            self._reversals = None
        else:
            self._advices = None

    def _forget(self, key: OutboxKey) -> None:
        """The entry ended: out of the view of its queue."""
        view = self._reversals if key.kind in URGENT else self._advices
        if view is not None and key in view:
            view.remove(key)

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
            # while the link is down the link monitor kicks us when it is back, a sale
            # kicks us when it ends, an answer when it is journaled: no polling (each
            # poll would unseal card data)
            usable = self.link_usable() and not self.sale_active()
            wait = self._next_wakeup() if usable else None
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _step(self) -> bool:
        reversals = self._reversal_keys()
        if self._due_reversals() and self._reversal_room() > 0:
            await self.link.ensure_connected()  # a new connection flushes by itself
            await self._flush(due_only=True, best_effort=False)
            return False
        if reversals or self.sale_active():
            return False
        return await self._send_advices()

    def _due_reversals(self, due_only: bool = True) -> list[OutboxKey]:
        now = self.clock.monotonic()
        return [k for k in self._reversal_keys() if k not in self._outstanding
                and (not due_only or self._not_before.get(k, 0.0) <= now)]

    def _reversal_room(self) -> int:
        """Reversals are bounded by the window among themselves, never by advices."""
        return self.window - sum(1 for k in self._outstanding if k.kind in URGENT)

    def _advice_window(self) -> list[OutboxKey]:
        """The advices that may be outstanding now: the first `window` of the queue, less
        room for the reversals in flight; those already outstanding included."""
        return self._advice_keys()[:max(0, self._reversal_room())]

    def _next_wakeup(self) -> float | None:
        times = [self._not_before.get(k, 0.0) for k in self._due_reversals(due_only=False)]
        if not self._reversal_keys() and any(k not in self._outstanding
                                             for k in self._advice_window()):
            times.append(self._advices_resume)
        if not times:
            return None
        return max(0.05, min(times) - self.clock.monotonic())

    def _postpone_all(self) -> None:
        for key in self._due_reversals(due_only=False):
            self._backoff(key, self.journal.tries(key))
        window = [k for k in self._advice_window() if k not in self._outstanding]
        if window:
            self._pause_advices(self.journal.tries(window[0]))

    def _backoff(self, key: OutboxKey, tries: int) -> None:
        self._not_before[key] = self.clock.monotonic() + self._jitter(tries)

    def _jitter(self, tries: int) -> float:
        return full_jitter(max(0, tries - 1), self.cfg.repeat_backoff_base,
                           self.cfg.repeat_backoff_cap, self.rng.random())

    def _pause_advices(self, tries: int) -> None:
        """A lost or busy answer pauses the whole advice pipeline once (the failures that
        come with it, a connection lost under several advices, do not add up)."""
        now = self.clock.monotonic()
        if self._advices_resume <= now:
            self._advices_resume = now + self._jitter(tries)

    def _later(self, items: Sequence[OutboxItem]) -> None:
        """These go again later: a reversal or void after its own backoff, the advices
        after one pause of their whole pipeline."""
        for item in items:
            if item.key.kind in URGENT:
                self._backoff(item.key, item.tries + 1)
        advices = [i for i in items if i.key.kind not in URGENT]
        if advices:
            self._pause_advices(advices[0].tries + 1)

    # -- faults -----------------------------------------------------------------
    def _unsendable(self, item: OutboxItem, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}"
        self.journal.unsendable(item.key, why)
        self._not_before.pop(item.key, None)  # out of the queue for good
        self._reread(item.key.kind)
        log.error("%s CANNOT BE SENT: its message cannot be built (%s). It is out of the "
                  "queue so the rest goes on, kept in the journal, and counted in `posterm "
                  "status`; settle it with the acquirer by hand", item.what, why)
        self.on_queue_change()

    # -- sending ------------------------------------------------------------------
    async def flush(self, *, due_only: bool = True) -> None:
        """Write every pending reversal and void that is due and not in flight (no waiting).

        Best effort: it runs before each sale's request and after each sign-on, so a
        fault here is logged and the reversal waits for its next turn; it never fails
        the sale. Only a journal failure goes on up (the terminal stops). It writes on
        the connection that is open and never opens one: a reversal must not hold a sale
        up by connecting (the forwarder's own loop connects for it)."""
        await self._flush(due_only=due_only, best_effort=True)

    async def _flush(self, *, due_only: bool, best_effort: bool) -> None:
        if not self.link.connected:
            return
        keys = self._due_reversals(due_only)[:max(0, self._reversal_room())]
        if not keys:
            return
        items = self._items(keys)
        self._outstanding.update(keys)  # before any wait: no one else sends them meanwhile
        handed: set[OutboxKey] = set()
        try:
            await self._send(items, handed)
        except Exception as exc:
            if not best_effort or isinstance(exc, sqlite3.Error | JournalError |
                                             KeyStoreError):
                raise
            for item in items:
                if item.key in handed:
                    log.error("%s: %s: %s after it was written; its answer is awaited",
                              item.what, type(exc).__name__, exc)
                else:
                    log.error("%s not sent: %s: %s; will try again", item.what,
                              type(exc).__name__, exc)
                    self._backoff(item.key, item.tries + 1)
        finally:
            self._outstanding.difference_update(k for k in keys if k not in handed)

    async def _send_advices(self) -> bool:
        """Fill the window with the next advices in queue order; True if any went out."""
        if self.clock.monotonic() < self._advices_resume:
            return False
        keys = [k for k in self._advice_window() if k not in self._outstanding]
        if not keys:
            return False
        self._outstanding.update(keys)  # before any wait: no one else sends them meanwhile
        handed: set[OutboxKey] = set()
        try:
            if not self.link.connected:
                await self.link.ensure_connected()  # its sign-on flushes the reversals
                if self._reversal_keys() or self.sale_active():
                    return False
            return await self._send(self._items(keys), handed)
        finally:
            self._outstanding.difference_update(k for k in keys if k not in handed)

    def _items(self, keys: list[OutboxKey]) -> list[OutboxItem]:
        """The entries of `keys` (of one queue) still pending, read from the journal."""
        items = self.journal.pending_items(keys)
        if len(items) < len(keys):
            self._reread(keys[0].kind)  # some ended meanwhile: read the queue again
        return items

    async def _send(self, items: list[OutboxItem], handed: set[OutboxKey]) -> bool:
        """Write these entries of one queue (the one send path, outbox.py) and hand each
        one written to a task awaiting its answer; True if there were any."""
        try:
            unwritten = await self.pipe.send(items, handed, self._unsendable)
        except HostUnreachableError:
            self._later(items)
            if any(i.key.kind not in URGENT for i in items):
                raise  # the advices: the loop postpones everything
            return False
        self._later(unwritten)  # the connection failed part way: the rest waits its turn
        return bool(items)

    # -- answers ----------------------------------------------------------------
    def _answers_journaled(self) -> None:
        """A group of answers is journaled (pipeline.py): their places may be taken."""
        self.on_queue_change()
        self.kick()

    def _answered(self, answer: Answer, sent: Sent, journaled: bool) -> None:
        item, code = sent.item, answer.code
        if answer.final:
            self._not_before.pop(item.key, None)
            self._forget(item.key)
            item.log_final(code, journaled=journaled, mti=sent.mti, stan=sent.stan)
            return
        if code:
            log.warning("%s answered %s%s; will repeat", sent.what, code,
                        "" if item.key.kind in URGENT else " (not processed)")
        self._later([item])
