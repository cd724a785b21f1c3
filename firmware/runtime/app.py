"""The runtime: an asyncio loop that feeds events into the pure core and runs its effects.

Drivers, the host link and timers put events on one queue; the loop takes them
one at a time, calls `core.sale.step`, and executes the effects in order. A
`Show` is awaited before the next effect, so the durable writes the runtime does
before an event reaches the core (see authorizer.py) always precede what the
display shows. Exceptions from a device never unwind this loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any

from firmware.config import Config
from firmware.core import sale as core
from firmware.core import iso
from firmware.core.effects import (
    Authorize, Beep, CloseSale, DecideOffline, Effect, Log, Print, PrintReport, Show,
    StartTimer,
)
from firmware.core.events import (
    Event, LinkChanged, OfflineDecided, PrintFinished, QueueChanged, SaleClosed, TimerFired,
)
from firmware.core.link import UP
from firmware.core.model import SaleStatus
from firmware.core.receipt import offline_report, sale_receipt
from firmware.errors import DeviceError, HostError
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.forwarder import Forwarder
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.linkmonitor import LinkMonitor
from firmware.runtime.wiring import Devices

log = logging.getLogger("posterm")


class App:
    def __init__(self, cfg: Config, devices: Devices, journal: Journal) -> None:
        self.cfg, self.devices, self.journal = cfg, devices, journal
        self.ident = cfg.core.identity
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.link = HostLink(cfg.host, self.ident, journal.allocate_stan,
                             on_connected=self._on_connected)
        self.monitor = LinkMonitor(
            cfg.link, self.ident.terminal_id, self._probe, self._link_changed,
            echo=self._echo, idle_seconds=lambda: time.monotonic() - self.link.last_traffic,
            echo_interval=cfg.host.echo_interval)
        self.link.listeners.append(self.monitor.report)
        self.forwarder = Forwarder(
            journal, self.link, cfg.host, sale_active=self._sale_active,
            link_usable=lambda: self.monitor.state != "DOWN", on_result=self.monitor.report,
            on_queue_change=self._queue_changed)
        self.authorizer = Authorizer(journal, self.link, self.ident, cfg.host.response_timeout,
                                     before_request=self.forwarder.flush,
                                     reversal_recorded=self.forwarder.kick,
                                     on_result=self.monitor.report)
        self.state: core.State | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._display_ok = True
        self._rng = random.Random()

    # -- plumbing ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.queue.put_nowait(event)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed: %r", task.get_name(), task.exception())

    async def _on_connected(self) -> None:
        await self.forwarder.flush(due_only=False)

    def _sale_active(self) -> bool:
        return self.state is not None and self.state.phase in (core.Phase.AUTHORIZING,
                                                               core.Phase.BUSY_WAIT)

    async def _echo(self) -> None:
        doc = iso.network(self.ident, code="301", stan=int(self.journal.allocate_stan()),
                          utc=datetime.now(timezone.utc))
        answer = await self.link.exchange(doc, self.cfg.host.response_timeout)
        if answer.get("39") != "00":
            raise HostError(f"echo test answered {answer.get('39')}")

    async def _probe(self) -> None:
        """While the link is down: sign on again (or, if still connected, echo)."""
        if self.link.connected:
            try:
                await self._echo()
            except HostError as exc:
                self.monitor.report(False, f"probe: {exc}")
                return
            self.monitor.report(True)
        else:
            await self.link.ensure_connected()

    def _link_changed(self, state: str) -> None:
        self.emit(LinkChanged(state))
        self._spawn(self._led(state == UP), "led")
        if state == UP:
            self.forwarder.kick()

    async def _led(self, on: bool) -> None:
        try:
            await asyncio.to_thread(self.devices.pins.set_led, on)
        except DeviceError as exc:
            log.warning("online LED: %s", exc)

    def _queue_changed(self) -> None:
        self.emit(QueueChanged(self.journal.queue_stats()))

    @staticmethod
    def now() -> core.Now:
        return core.Now(mono=time.monotonic(), local=datetime.now().replace(microsecond=0))

    # -- main loop ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        notice = await self.recover()
        last = self.journal.last_sale()
        state, effects = core.initial(self.cfg.core, last=last, notice=notice)
        self.state = state
        await self.execute(effects)
        self._spawn(self.devices.card_reader.run(self.emit), "card-reader")
        self._spawn(self.devices.keypad.run(self.emit), "keypad")
        self._spawn(self.forwarder.run(), "forwarder")
        self._spawn(self.monitor.run(), "link-monitor")
        self._queue_changed()
        self._spawn(self._led(True), "led")
        self.forwarder.kick()
        log.info("posterm ready: terminal %s, host %s", self.ident.terminal_id,
                 self.link.address)
        stopper = asyncio.create_task(stop.wait())
        try:
            while True:
                getter = asyncio.create_task(self.queue.get())
                done, _ = await asyncio.wait({getter, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    getter.cancel()
                    break
                event = getter.result()
                assert self.state is not None
                phase = self.state.phase
                self.state, effects = core.step(self.state, event, self.now())
                await self.execute(effects)
                if self.state.phase != phase:
                    self.forwarder.kick()  # a sale that ended lets the upload go on
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.link.close()

    async def recover(self) -> str:
        """Resolve what the journal shows as unfinished, before any new sale."""
        rec = self.journal.recover()
        notice = ""
        for r in rec.reversed:
            log.warning("recovery: sale %d was sent without a recorded answer: reversal "
                        "pending, customer not charged", r.sale_id)
            notice = "LAST SALE REVERSED\nNOT CHARGED"
        for r in rec.closed:
            log.warning("recovery: sale %d never completed; nothing was charged", r.sale_id)
            notice = notice or "LAST SALE NOT DONE\nNOT CHARGED"
        for r in rec.unprinted:
            lines = sale_receipt(self.cfg.core, r, copy=True)
            verdict = "APPROVED" if r.status != SaleStatus.DECLINED else "DECLINED"
            try:
                await asyncio.to_thread(self.devices.printer.print_lines, lines)
                self.journal.mark_printed(r.sale_id, copy=True)
                log.warning("recovery: sale %d %s; its receipt was not printed: copy printed",
                            r.sale_id, verdict.lower())
                notice = f"LAST SALE {verdict}\nCOPY PRINTED"
            except DeviceError as exc:
                log.error("recovery: copy of sale %d not printed: %s", r.sale_id, exc)
                notice = f"LAST SALE {verdict}\nREPRINT FROM MENU"
        return notice

    # -- effects ------------------------------------------------------------------
    async def execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Show):
                await self._show(effect.rows)
            elif isinstance(effect, StartTimer):
                self._start_timer(effect)
            elif isinstance(effect, Authorize):
                self._spawn(self._authorize(effect), "authorize")
            elif isinstance(effect, Print):
                self._spawn(self._print(effect), "print")
            elif isinstance(effect, CloseSale):
                record = self.journal.close_sale(effect.sale_id, effect.reason)
                self.emit(SaleClosed(record))
            elif isinstance(effect, DecideOffline):
                self._decide_offline(effect)
            elif isinstance(effect, PrintReport):
                self._spawn(self._print_report(), "report")
            elif isinstance(effect, Log):
                log.log(logging.getLevelName(effect.level.upper()), "%s", effect.text)
            elif isinstance(effect, Beep):
                self._spawn(self._beep(), "beep")

    def _decide_offline(self, effect: DecideOffline) -> None:
        req = effect.request
        code = iso.REFUND if req.kind == "refund" else iso.PURCHASE
        fields = iso.sale_fields(self.ident, card=req.card, amount=req.amount,
                                 processing_code=code, local=req.local, batch=0, invoice=0)
        record = self.journal.record_offline(
            effect.sale_id, approved=effect.approved, reason=effect.reason, fields=fields,
            card=req.card, kind=req.kind, amount=req.amount, currency=self.ident.currency,
            local=req.local)
        if effect.approved:
            log.info("sale %d approved offline (%s), code %s", record.sale_id, effect.reason,
                     record.approval)
        else:
            log.warning("sale %d not approved offline: %s", record.sale_id, effect.reason)
        self.emit(OfflineDecided(record))
        self._queue_changed()

    async def _print_report(self) -> None:
        lines = offline_report(self.cfg.core, link=self.monitor.state,
                               stats=self.journal.queue_stats(),
                               queued=self.journal.queued_sales(),
                               refused=self.journal.refused_advices(),
                               printed_at=datetime.now())
        await self._print(Print(tuple(lines), None))

    async def _show(self, rows: tuple[str, str, str, str]) -> None:
        try:
            await asyncio.to_thread(self.devices.display.show, rows)
            if not self._display_ok:
                log.info("display works again")
            self._display_ok = True
        except DeviceError as exc:
            if self._display_ok:
                log.error("display: %s", exc)
            self._display_ok = False

    def _start_timer(self, effect: StartTimer) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = self._rng.uniform(0, effect.seconds) if effect.jitter else effect.seconds
        self._timer = asyncio.get_running_loop().call_later(
            delay, self.emit, TimerFired("phase", effect.token))

    async def _authorize(self, effect: Authorize) -> None:
        event = await self.authorizer.authorize(effect.request, effect.sale_id)
        self.emit(event)

    async def _print(self, effect: Print) -> None:
        try:
            await asyncio.to_thread(self.devices.printer.print_lines, list(effect.lines))
        except DeviceError as exc:
            self.emit(PrintFinished(False, str(exc)))
            return
        if effect.sale_id is not None:
            self.journal.mark_printed(effect.sale_id)
        self.emit(PrintFinished(True))

    async def _beep(self) -> None:
        try:
            await asyncio.to_thread(self.devices.pins.beep, True)
            await asyncio.sleep(0.15)
            await asyncio.to_thread(self.devices.pins.beep, False)
        except DeviceError as exc:
            log.warning("buzzer: %s", exc)
