"""What the terminal prints, and how the end of each print is told to the core.

Every print goes through the spooler (printqueue.py) and always ends in one
`PrintFinished` for its job, whatever the printer does: a receipt that could not
print waits in the durable print queue and the sale goes on; a bug here is a
PRINTER FAULT, never a sale left at PRINTING. The policy: a copy or a report
asked for while two are already waiting is refused at once (PRINTER BUSY), so a
silent printer cannot pile up jobs. Also the documents themselves: the X report
and the last Z again, a closed batch's Z report, the offline report and the
copies printed after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.core.effects import Print
from firmware.core.events import Event, PrintFinished
from firmware.core.model import CoreConfig, SaleRecord
from firmware.core.receipt import offline_report, reprint, sale_receipt, x_report
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.journal import Journal
from firmware.runtime.printqueue import PrintSpooler
from firmware.runtime.supervisor import is_fatal

log = logging.getLogger("posterm")
SIDE_JOBS = ("copy", "report")  # jobs that may be refused while two are waiting


class Prints:
    def __init__(self, cfg: CoreConfig, journal: Journal, spooler: PrintSpooler,
                 emit: Callable[[Event], None], *, link_state: Callable[[], str],
                 clock: Clock = SYSTEM) -> None:
        self.cfg, self.journal, self.spooler, self.emit = cfg, journal, spooler, emit
        self.clock = clock
        self.link_state = link_state
        self._side = 0  # copies and reports waiting for the printer

    async def print(self, effect: Print) -> None:
        """Print in the printer's thread; always answer with PrintFinished for the job."""
        side = effect.job in SIDE_JOBS
        if side and self._side >= 2:
            self.emit(PrintFinished(False, "PRINTER BUSY", job=effect.job))
            return
        self._side += side
        try:
            await self._job(effect)
        finally:
            self._side -= side

    async def _job(self, effect: Print) -> None:
        """Through the spooler: it answers at once when the printer is known to be
        stopped, and within its job timeout otherwise. The spooler journals what printed
        (sale printed, refusal announced) in the transaction that takes it out of the
        queue."""
        try:
            result = await self.spooler.print(effect.job, effect.lines, effect.sale_id)
        except Exception as exc:  # a bug must not leave the sale at PRINTING
            if is_fatal(exc):
                raise
            log.error("printer: internal error: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self.emit(PrintFinished(False, "PRINTER FAULT", job=effect.job))
            return
        if effect.job.startswith("recovery") and effect.sale_id is not None:
            log.warning("recovery: sale %d: its receipt was not printed: copy %s",
                        effect.sale_id, "printed" if result.ok else
                        "queued until the printer is ready" if result.queued else "not printed")
        self.emit(PrintFinished(result.ok, result.message, job=effect.job))

    async def recovery_copies(self, records: list[SaleRecord], last: int) -> None:
        """The copies of receipts a stop kept from printing (recovery.py chose them)."""
        for rec in records:
            lines = tuple(sale_receipt(self.cfg, rec, copy=True))
            job = "recovery-last" if rec.sale_id == last else "recovery"
            await self.print(Print(lines, rec.sale_id, job=job))

    async def totals(self, kind: str) -> None:
        """X: the open batch's totals (nothing closed). Z: the last Z report again."""
        if kind == "X":
            lines = x_report(self.cfg, self.journal.batch_summary(self.journal.open_batch()),
                             printed_at=self.clock.local().replace(microsecond=0))
            await self.print(Print(tuple(lines), None, job="x-report"))
            return
        last = self.journal.last_close()
        if last is None or not last.report:
            self.emit(PrintFinished(False, "NO CLOSED BATCH", job="z-report"))
            return
        await self.print(Print(tuple(reprint(last.report)), None, job="z-report"))

    async def z_report(self, batch: int, lines: tuple[str, ...]) -> bool:
        """The Z report of a batch just closed (or one a crash kept from printing); answers
        PrintFinished(job="z-report") like any print, and says whether it came out."""
        try:
            result = await self.spooler.print("z-report", lines, None)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.error("printer: Z report of batch %d: %s: %s", batch, type(exc).__name__, exc)
            self.emit(PrintFinished(False, "PRINTER FAULT", job="z-report"))
            return False
        self.emit(PrintFinished(result.ok, result.message, job="z-report"))
        return result.ok

    async def offline_report(self) -> None:
        lines = offline_report(self.cfg, link=self.link_state(),
                               stats=self.journal.queue_stats(),
                               queued=self.journal.queued_sales(),
                               refused=self.journal.refused_advices(),
                               printed_at=self.clock.local())
        await self.print(Print(tuple(lines), None, job="report"))
