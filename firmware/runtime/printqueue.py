"""The print spooler: the printer's one thread, its status watch and the durable print queue.

Theory of operation
-------------------
A sale is complete when its outcome is journaled and shown; paper follows when
it can. Every print goes through `PrintSpooler.print`, which always answers, and
promptly:

- The printer is known to be stopped (PAPER OUT, PRINTER COVER OPEN, PRINTER
  OFFLINE, or a print still hanging in the printer's thread): nothing is sent. A
  sale's receipt or slip, a refused-sale slip and a restart's copy go into the
  print queue (a journal table) and the answer comes at once: not printed,
  queued, with the condition as its message. A menu copy or a report is refused
  with the condition (the operator asks again later).
- Otherwise the lines go to the printer in its own thread. A print that fails
  because of the printer is queued the same way; one that takes longer than
  `job_timeout` is queued too and answered as PRINTER OFFLINE, and if it comes
  out after all, its queue entry goes in the transaction that marks it printed,
  so it is never printed twice.

The queue holds exactly the rendered lines (the card number masked as on every
receipt, first 6 and last 4; the journal never sees track data), the kind, the
sale and when it could not be printed. One watch task (`run`, supervised by the
app) asks the printer for its status: every `status_interval` seconds while all
is well, and from 1 s doubling up to `retry_max` while a condition is set (a
fault, or paper low) or receipts wait. Each change of the printer's condition is told to the core as
`ConditionChanged("printer", text)`: "PAPER OUT", "PRINTER COVER OPEN", "PRINTER
OFFLINE", "PAPER LOW" (paper near its end: a warning, printing goes on) or "" —
none of them blocks sales. When the printer is ready and receipts wait, they are
printed oldest first, each headed "** DELAYED PRINT **" with the time it could
not be printed, and each leaves the queue in the transaction that marks its sale
printed (`Journal.print_done`). A crash between paper and that transaction
prints it once more at the next chance: a duplicate on paper, never a lost one.

Restarts: a receipt in the queue stays there and is printed from there; the
recovery copies printed at start-up (app.py) are only for sales whose receipt
is neither printed nor queued (the terminal stopped while printing, or before
it), so no receipt is both copied and printed late. A recovery copy that cannot
print is queued like any receipt.

Drained jobs answer nobody: the core only hears about the prints it asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firmware.core.events import ConditionChanged, Event
from firmware.core.receipt import BOLD, WIDTH
from firmware.core.texts import two_cols
from firmware.runtime import threads
from firmware.errors import DeviceError
from firmware.ports import PrinterPort
from firmware.runtime import failpoints
from firmware.runtime.journal import Journal, QueuedPrint
from firmware.runtime.supervisor import is_fatal

log = logging.getLogger("posterm.printer")

PAPER_OUT = "PAPER OUT"
COVER_OPEN = "PRINTER COVER OPEN"
OFFLINE = "PRINTER OFFLINE"
PAPER_LOW = "PAPER LOW"
FAULT = "PRINTER FAULT"  # a driver bug, not the printer
STOPPED = (PAPER_OUT, COVER_OPEN, OFFLINE)  # nothing can print
DELAYED = "** DELAYED PRINT **"
# Print jobs whose paper must not be lost -> their kind in the queue. Copies from the
# menu and reports are asked for by a person, who asks again.
QUEUE_KIND = {"sale": "sale", "recovery": "recovery", "recovery-last": "recovery",
              "refused": "refused"}
RETRY_MIN = 1.0  # first pause between status checks while a fault lasts


@dataclass(frozen=True)
class Settings:
    """The [printer] table's print-queue keys, in seconds."""

    status_interval: float = 30.0  # status check while all is well
    retry_max: float = 10.0  # longest pause between checks while a fault lasts or jobs wait
    job_timeout: float = 20.0  # longest one print may take before its paper is queued

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Settings:
        d = cls()
        return cls(status_interval=float(options.get("status_interval", d.status_interval)),
                   retry_max=float(options.get("retry_max", d.retry_max)),
                   job_timeout=float(options.get("job_timeout", d.job_timeout)))


@dataclass(frozen=True)
class PrintResult:
    ok: bool
    message: str = ""  # for the display when not printed: the condition, 20 characters
    queued: bool = False  # kept in the print queue: it prints when the printer is back


@dataclass
class _Job:
    job: str  # the Print effect's job name ("sale", "copy", ...) or a queue kind
    sale_id: int | None
    lines: tuple[str, ...]  # what goes on paper now
    kind: str  # its kind in the queue, "" if it is never queued
    queued_id: int | None = None  # its row in the queue, once there
    original: tuple[str, ...] = ()  # what the queue keeps (the lines, unmarked)


