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
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.backoff import full_jitter
from firmware.core.iso import Fields, MessageError
from firmware.core.texts import is_busy
from firmware.errors import HostError, HostUnreachableError, JournalError, KeyStoreError
from firmware.runtime import failpoints
from firmware.runtime.hostlink import HostLink, Pending
from firmware.runtime.journal import Journal, PendingAdvice, PendingReversal
from firmware.runtime.journal_queues import QueueAnswer

log = logging.getLogger("posterm.forward")
REVERSAL_DONE = {"00", "25"}


def _never() -> bool:
    return False


def _always() -> bool:
    return True


@dataclass(frozen=True)
class _Sent:
    """One transmission written, its answer awaited."""

    key: str  # "r12" (reversals row 12) or "a7" (advices row 7)
    what: str  # how the log names it
    mti: str
    stan: str
    tries: int
    reversal: PendingReversal | None = None
    advice: PendingAdvice | None = None


class Forwarder:
    def __init__(self, journal: Journal, link: HostLink, cfg: HostConfig, *,
                 rng: random.Random | None = None,
                 sale_active: Callable[[], bool] = _never,
                 link_usable: Callable[[], bool] = _always,
                 on_result: Callable[[bool, str], None] = lambda ok, why: None,
                 on_queue_change: Callable[[], None] = lambda: None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.journal, self.link, self.cfg = journal, link, cfg
        self.window = max(1, cfg.advice_window)
        self.on_error = on_error or self._log_error
        self.rng = rng or random.Random()
        self.sale_active, self.link_usable = sale_active, link_usable
        self.on_result, self.on_queue_change = on_result, on_queue_change
        # what the forwarder knows of the queues; None: read it again (the journal said so)
        self._reversals: list[int] | None = None
        self._advices: list[int] | None = None
        self._outstanding: set[str] = set()  # "r12" / "a7": written, answer not journaled
        self._not_before: dict[str, float] = {}  # "r12" -> monotonic time of its repeat
        self._advices_resume = 0.0  # the advice pipeline pauses until then after a failure
        self._answers: list[tuple[QueueAnswer, _Sent]] = []  # to journal in one transaction
        self._committer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
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
        """Reversals and advices written whose answers are not yet journaled."""
        return len(self._outstanding)

    async def stop(self) -> None:
        """Cancel the answer-waiting tasks: nothing may touch the journal after this."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the view of the queues -------------------------------------------------
    def _reversal_ids(self) -> list[int]:
        if self._reversals is None:
            self._reversals = self.journal.pending_reversal_ids()
        return self._reversals

    def _advice_ids(self) -> list[int]:
        if self._advices is None:
            self._advices = self.journal.pending_advice_ids()
        return self._advices

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
        now = time.monotonic()
        reversals = self._reversal_ids()
        due = [i for i in reversals if f"r{i}" not in self._outstanding
               and self._not_before.get(f"r{i}", 0.0) <= now]
        if due and self._reversal_room() > 0:
            await self.link.ensure_connected()  # a new connection flushes by itself
            await self._flush(due_only=True, best_effort=False)
            return False
        if reversals or self.sale_active():
            return False
        return await self._send_advices()

    def _reversal_room(self) -> int:
        """Reversals are bounded by the window among themselves, never by advices."""
        return self.window - sum(1 for k in self._outstanding if k[0] == "r")

    def _advice_window(self) -> list[int]:
        """The advices that may be outstanding now: the first `window` of the queue, less
        room for the reversals in flight; those already outstanding included."""
        room = self.window - sum(1 for k in self._outstanding if k[0] == "r")
        return self._advice_ids()[:max(0, room)]

    def _next_wakeup(self) -> float | None:
        now = time.monotonic()
        reversals = self._reversal_ids()
        times = [self._not_before.get(f"r{i}", 0.0) for i in reversals
                 if f"r{i}" not in self._outstanding]
        if not reversals and any(f"a{i}" not in self._outstanding
                                 for i in self._advice_window()):
            times.append(self._advices_resume)
        if not times:
            return None
        return max(0.05, min(times) - now)

    def _postpone_all(self) -> None:
        for rev_id in self._reversal_ids():
            if f"r{rev_id}" not in self._outstanding:
                self._backoff(f"r{rev_id}", self.journal.reversal_tries(rev_id))
        window = [i for i in self._advice_window() if f"a{i}" not in self._outstanding]
        if window:
            self._pause_advices(self.journal.advice_tries(window[0]))

    def _backoff(self, key: str, tries: int) -> None:
        self._not_before[key] = time.monotonic() + self._jitter(tries)

    def _jitter(self, tries: int) -> float:
        return full_jitter(max(0, tries - 1), self.cfg.repeat_backoff_base,
                           self.cfg.repeat_backoff_cap, self.rng.random())

    def _pause_advices(self, tries: int) -> None:
        """A lost or busy answer pauses the whole advice pipeline once (the failures that
        come with it, a connection lost under several advices, do not add up)."""
        now = time.monotonic()
        if self._advices_resume <= now:
            self._advices_resume = now + self._jitter(tries)

    # -- faults -----------------------------------------------------------------
    def _unsendable(self, table: str, item_id: int, what: str, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}"
        self.journal.unsendable(table, item_id, why)
        if table == "reversals":
            self._reversals = None
        else:
            self._advices = None
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_finished)
        return task

    @staticmethod
    def _log_error(exc: BaseException) -> None:
        log.error("waiting for an answer failed: %s: %s", type(exc).__name__, exc)

    # -- writing a batch ----------------------------------------------------------
    async def _write_batch(self, docs: Sequence[Fields],
                           unsendable: Callable[[int, MessageError], None]
                           ) -> tuple[list[tuple[int, Pending]], list[int]]:
        """Write the frames back to back and wait once until they have left the terminal.

        Returns the requests written, as (index in `docs`, pending), and the indices not
        written because the connection failed part way. A message that cannot be encoded
        is nothing written: `unsendable(index, error)` takes it out of the queue. Raises
        HostUnreachableError when nothing could be written at all."""
        written: list[tuple[int, Pending]] = []
        for n, doc in enumerate(docs):
            try:
                if not written:
                    pending = await self.link.send(doc)  # connects, waits for a check
                else:
                    pending = self.link.write_batch(doc)
            except MessageError as exc:
                unsendable(n, exc)
                continue
            except HostUnreachableError:
                if not written:
                    raise
                return written, list(range(n, len(docs)))
            written.append((n, pending))
        if len(written) > 1:
            await self.link.flushed()
        return written, []

    def _hand_over(self, sent: _Sent, pending: Pending) -> None:
        self._spawn(self._await_answer(sent, pending))

    # -- reversals --------------------------------------------------------------
    async def flush(self, *, due_only: bool = True) -> None:
        """Write every pending reversal that is due and not in flight (no waiting).

        Best effort: it runs before each sale's request and after each sign-on, so a
        fault here is logged and the reversal waits for its next turn; it never fails
        the sale. Only a journal failure goes on up (the terminal stops). It writes on
        the connection that is open and never opens one: a reversal must not hold a sale
        up by connecting (the forwarder's own loop connects for it)."""
        await self._flush(due_only=due_only, best_effort=True)

    async def _flush(self, *, due_only: bool, best_effort: bool) -> None:
        if not self.link.connected:
            return
        now = time.monotonic()
        ids = [i for i in self._reversal_ids() if f"r{i}" not in self._outstanding
               and (not due_only or self._not_before.get(f"r{i}", 0.0) <= now)]
        ids = ids[:max(0, self._reversal_room())]
        if not ids:
            return
        keys = [f"r{i}" for i in ids]
        self._outstanding.update(keys)  # before any wait: no one else sends them meanwhile
        handed: set[str] = set()
        revs = self.journal.pending_reversals(ids=ids)
        if len(revs) < len(ids):
            self._reversals = None  # some ended meanwhile: read the queue again
        try:
            await self._send_reversals(revs, handed)
        except Exception as exc:
            if not best_effort or isinstance(exc, sqlite3.Error | JournalError |
                                             KeyStoreError):
                raise
            for rev in revs:
                if f"r{rev.id}" in handed:
                    log.error("%s: %s: %s after it was written; its answer is awaited",
                              _what(rev), type(exc).__name__, exc)
                else:
                    log.error("%s not sent: %s: %s; will try again", _what(rev),
                              type(exc).__name__, exc)
                    self._backoff(f"r{rev.id}", rev.tries + 1)
        finally:
            self._outstanding.difference_update(k for k in keys if k not in handed)

    async def _send_reversals(self, revs: list[PendingReversal], handed: set[str]) -> None:
        identities = self.journal.identities("reversals", [r.id for r in revs],
                                             iso.f7(datetime.now(timezone.utc)))
        for _ in revs:
            failpoints.hit("after_reversal_identity")
        batch: list[tuple[PendingReversal, Fields, str, bool]] = []
        for rev in revs:
            stan, f7, written = identities[rev.id]
            try:
                if rev.is_void:
                    doc = iso.void(rev.fields, orig_mti=rev.orig_mti, orig_stan=rev.orig_stan,
                                   orig_f7=rev.orig_f7, rrn=rev.orig_rrn, stan=int(stan),
                                   f7=f7)
                else:
                    doc = iso.reversal(rev.fields, orig_mti="0200", orig_stan=rev.orig_stan,
                                       orig_f7=rev.orig_f7, stan=int(stan), f7=f7,
                                       reason=rev.reason)
                if written:  # only a transmission after one that was written is a repeat
                    doc = iso.repeat(doc)
            except (MessageError, ValueError, KeyError) as exc:
                self._unsendable("reversals", rev.id, _what(rev), exc)
                continue
            batch.append((rev, doc, stan, written))
        if not batch:
            return

        def unsendable(n: int, exc: MessageError) -> None:
            self._unsendable("reversals", batch[n][0].id, _what(batch[n][0]), exc)

        try:
            out, failed = await self._write_batch([doc for _, doc, _, _ in batch],
                                                  unsendable)
        except HostUnreachableError:
            for rev, _, _, _ in batch:
                self._backoff(f"r{rev.id}", rev.tries + 1)
            return
        self.journal.mark_written("reversals", [batch[n][0].id for n, _ in out
                                                if not batch[n][3]])
        for n, pending in out:
            rev, doc, stan, _ = batch[n]
            log.info("%s: %s stan %s sent (reason %s)", _what(rev), doc["t"], stan,
                     rev.reason)
            sent = _Sent(f"r{rev.id}", _what(rev), doc["t"], stan, rev.tries, reversal=rev)
            self._hand_over(sent, pending)
            handed.add(sent.key)
        for n in failed:
            self._backoff(f"r{batch[n][0].id}", batch[n][0].tries + 1)
        for _ in out:
            failpoints.hit("after_reversal_sent")

    # -- advices ----------------------------------------------------------------
    async def _send_advices(self) -> bool:
        """Fill the window with the next advices in queue order; True if any went out."""
        if time.monotonic() < self._advices_resume:
            return False
        ids = [i for i in self._advice_window() if f"a{i}" not in self._outstanding]
        if not ids:
            return False
        keys = [f"a{i}" for i in ids]
        self._outstanding.update(keys)  # before any wait: no one else sends them meanwhile
        handed: set[str] = set()
        try:
            if not self.link.connected:
                await self.link.ensure_connected()  # its sign-on flushes the reversals
                if self._reversal_ids() or self.sale_active():
                    return False
            advs = self.journal.pending_advices(ids=ids)
            if len(advs) < len(ids):
                self._advices = None  # some ended meanwhile: read the queue again
            return await self._send_advice_batch(advs, handed)
        finally:
            self._outstanding.difference_update(k for k in keys if k not in handed)

    async def _send_advice_batch(self, advs: list[PendingAdvice], handed: set[str]) -> bool:
        identities = self.journal.identities("advices", [a.id for a in advs],
                                             iso.f7(datetime.now(timezone.utc)))
        for _ in advs:
            failpoints.hit("after_advice_identity")
        batch: list[tuple[PendingAdvice, Fields, str, bool]] = []
        for adv in advs:
            stan, f7, written = identities[adv.id]
            try:
                doc = iso.advice(adv.fields, approval=adv.approval, stan=int(stan), f7=f7)
                if written:  # only a transmission after one that was written is a repeat
                    doc = iso.repeat(doc)
            except (MessageError, ValueError, KeyError) as exc:
                self._unsendable("advices", adv.id, f"advice of sale {adv.sale_id}", exc)
                continue
            batch.append((adv, doc, stan, written))
        if not batch:
            return bool(advs)

        def unsendable(n: int, exc: MessageError) -> None:
            adv = batch[n][0]
            self._unsendable("advices", adv.id, f"advice of sale {adv.sale_id}", exc)

        try:
            out, failed = await self._write_batch([doc for _, doc, _, _ in batch],
                                                  unsendable)
        except HostUnreachableError:
            self._pause_advices(batch[0][0].tries + 1)
            raise
        self.journal.mark_written("advices", [batch[n][0].id for n, _ in out
                                              if not batch[n][3]])
        for n, pending in out:
            adv, doc, stan, _ = batch[n]
            what = f"advice of sale {adv.sale_id} ({doc['t']} stan {stan})"
            sent = _Sent(f"a{adv.id}", what, doc["t"], stan, adv.tries, advice=adv)
            self._hand_over(sent, pending)
            handed.add(sent.key)
        if failed:  # the connection failed part way: the rest waits for the next turn
            self._pause_advices(batch[failed[0]][0].tries + 1)
        for _ in out:
            failpoints.hit("after_advice_sent")
        return True

    # -- answers ----------------------------------------------------------------
    async def _answer(self, pending: Pending, what: str) -> tuple[str, str]:
        """Fields 39 and 37 of the answer, or ("", "") when none came; the link breaker
        hears either way."""
        try:
            answer = await pending.wait(self.cfg.response_timeout)
        except HostError as exc:
            log.warning("%s: %s; will repeat", what, exc)
            self.on_result(False, str(exc))
            return "", ""
        code = answer.get("39", "")
        self.on_result(not is_busy(code), f"{what} answered {code}")
        return code, answer.get("37", "").strip()

    async def _await_answer(self, sent: _Sent, pending: Pending) -> None:
        code, rrn = await self._answer(pending, sent.what)
        if sent.reversal is not None:
            final = code in REVERSAL_DONE
            answer = QueueAnswer("reversals", sent.reversal.id, code, final=final)
        else:
            assert sent.advice is not None
            final = bool(code) and not is_busy(code)
            answer = QueueAnswer("advices", sent.advice.id, code, final=final, rrn=rrn)
        self._answers.append((answer, sent))
        if self._committer is None or self._committer.done():
            self._committer = self._spawn(self._commit_soon())

    async def _commit_soon(self) -> None:
        """Group commit: the answers that arrived together are journaled in one
        transaction; only then are they logged, reported and their places taken."""
        await asyncio.sleep(0)  # let the answers read in the same burst join this one
        batch, self._answers = self._answers, []
        if not batch:
            return
        try:
            changed = self.journal.record_answers([a for a, _ in batch])
        except BaseException:
            self._answers[:0] = batch  # not journaled: still waiting for their turn
            raise
        journaled = {(a.table, a.item_id) for a in changed}
        for answer, sent in batch:
            self._outstanding.discard(sent.key)
            if sent.reversal is not None:
                self._reversal_answered(answer, sent.reversal,
                                        ("reversals", answer.item_id) in journaled)
            else:
                assert sent.advice is not None
                self._advice_answered(answer, sent,
                                      ("advices", answer.item_id) in journaled)
        self.on_queue_change()
        self.kick()

    def _reversal_answered(self, answer: QueueAnswer, rev: PendingReversal,
                           journaled: bool) -> None:
        what, code = _what(rev), answer.code
        if answer.final:
            self._not_before.pop(f"r{rev.id}", None)
            if self._reversals is not None and rev.id in self._reversals:
                self._reversals.remove(rev.id)
            if rev.is_void and code == "25":
                log.warning("%s: the host does not know the original %s stan %s (0410 "
                            "code 25); it stays voided and is neither charged nor "
                            "credited; the batch close will show whether the totals "
                            "agree", what, rev.orig_mti, rev.orig_stan)
            elif journaled:
                log.info("%s done (0410 code %s)", what, code)
            return
        if code:
            log.warning("%s answered %s; will repeat", what, code)
        self._backoff(f"r{rev.id}", rev.tries + 1)

    def _advice_answered(self, answer: QueueAnswer, sent: _Sent, journaled: bool) -> None:
        adv = sent.advice
        assert adv is not None
        if not answer.final:
            if answer.code:
                log.warning("%s answered %s (not processed); will repeat", sent.what,
                            answer.code)
            self._pause_advices(adv.tries + 1)
            return
        if self._advices is not None and adv.id in self._advices:
            self._advices.remove(adv.id)
        if not journaled:
            log.info("%s answered %s after the sale was voided; its void settles it with "
                     "the host", sent.what, answer.code)
        elif answer.code == "00":
            log.info("advice of sale %d accepted by the host (%s stan %s)", adv.sale_id,
                     sent.mti, sent.stan)
        else:
            log.error("advice of sale %d REFUSED by the host with code %s: the sale is "
                      "unpaid; it is listed in the offline report", adv.sale_id, answer.code)


def _what(rev: PendingReversal) -> str:
    """How the log names a queued reversal or void."""
    return f"{'void' if rev.is_void else 'reversal'} of sale {rev.sale_id}"
