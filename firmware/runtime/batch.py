"""The batch close (host-interface.md 1.1, section 4: 0500 / 0510 and 0320 / 0330).

Theory of operation
-------------------
A close is started by the CloseBatch effect (the menu, or the daily schedule below)
and runs as one task; it answers the core with CloseProgress events and ends with
exactly one CloseFinished. Its steps, each journaled before the outside world
hears of it (journal_batch.py keeps the state machine):

1. The queue first: every pending reversal, void and advice is sent (a batch is
   never closed with one of them pending). Host unreachable: CloseFinished(ok=False,
   "HOST OFFLINE"); still not empty after `queue_wait` seconds: "QUEUE NOT EMPTY".
   The batch stays open and nothing is lost.
2. The totals are counted and journaled (`begin_close`), then a 0500 920000 with a
   new STAN and field 7, journaled before it is written.
3. 0510 00: the batch is closed; in the same transaction the batch number advances
   and the Z report's lines are kept. 95: the batch is uploaded, one 0320 per
   counted transaction, oldest first, pipelined like the advices (pipeline.py, the
   forwarder's mechanism): at most `[host] advice_window` outstanding, a new one
   written as soon as an earlier one's answer is journaled (answers that arrive
   together in one transaction). Each has its own STAN and field 7 journaled before
   its first send, its `written` mark once it has left, and is repeated as 0321 with
   the same fields when its answer is lost or busy (91/96), at most UPLOAD_TRIES
   transmissions in one close; any other code ends it (logged when not 00: the
   upload goes on). A lost connection fails the answers in flight: they go again as
   0321s on the next connection. Only once every 0320 is answered, a 0500
   960000 whose answer, 00 or 95, closes the batch either way (95: OUT OF BALANCE -
   CALL HELP DESK). Any other answer, or none: the batch stays open
   (CloseFinished(ok=False)); the next close sends a new 0500 (there is no repeat of
   a 0500), after an upload a new 0500 960000 with no new upload.
4. Closed: CloseFinished(ok=True, balanced), and the Z report is printed (job
   "z-report"); a Z report that never printed is printed at the next start.

A crash anywhere resumes from the journal: the start-up (and the schedule, every
minute) sees the close in progress and asks the core for it again (CloseDue),
which starts the same steps where the journal says they stopped. The row turns
`closed` only from a state that is not `closed`, in one transaction with the new
batch number, so a batch is closed, and CloseFinished(ok=True) sent for it, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.events import CloseDue, CloseFinished, CloseProgress, Event
from firmware.core.model import CoreConfig
from firmware.core.receipt import z_report
from firmware.core.texts import is_busy
from firmware.errors import HostError, HostUnreachableError
from firmware.runtime import failpoints
from firmware.runtime.hostlink import HostLink, Pending
from firmware.runtime.journal import Journal
from firmware.runtime.journal_batch import BatchClose
from firmware.runtime.outbox import Answer, OutboxItem, OutboxKey, Outbox, Sent, UploadItem
from firmware.runtime.pipeline import Pipeline
from firmware.runtime.supervisor import Wake, is_fatal, seconds_until

log = logging.getLogger("posterm.batch")
UPLOAD_TRIES = 3  # transmissions of one 0320/0321 in one close before it gives up
PROGRESS_EVERY = 0.25  # seconds between two UPLOADING n OF m screens at most
NOTE = "last_scheduled_close"  # journal note: the day the scheduled close was done


class CloseFailed(Exception):
    """The close stops here; the batch stays open. The text is for the display."""


class CloseEngine:
    def __init__(self, journal: Journal, link: HostLink, cfg: HostConfig,
                 core_cfg: CoreConfig, *, emit: Callable[[Event], None],
                 flush: Callable[[], Awaitable[None]], kick: Callable[[], None],
                 print_z: Callable[[int, tuple[str, ...]], Awaitable[bool]],
                 on_result: Callable[[bool, str], None] = lambda ok, why: None,
                 on_closed: Callable[[BatchClose], None] = lambda close: None,
                 queue_wait: float = 60.0,
                 clock: Callable[[], datetime] = datetime.now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.journal, self.link, self.cfg, self.core_cfg = journal, link, cfg, core_cfg
        self.monotonic = monotonic
        self.emit, self.flush, self.kick, self.print_z = emit, flush, kick, print_z
        self.on_result, self.on_closed = on_result, on_closed
        self.queue_wait, self.clock = queue_wait, clock
        self.outbox = Outbox(journal, link, cfg.response_timeout, on_result,
                             utc=lambda: clock().astimezone(timezone.utc))
        self.running = False
        self.ended: float | None = None  # monotonic time the last close ended (the schedule)
        self._printing = asyncio.Lock()  # the start-up's Z reports and a close's, one at a time

    # -- the task ------------------------------------------------------------------
    async def run(self, scheduled: bool = False) -> None:
        """One close, from wherever the journal says it is; ends with one CloseFinished."""
        if self.running:
            log.info("batch close asked for while one is running: it goes on")
            return
        self.running = True
        progress = self.journal.close_in_progress()
        batch = progress.batch if progress else self.journal.open_batch()
        try:
            finished = await self._close(batch, scheduled)
        except CloseFailed as exc:
            finished = CloseFinished(False, batch, message=str(exc))
        except Exception as exc:
            if is_fatal(exc):  # a journal failure stops the terminal; the next start resumes
                raise
            log.error("batch close of batch %d: internal error: %s: %s; the batch stays "
                      "open", batch, type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            finished = CloseFinished(False, batch, message="TERMINAL ERROR")
        finally:
            self.running = False
            self.ended = self.monotonic()
        if not finished.ok:
            log.warning("batch %d not closed: %s; it stays open and the close can be "
                        "tried again", finished.batch, finished.message)
        self.emit(finished)
        if finished.ok:
            await self.print_pending_z()

    async def print_pending_z(self) -> None:
        """Print every Z report that never came out (this close's, or a crash's)."""
        async with self._printing:
            await self._print_unprinted()

    async def _print_unprinted(self) -> None:
        for close in self.journal.unprinted_z():
            if await self.print_z(close.batch, close.report):
                self.journal.z_printed(close.batch)
            else:
                log.warning("Z report of batch %d not printed; reprint it from the menu",
                            close.batch)
                self.journal.z_printed(close.batch)  # once: the menu reprints it

    def _progress(self, text: str) -> None:
        self.emit(CloseProgress(text[:20]))

    async def _close(self, batch: int, scheduled: bool) -> CloseFinished:
        log.info("batch close of batch %d started%s", batch, " (scheduled)" if scheduled else "")
        await self._drain_queue()
        failpoints.hit("close_started")
        close = self.journal.begin_close(scheduled=scheduled, now=self.clock())
        if close is None:  # something joined the queue between the check and here
            raise CloseFailed("QUEUE NOT EMPTY")
        failpoints.hit("close_totals_recorded")
        t = close.totals
        log.info("batch %d totals: %d purchase(s) %d, %d refund(s) %d (state %s)", batch,
                 t.purchases, t.purchase_amount, t.refunds, t.refund_amount, close.state)
        if close.state == "closing":
            self._progress("SENDING TOTALS")
            code = await self._reconcile(close, iso.CLOSE)
            if code == "00":
                return self._closed(close, code, balanced=True)
            if code != "95":
                self.journal.close_failed(batch, code)
                raise CloseFailed(_refusal(code))
            items = self.journal.close_out_of_balance(batch)
            failpoints.hit("close_answer_recorded")
            log.warning("batch %d out of balance (0510 95): uploading its %d transaction(s)",
                        batch, items)
            close = self._reload(batch)
        if close.state == "uploading":
            await self._upload(batch)
            close = self._reload(batch)
        if close.state != "uploaded":
            raise CloseFailed("TERMINAL ERROR")
        self._progress("CHECKING TOTALS")
        code = await self._reconcile(close, iso.CLOSE_AFTER_UPLOAD)
        if code not in ("00", "95"):
            self.journal.close_failed(batch, code)
            raise CloseFailed(_refusal(code))
        return self._closed(close, code, balanced=code == "00")

    def _reload(self, batch: int) -> BatchClose:
        close = self.journal.batch_close(batch)
        assert close is not None
        return close

    # -- the queue -------------------------------------------------------------------
    async def _drain_queue(self) -> None:
        if not self.journal.close_blockers():
            return
        self._progress("SENDING QUEUE")
        try:
            await self.link.ensure_connected()  # a new connection sends the reversals
        except HostError as exc:
            log.warning("batch close: the host cannot be reached: %s", exc)
            raise CloseFailed("HOST OFFLINE") from None
        await self.flush()
        deadline = self.monotonic() + self.queue_wait
        while (left := self.journal.close_blockers()):
            if self.monotonic() >= deadline:
                log.warning("batch close: %d reversal(s), void(s) or advice(s) still pending "
                            "after %g s", left, self.queue_wait)
                raise CloseFailed("QUEUE NOT EMPTY" if self.link.connected else "HOST OFFLINE")
            self.kick()
            await asyncio.sleep(0.1)

    # -- 0500 ----------------------------------------------------------------------
    async def _reconcile(self, close: BatchClose, pcode: str) -> str:
        """Send one 0500 and return its answer's code; no answer raises CloseFailed."""
        utc_f7 = iso.f7(self.clock().astimezone(timezone.utc))
        stan = self.journal.close_identity(close.batch, pcode, utc_f7)
        doc = iso.reconciliation(self.core_cfg.identity, processing_code=pcode,
                                 batch=close.batch, totals=close.totals, stan=int(stan),
                                 f7=utc_f7)
        try:
            pending = await self.link.send(doc)
        except HostUnreachableError as exc:
            log.warning("batch close: 0500 %s not sent: %s", pcode, exc)
            self.journal.close_failed(close.batch, "")
            raise CloseFailed("HOST OFFLINE") from None
        self.journal.close_written(close.batch)
        log.info("batch %d: 0500 %s stan %s sent", close.batch, pcode, stan)
        failpoints.hit("close_0500_sent" if pcode == iso.CLOSE else "close_960000_sent")
        answer = await self._answer(pending, f"0500 {pcode} of batch {close.batch}")
        if answer is None:
            self.journal.close_failed(close.batch, "")
            raise CloseFailed("NO ANSWER")
        wrong = iso.mismatch(doc, answer)
        if wrong:
            log.error("batch close: the answer to 0500 stan %s does not match: %s; taken "
                      "as no answer", stan, wrong)
            self.journal.close_failed(close.batch, "")
            raise CloseFailed("NO ANSWER")
        code = answer["39"]
        log.info("batch %d: 0510 %s to %s", close.batch, code, pcode)
        return code

    async def _answer(self, pending: Pending, what: str) -> iso.Fields | None:
        try:
            answer = await pending.wait(self.cfg.response_timeout)
        except HostError as exc:
            log.warning("batch close: %s: %s", what, exc)
            self.on_result(False, str(exc))
            return None
        self.on_result(not is_busy(answer.get("39", "")), f"{what} answered")
        return answer

    # -- 0320 ----------------------------------------------------------------------
    async def _upload(self, batch: int) -> None:
        total = len(self.journal.upload_items(batch, pending_only=False))
        upload = Upload(self, self.journal.upload_items(batch), total)
        await upload.run()
        if not self.journal.upload_finished(batch):
            raise CloseFailed("UPLOAD NOT DONE")
        log.info("batch %d: upload of %d transaction(s) answered", batch, total)

    # -- closed ----------------------------------------------------------------------
    def _closed(self, close: BatchClose, code: str, *, balanced: bool) -> CloseFinished:
        now = self.clock()
        summary = self.journal.batch_summary(close.batch)
        uploaded = len(self.journal.upload_items(close.batch, pending_only=False))
        lines = z_report(self.core_cfg, summary, closed_at=now, host_code=code,
                         balanced=balanced, uploaded=uploaded)
        if not self.journal.close_done(close.batch, code=code, balanced=balanced,
                                       report=lines, now=now):
            raise CloseFailed("ALREADY CLOSED")
        failpoints.hit("close_done")
        if balanced:
            log.info("batch %d closed in balance (0510 %s); batch %d is open now",
                     close.batch, code, self.journal.open_batch())
        else:
            log.error("batch %d closed OUT OF BALANCE (0510 95 after the upload): call the "
                      "help desk; batch %d is open now", close.batch, self.journal.open_batch())
        self.on_closed(self._reload(close.batch))
        return CloseFinished(True, close.batch, balanced=balanced,
                             message="" if balanced else "OUT OF BALANCE")