def delayed_lines(job: QueuedPrint) -> tuple[str, ...]:
    """A queued receipt as it is printed late: marked, with when it could not print."""
    return (BOLD + DELAYED.center(WIDTH).rstrip(),
            two_cols("NOT PRINTED AT", job.created.strftime("%Y-%m-%d %H:%M"), WIDTH),
            "", *job.lines)


def condition_of(message: str) -> str:
    """The display's word for a printer error: the driver's own, else PRINTER OFFLINE
    (no answer, no connection, no confirmation: the printer is not there for us)."""
    return message if message in STOPPED else OFFLINE


class PrintSpooler:
    """Owns the printer's thread; see the module's theory of operation."""

    def __init__(self, printer: PrinterPort, journal: Journal, emit: Callable[[Event], None],
                 settings: Settings | None = None, *,
                 on_error: Callable[[BaseException], None],
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = datetime.now) -> None:
        self.printer, self.journal, self._emit = printer, journal, emit
        self.settings = settings or Settings()
        self._on_error = on_error
        self._clock, self._now = clock, now
        # one thread: a printer that hangs holds up only the printer, never the display
        self._pool = threads.pool("printer")
        self._condition = ""
        self._stuck: asyncio.Task[PrintResult] | None = None  # a print past job_timeout
        self._wake: asyncio.Event | None = None
        self._next = 0.0  # monotonic time of the next status check
        self._failures = 0  # status checks in a row that found the printer stopped

    @property
    def condition(self) -> str:
        """What the idle screen says about the printer ("" when all is well)."""
        return self._condition

    # -- prints the core asked for --------------------------------------------------------

    async def print(self, job: str, lines: Sequence[str], sale_id: int | None) -> PrintResult:
        """Print now, or queue (a receipt) or refuse (a copy, a report): never waits longer
        than `job_timeout`, and at once when the printer is known to be stopped."""
        item = _Job(job, sale_id, tuple(lines), QUEUE_KIND.get(job, ""), original=tuple(lines))
        if item.kind and sale_id is not None and self.journal.print_queued(item.kind, sale_id):
            # the same paper already waits (a refused sale announced again after a restart)
            self._soon(0.0)
            return PrintResult(False, self._stopped() or "PRINT QUEUED", queued=True)
        stopped = self._stopped()
        if stopped:
            if item.kind:
                self._enqueue(item, f"not sent: {stopped}")
                log.warning("printer: %s%s not printed (%s): queued until the printer is "
                            "ready", job, _for(sale_id), stopped)
            return PrintResult(False, stopped, queued=bool(item.kind))
        return await self._attempt(item, live=True)

    def _stopped(self) -> str:
        """The condition that stops printing now, "" when a print may be tried."""
        if self._stuck is not None:
            return OFFLINE
        return self._condition if self._condition in STOPPED else ""

    async def _attempt(self, item: _Job, *, live: bool) -> PrintResult:
        task = asyncio.ensure_future(self._run(item))
        try:
            done, _ = await asyncio.wait({task}, timeout=0.05)
            if not done and live:
                failpoints.hit("during_print")  # the receipt is on its way out
            if not done:
                done, _ = await asyncio.wait({task}, timeout=max(
                    0.0, self.settings.job_timeout - 0.05))
        except asyncio.CancelledError:
            # the terminal is stopping: what this print did is left unrecorded, as a power
            # cut would leave it, and the next start prints a copy if it was a receipt
            task.cancel()
            raise
        if done:
            return task.result()
        # still in the printer's thread: the sale goes on, its paper waits in the queue;
        # should it come out after all, _run takes it out of the queue with the mark
        self._stuck = task
        detail = f"no answer within {self.settings.job_timeout:g} s"
        if item.kind and item.queued_id is None:
            self._enqueue(item, detail)
        log.error("printer: %s%s: %s; %s", item.job, _for(item.sale_id), detail,
                  "queued until the printer is ready" if item.kind else "not printed")
        self._set_condition(OFFLINE)
        return PrintResult(False, OFFLINE, queued=bool(item.kind))

    async def _run(self, item: _Job) -> PrintResult:
        """One print in the printer's thread, and what follows from it in the journal.
        Never raises: a journal failure goes to `on_error` (the terminal stops)."""
        loop = asyncio.get_running_loop()
        try:
            try:
                await loop.run_in_executor(self._pool, self.printer.print_lines,
                                           list(item.lines))
            except DeviceError as exc:
                return self._failed(item, condition_of(str(exc)), str(exc))
            except Exception as exc:  # a driver bug: keep the paper, let the sale go on
                log.error("printer: internal error: %s: %s", type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                return self._failed(item, FAULT, f"internal error: {type(exc).__name__}")
            self.journal.print_done(item.job, item.sale_id, item.queued_id)
            if self._condition in STOPPED:  # it printed: the printer is back
                self._set_condition("")
                self._soon(0.0)
            return PrintResult(True)
        except Exception as exc:
            if is_fatal(exc):
                self._on_error(exc)
            else:
                log.error("printer: after printing %s%s: %s: %s", item.job, _for(item.sale_id),
                          type(exc).__name__, exc)
            return PrintResult(False, FAULT)
        finally:
            if self._stuck is asyncio.current_task():
                self._stuck = None
                self._soon(0.0)

    def _failed(self, item: _Job, text: str, detail: str) -> PrintResult:
        if item.kind:
            if item.queued_id is None:
                self._enqueue(item, detail)
                log.warning("printer: %s%s not printed (%s): queued until the printer is "
                            "ready", item.job, _for(item.sale_id), detail)
            else:
                self.journal.print_failed(item.queued_id, detail)
        else:
            log.warning("printer: %s%s not printed: %s", item.job, _for(item.sale_id), detail)
        if text != FAULT:
            self._set_condition(text)
        self._failures = 0
        self._soon(RETRY_MIN)
        return PrintResult(False, text, queued=bool(item.kind))

    def _enqueue(self, item: _Job, error: str) -> None:
        item.queued_id = self.journal.queue_print(item.kind, item.sale_id, item.original,
                                                  self._now().replace(microsecond=0), error)
        self._soon(RETRY_MIN)

    # -- the watch: status, conditions and the queue --------------------------------------

    async def run(self) -> None:
        """Watch the printer for ever (the app supervises this task)."""
        self._wake = asyncio.Event()
        self._next = self._clock()
        while True:
            await self._until_due(self._wake)
            ready = await self._check()
            if ready and self.journal.queued_prints():
                ready = await self._drain()
            if ready and not self._condition and not self.journal.queued_prints():
                self._failures = 0
                pause = self.settings.status_interval  # all is well: a cheap check now and then
            else:  # a fault, a warning (paper low) or receipts waiting: look again soon
                pause = min(self.settings.retry_max, RETRY_MIN * 2 ** min(self._failures, 16))
                self._failures += 1
            self._next = self._clock() + pause

    async def _until_due(self, wake: asyncio.Event) -> None:
        while (left := self._next - self._clock()) > 0:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), left)
            except TimeoutError:
                pass

    def _soon(self, delay: float) -> None:
        """Check the printer within `delay` seconds (sooner if already due)."""
        self._next = min(self._next, self._clock() + delay)
        if self._wake is not None:
            self._wake.set()

    async def _check(self) -> bool:
        """Ask the printer how it is; set the condition. True when it can print."""
        if self._stuck is not None:
            await asyncio.wait({self._stuck})  # the thread is busy with it: wait it out
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(self._pool, self.printer.status)
        except DeviceError as exc:
            log.debug("printer: status: %s", exc)
            text = condition_of(str(exc))
        else:
            text = status.problem() or (PAPER_LOW if status.paper_near_end else "")
        self._set_condition(text)
        return text not in STOPPED

    async def _drain(self) -> bool:
        """Print the queue, oldest first; False at the first that does not print."""
        for queued in self.journal.queued_prints():
            if self._stopped():
                return False
            item = _Job(queued.kind, queued.sale_id, delayed_lines(queued), queued.kind,
                        queued_id=queued.job_id, original=queued.lines)
            result = await self._attempt(item, live=False)
            if not result.ok:
                return False
            log.info("printer: %s%s printed late (it could not print at %s)", queued.kind,
                     _for(queued.sale_id), queued.created.isoformat(sep=" "))
        return True

    def _set_condition(self, text: str) -> None:
        if text == self._condition:
            return
        before, self._condition = self._condition, text
        if text in STOPPED:
            log.warning("printer: %s; sales go on, their receipts wait in the print queue",
                        text)
        elif text == PAPER_LOW:
            log.warning("printer: paper near its end: put in a new roll soon")
        else:
            log.info("printer: ready again (was %s)", before)
        self._emit(ConditionChanged("printer", text, blocks_sales=False))

    def close(self) -> None:
        """Let the printer's thread go (a print still hanging in it is abandoned)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _for(sale_id: int | None) -> str:
    return f" of sale {sale_id}" if sale_id is not None else ""
