"""A small in-process runtime for the stateful model test: the real core, the real journal,
and as many of the real runtime pieces as run without devices, against `ModelHost`.

What is real and what is modelled, and why, is told in tests/test_model_core.py's
docstring. In short: the core (`machine.initial`, `machine.step`), the journal (SQLite, on a
temporary directory), `decisions.Decisions`, `authorizer.Authorizer`, `forwarder.Forwarder`,
`batch.CloseEngine`, `recovery.recover` and `recovery.InHand`, and `outcomes.Announcer` are
the firmware's own; the host link, the printer, the display, the PIN check and the clock
are modelled, and this class plays app.py's loop: one event at a time through the core,
its effects run in order, the events they answer queued behind.

It depends on the core's State only through `phase()` below (the other engineer's reshape
of State changes that one function) and through the runtime pieces that read it.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from firmware.config import HostConfig
from firmware.core import machine
from firmware.core.effects import (
    Authorize, Beep, CheckPin, CloseBatch, CloseSale, DecideOffline, Effect, FindForVoid, Log,
    Print, PrintReport, PrintTotals, Show, StartTimer, Void,
)
from firmware.core.events import (
    AdviceRefused, CardSwiped, Event, PinChecked, PrintFinished, QueueChanged, TimerFired,
    VoidRecorded,
)
from firmware.core.model import CoreConfig
from firmware.runtime import recovery
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.batch import CloseEngine
from firmware.runtime.decisions import Decisions
from firmware.runtime.forwarder import Forwarder
from firmware.runtime.journal import Journal
from firmware.runtime.outcomes import Announcer
from firmware.runtime.printqueue import QUEUE_KIND
from firmware.runtime.vault import Vault
from firmware.runtime.outbox import Kind
from tests.model_host import ModelHost, ModelLink

PIN = "1234"
START = datetime(2026, 3, 4, 9, 0, 0)
SPIN = 40  # event-loop turns per settling round: an attempt needs about ten
ROUNDS = 200  # settling rounds before the runtime is declared stuck


def phase(state: Any) -> str:
    """The core's phase, by name ("IDLE", "AUTHORIZING", ...). The one place this test
    reads the core's State: adapt it when State changes shape."""
    return str(state.phase.value)


class FakeDisplay:
    """The display keeper's `submit`: the write is done at once."""

    def submit(self, rows: tuple[str, str, str, str]) -> Future[None]:
        done: Future[None] = Future()
        done.set_result(None)
        return done


@dataclass
class Verdict:
    """What the terminal last showed (or printed) about a transaction's money."""

    moved: bool  # approved (charged or credited) as shown
    words: str  # the screen's or slip's words, for the report
    offline: bool = False