class Upload:
    """One close's upload of the items still pending, pipelined (see the module's
    docstring): the window slides along the items in sale order, so the oldest
    unanswered ones are always the ones in flight and a repeat goes before anything
    newer."""

    def __init__(self, engine: CloseEngine, items: list[UploadItem], total: int) -> None:
        self.engine, self.total = engine, total
        self.window = max(1, engine.cfg.advice_window)
        self.queue = items  # pending, oldest first
        self.tries: dict[OutboxKey, int] = {}
        self.failed = ""  # why the upload stops ("": it goes on)
        self.error: BaseException | None = None  # an answer's journal write failed
        self.changed = asyncio.Event()
        self.pipe = Pipeline(engine.journal, engine.outbox, answered=self._answered,
                             after=self.changed.set, on_error=self._error)
        self._shown = -1e9

    async def run(self) -> None:
        try:
            while True:
                self.changed.clear()
                if self.error is not None:
                    raise self.error
                if self.failed or not (self.queue or self.pipe.outstanding):
                    break
                if not await self._fill():
                    await self.changed.wait()
        finally:
            await self.pipe.settle()  # every answer in flight journaled (bounded waits)
            await self.pipe.stop()
        if self.error is not None:
            raise self.error
        if self.failed:
            raise CloseFailed(self.failed)

    async def _fill(self) -> bool:
        """Write the items of the window not in flight; True if any were written."""
        items = [i for i in self.queue[:self.window] if i.key not in self.pipe.outstanding]
        if not items:
            return False
        keys = [i.key for i in items]
        self.pipe.outstanding.update(keys)  # reserved before any wait
        handed: set[OutboxKey] = set()
        try:
            await self.pipe.send(items, handed, _cannot_build)
        except HostUnreachableError as exc:
            log.warning("batch upload: %s not sent: %s", items[0].what, exc)
            self.failed = "HOST OFFLINE"
            return False
        finally:
            self.pipe.outstanding.difference_update(k for k in keys if k not in handed)
        if not handed:
            self.failed = "TERMINAL ERROR"  # their rows are gone: not a journal we wrote
            return False
        self._progress()
        return True

    def _progress(self) -> None:
        now = self.engine.monotonic()
        if now - self._shown < PROGRESS_EVERY:
            return
        self._shown = now
        done = self.total - len(self.queue)
        sent = min(self.total, done + len(self.pipe.outstanding))
        self.engine._progress(f"UPLOADING {sent} OF {self.total}")

    def _answered(self, answer: Answer, sent: Sent, journaled: bool) -> None:
        item = sent.item
        if answer.final:
            self.queue = [i for i in self.queue if i.key != item.key]
            item.log_final(answer.code, journaled=journaled, mti=sent.mti, stan=sent.stan)
            failpoints.hit("upload_item_answered")
            return
        tries = self.tries[item.key] = self.tries.get(item.key, 0) + 1
        log.warning("batch upload: %s %s; %s", sent.what,
                    f"answered {answer.code}" if answer.code else "no answer",
                    "will repeat" if tries < UPLOAD_TRIES else
                    f"{tries} transmissions unanswered: the upload stops here")
        if tries >= UPLOAD_TRIES and not self.failed:
            self.failed = "NO ANSWER"

    def _error(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.changed.set()


def _cannot_build(item: OutboxItem, exc: Exception) -> None:
    """An upload whose message cannot be built stops the close (TERMINAL ERROR)."""
    raise exc


def _refusal(code: str) -> str:
    if not code:
        return "NO ANSWER"
    return "HOST BUSY" if is_busy(code) else f"HOST REFUSED {code}"


# -- the daily close ------------------------------------------------------------------

def parse_close_time(text: str) -> tuple[int, int] | None:
    """'HH:MM' -> (hour, minute); '' -> None (no scheduled close)."""
    if not text:
        return None
    hours, _, minutes = text.partition(":")
    return int(hours), int(minutes)


class CloseSchedule:
    """Once a day at `close_time` (local), when the terminal is idle, ask the core for a
    close (CloseDue); it ignores the ask unless idle, so ask again every `retry` seconds
    until a close has been done that day. A close cut short (crash, lost host after an
    upload) is asked for at once, at start-up and then every `retry` seconds. `retry`
    counts from the later of the last ask and the end of the last close (`ended`), so a
    close that failed, from the menu or asked for here, is asked for again a full
    `retry` after it ended, never as soon as its result screen has gone.

    It sleeps until the close time, the retry, or a `kick` (the app kicks it when the
    terminal goes idle and when a close ends), and at most `poll` seconds, so that a
    clock set forward is noticed within a minute: it never polls."""

    def __init__(self, close_time: str, *, idle: Callable[[], bool],
                 emit: Callable[[Event], None], in_progress: Callable[[], bool],
                 running: Callable[[], bool], last_day: Callable[[], str],
                 ended: Callable[[], float | None] = lambda: None,
                 retry: float = 60.0, poll: float = 60.0,
                 clock: Callable[[], datetime] = datetime.now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.at = parse_close_time(close_time)
        self.monotonic = monotonic
        self.idle, self.emit, self.in_progress, self.running = idle, emit, in_progress, running
        self.last_day, self.retry, self.poll, self.clock = last_day, retry, poll, clock
        self.ended = ended
        self._asked = -1e9
        self._wake = Wake()

    def kick(self) -> None:
        """Look again now: the terminal went idle, or a close ended."""
        self._wake.kick()

    def due(self) -> date | None:
        """The day whose scheduled close is due now, or None."""
        if self.at is None:
            return None
        now = self.clock()
        if (now.hour, now.minute) < self.at or self.last_day() == now.date().isoformat():
            return None
        return now.date()

    def done_today(self, when: datetime) -> str | None:
        """The day to remember when a close ended at `when`: its day, if the scheduled
        time had come by then."""
        if self.at is None or (when.hour, when.minute) < self.at:
            return None
        return when.date().isoformat()

    async def run(self) -> None:
        while True:
            resume = self.in_progress()
            wait = self.poll
            if resume or self.due() is not None:
                ended = self.ended()
                since = self.monotonic() - max(self._asked, -1e9 if ended is None else ended)
                if since < self.retry:
                    wait = min(wait, self.retry - since)
                elif not self.running() and self.idle():
                    self._asked = self.monotonic()
                    log.info("%s: asking for a batch close", "a batch close was cut short"
                             if resume else "the daily close time has come")
                    self.emit(CloseDue(resumed=bool(resume)))
                    wait = min(wait, self.retry)
            elif self.at is not None:
                wait = min(wait, seconds_until(self.clock(), self.at))
            await self._wake.nap(wait)