@dataclass
class Runtime:
    directory: Path
    host: ModelHost
    cfg: CoreConfig
    host_cfg: HostConfig
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    printer_ok: bool = True
    mono: float = 1000.0
    events: deque[Event] = field(default_factory=deque)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    screens: list[tuple[str, str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    token: int = 0  # the token of the last timer the core started
    restarts: int = 0

    def __post_init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.announced: set[int] = set()
        self._start()

    # -- the clock ------------------------------------------------------------------
    def now(self) -> machine.Now:
        return machine.Now(mono=self.mono, local=self.local())

    def local(self) -> datetime:
        return START + timedelta(seconds=int(self.mono - 1000.0))

    def tick(self, seconds: float = 1.0) -> None:
        self.mono += seconds

    # -- start and stop ---------------------------------------------------------------
    def _start(self) -> None:
        """What app.run does first: the journal, recovery, then the core's first state."""
        self.journal = Journal(self.directory / "journal.sqlite3",
                               Vault.open(self.directory / "card.key", create=True))
        self.link = ModelLink(self.host)
        ident = self.cfg.identity
        self.forwarder = Forwarder(
            self.journal, self.link, self.host_cfg, rng=random.Random(0),  # type: ignore[arg-type]
            sale_active=self.sale_active, link_usable=lambda: self.host.up,
            on_queue_change=self._queue_changed, on_error=self._background_error)
        self.authorizer = Authorizer(
            self.journal, self.link, ident, self.host_cfg.response_timeout,  # type: ignore[arg-type]
            before_request=self.forwarder.flush, reversal_recorded=self.forwarder.kick)
        self.decisions = Decisions(self.journal, ident, emit=self.emit,
                                   queue_changed=self._queue_changed, kick=self.forwarder.kick)
        self.closer = CloseEngine(
            self.journal, self.link, self.host_cfg, self.cfg, emit=self.emit,  # type: ignore[arg-type]
            flush=lambda: self.forwarder.flush(due_only=False), kick=self.forwarder.kick,
            print_z=self._print_z, queue_wait=5.0, clock=self.local)
        self.announcer = Announcer(FakeDisplay(), self.journal,  # type: ignore[arg-type]
                                   self.cfg.currency_code, on_fatal=self._fatal)
        self.in_hand = recovery.InHand(self.journal)
        done = recovery.recover(self.journal, self.cfg.currency_code)
        last = self.journal.last_sale()
        recent = self.journal.recent_approvals(self.cfg.duplicate_minutes, now=self.local())
        self.state, effects = machine.initial(self.cfg, last=last, notice=done.notice,
                                           recent=recent)
        if last is not None and done.notice.startswith(("LAST SALE", "LAST REFUND")) and (
                " NOT DONE\n" not in done.notice or last.status == "FAILED"):
            # (LAST SALE NOT DONE is also said of a sale keyed in and never journaled:
            # the journal's note of the sale in hand, not its last sale)
            self._told(last.sale_id, done.notice)
        self.execute(effects)
        for rec in done.copies:  # the recovery copies, printed after READY
            job = "recovery-last" if last is not None and rec.sale_id == last.sale_id \
                else "recovery"
            self._print(Print((), rec.sale_id, job=job))
        self._queue_changed()
        self._spawn(self.forwarder.run())
        self.forwarder.kick()
        self.settle()

    def crash(self, *, processed: bool) -> None:
        """The process dies wherever its tasks are waiting; the journal stays."""
        self.link.crash(processed=processed)
        self._cancel_all()
        self.events.clear()
        self.journal.close()
        self.restarts += 1
        self._start()

    def close(self) -> None:
        self._cancel_all()
        self.journal.close()
        self.loop.close()

    def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.tasks.clear()

    # -- the loop -----------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.events.append(event)

    def sale_active(self) -> bool:
        return phase(self.state) in ("AUTHORIZING", "BUSY_WAIT")

    def feed(self, event: Event) -> None:
        """An event from outside (a person, a timer, the link monitor), and all it leads to."""
        self.emit(event)
        self.settle()

    def settle(self) -> None:
        """Run the loop until nothing moves: every event taken, every task waiting on the
        host model or a timer."""
        for _ in range(ROUNDS):
            while self.events:
                self._handle(self.events.popleft())
            self.loop.run_until_complete(self._spin())
            if not self.events and self.closer.running:
                # the close engine polls the queue it waits for every 0.1 s of real time:
                # let it see the queue drained now, not some steps later
                self.loop.run_until_complete(asyncio.sleep(0.11))
                continue
            if not self.events:
                return
        raise AssertionError("the runtime did not settle: events keep coming")

    @staticmethod
    async def _spin() -> None:
        for _ in range(SPIN):
            await asyncio.sleep(0)

    def drain(self, seconds: float = 2.0) -> None:
        """Let the forwarder work through the queues (its short waits are real time)."""
        for _ in range(int(seconds / 0.06)):
            self.settle()
            if not self._queued() or not self.host.up:
                return
            self.loop.run_until_complete(asyncio.sleep(0.06))
        self.settle()

    def _queued(self) -> bool:
        """Something the forwarder can still send now (no advice goes during a sale)."""
        return bool(self.journal.pending_keys(Kind.REVERSAL, Kind.VOID)) or (
            self.journal.queue_stats().count > 0 and not self.sale_active())

    def _handle(self, event: Event) -> None:
        was_active = self.sale_active()
        if isinstance(event, CardSwiped) and not event.pan_hash:
            event = replace(event, pan_hash=self.journal.vault.pan_hash(event.card.pan))
        self.state, effects = machine.step(self.state, event, self.now())
        self.execute(effects, event)
        self.in_hand.update(self.state)  # type: ignore[arg-type]
        if was_active and not self.sale_active():
            self.forwarder.kick()

    # -- effects ---------------------------------------------------------------------
    def execute(self, effects: list[Effect], event: Event | None = None) -> None:
        shown: tuple[str, str, str, str] | None = None
        for effect in effects:
            if isinstance(effect, Show):
                shown = effect.rows
                self.screens.append(effect.rows)
                del self.screens[:-50]
                self.announcer.show(effect.rows, self.state)  # type: ignore[arg-type]
                if isinstance(event, VoidRecorded) and effect.rows[0] == "VOIDED":
                    self.verdicts[event.record.sale_id] = Verdict(False, "VOIDED")
            elif isinstance(effect, StartTimer):
                self.token = effect.token
            elif isinstance(effect, Authorize):
                self._spawn(self._authorize(effect))
            elif isinstance(effect, Print):
                if effect.job == "sale" and effect.sale_id and shown is not None:
                    self._told(effect.sale_id, "\n".join(shown[:2]))
                if effect.job == "refused" and effect.sale_id:
                    self.verdicts[effect.sale_id] = Verdict(False, "REFUSED: UNPAID")
                self._print(effect)
            elif isinstance(effect, CloseSale):
                self.decisions.close_sale(effect)
            elif isinstance(effect, DecideOffline):
                self.decisions.decide_offline(effect)
            elif isinstance(effect, FindForVoid):
                self.decisions.find_for_void(effect)
            elif isinstance(effect, Void):
                self.decisions.void(effect.sale_id)
            elif isinstance(effect, CloseBatch):
                self._spawn(self.closer.run(effect.scheduled))
            elif isinstance(effect, CheckPin):
                self.emit(PinChecked(effect.pin == PIN, effect.function,
                                     "" if effect.pin == PIN else "WRONG PIN"))
            elif isinstance(effect, PrintTotals):
                self.emit(PrintFinished(self.printer_ok, "" if self.printer_ok else "PAPER OUT",
                                        job="x-report" if effect.kind == "X" else "z-report"))
            elif isinstance(effect, PrintReport):
                self.emit(PrintFinished(self.printer_ok, "", job="report"))
            elif isinstance(effect, (Log, Beep)):
                if isinstance(effect, Log) and effect.level == "error" and \
                        "internal error" in effect.text:
                    self.errors.append(effect.text)
            else:
                raise AssertionError(f"the core asked for {type(effect).__name__}, which the "
                                     "model runtime cannot run")

    def _told(self, sale_id: int, words: str) -> None:
        head = words.split("\n")[0]
        moved = head in ("APPROVED", "REFUND APPROVED", "APPROVED OFFLINE") or (
            head.startswith("LAST ") and head.endswith(" APPROVED"))
        offline = head == "APPROVED OFFLINE" or (
            moved and self.journal.sale(sale_id).status == "OFFLINE_APPROVED")
        self.verdicts[sale_id] = Verdict(moved, words.replace("\n", " / "), offline)

    def _print(self, effect: Print) -> None:
        """The printer model: every print ends at once, well or with PAPER OUT, and the
        journal hears what the print spooler (printqueue.py) tells it: printed, or a
        receipt, slip or copy kept in the print queue until the printer is back."""
        ok = self.printer_ok
        kind = QUEUE_KIND.get(effect.job, "")
        if ok:
            self.journal.print_done(effect.job, effect.sale_id)
        elif kind and not (effect.sale_id is not None and
                           self.journal.print_queued(kind, effect.sale_id)):
            self.journal.queue_print(kind, effect.sale_id, effect.lines, self.local(),
                                     "PAPER OUT")
        if effect.job not in ("recovery",):
            self.emit(PrintFinished(ok, "" if ok else "PAPER OUT", job=effect.job))

    def printer_back(self, ok: bool) -> None:
        """Paper in (or out): the spooler prints its queue, oldest first, when it can."""
        self.printer_ok = ok
        if ok:
            for queued in self.journal.queued_prints():
                self.journal.print_done(queued.kind, queued.sale_id, queued.job_id)

    async def _print_z(self, batch: int, lines: tuple[str, ...]) -> bool:
        self.emit(PrintFinished(self.printer_ok, "", job="z-report"))
        return self.printer_ok

    async def _authorize(self, effect: Authorize) -> None:
        self.emit(await self.authorizer.authorize(effect.request, effect.sale_id))

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(f"task failed: {task.exception()!r}")

    def _queue_changed(self) -> None:
        """app._queue_changed: the core hears the queue, and each refusal once."""
        self.emit(QueueChanged(self.journal.queue_stats()))
        for _adv, record in self.journal.unannounced_refusals():
            if record.sale_id not in self.announced:
                self.announced.add(record.sale_id)
                self.emit(AdviceRefused(record))

    def _background_error(self, exc: BaseException) -> None:
        self.errors.append(f"background: {exc!r}")

    def _fatal(self, exc: BaseException) -> None:
        self.errors.append(f"fatal: {exc!r}")

    def fire_timer(self, stale: bool = False) -> None:
        """The phase timer the core started last fires (or an older one, `stale`)."""
        self.feed(TimerFired("phase", self.token - 1 if stale else self.token))


def readonly(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    return db


def sale_of_keys(path: Path) -> dict[tuple[str, str], int]:
    """(STAN, field 7) of every request the journal recorded -> its sale (as invariants.py
    maps the host's ledger onto the journal)."""
    db = readonly(path)
    try:
        keys = {(r["stan"], r["f7"]): r["sale_id"]
                for r in db.execute("SELECT sale_id, stan, f7 FROM attempts")}
        keys.update({(r["stan"], r["f7"]): r["sale_id"] for r in db.execute(
            "SELECT sale_id, stan, f7 FROM advices WHERE stan IS NOT NULL")})
        return keys
    finally:
        db.close()


def advice_unsettled(path: Path, sale_id: int) -> bool:
    """The sale's advice has not been answered yet (pending, or in flight)."""
    db = readonly(path)
    try:
        row = db.execute("SELECT count(*) FROM advices WHERE sale_id=? AND state IN "
                         "('pending','sending')", (sale_id,)).fetchone()
        return bool(row[0])
    finally:
        db.close()


def money_problems(rt: Runtime) -> list[str]:
    """The money invariant after any step (the strict form needs the queues drained:
    tests.invariants.check): each transaction moved at most once at the host; nothing
    the terminal never recorded moved; what the terminal last showed for a transaction is
    what the host did, except where the journal still holds the message that settles the
    difference (a pending reversal or void, an advice not yet answered)."""
    keys = sale_of_keys(rt.journal.path)
    net: dict[int, int] = {}
    problems: list[str] = []
    for entry in rt.host.entries.values():
        moved = entry.charged or entry.credited
        sale_id = keys.get((entry.key[1], entry.key[2]))
        if sale_id is None:
            if moved:
                problems.append(f"phantom: the host moved {entry.amount} for stan "
                                f"{entry.key[1]} that the terminal never recorded")
            continue
        net[sale_id] = net.get(sale_id, 0) + int(moved)
        rec = rt.journal.sale(sale_id)
        if moved and entry.amount != rec.amount:
            problems.append(f"sale {sale_id}: terminal {rec.amount}, host {entry.amount}")
        if moved and entry.kind != rec.kind:
            problems.append(f"sale {sale_id}: a {rec.kind} moved as a {entry.kind} at the host")
    for sale_id, n in net.items():
        if n > 1:
            problems.append(f"sale {sale_id} moved {n} times at the host")
    for sale_id, verdict in rt.verdicts.items():
        n = net.get(sale_id, 0)
        if verdict.moved and n == 0 and not (
                verdict.offline and advice_unsettled(rt.journal.path, sale_id)):
            problems.append(f"sale {sale_id} shown '{verdict.words}' but the host did not "
                            "charge or credit it")
        if not verdict.moved and n and not rt.journal.reversal_pending_for(sale_id):
            problems.append(f"sale {sale_id} shown '{verdict.words}' but the host charged "
                            "or credited it and no reversal or void is pending")
    return problems


def batch_problems(rt: Runtime) -> list[str]:
    """Every batch the terminal closed: the totals it sent are the host's ledger's now."""
    problems = []
    for batch, close in rt.host.closes.items():
        if close["sent"] != rt.host.totals(batch):
            problems.append(f"batch {batch}: closed with {close['sent']}, the host's ledger "
                            f"has {rt.host.totals(batch)}")
    return problems


Check = Callable[[Runtime], list[str]]
