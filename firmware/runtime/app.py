"""The runtime: an asyncio loop that feeds events into the pure core and runs its effects.

Drivers, the host link and timers put events on one queue; the loop takes them
one at a time, calls `core.sale.step`, and executes the effects in order. A
`Show` is handed to the display's writer (display.py) and not waited for, so a
progress screen never holds up the request it announces; screens still reach
the glass in order, and never sooner than before: the durable writes the
runtime does before an event reaches the core (see authorizer.py) always
precede what the display shows. Exceptions from a device never unwind this loop.

No exception leaves the terminal stuck: a sale attempt always ends in an event
(authorizer.py); the long-lived tasks (card reader, keypad, forwarder, link
monitor) are supervised and restarted with backoff (supervisor.py); a print or a
display write that fails unexpectedly is reported like a device fault; an
offline decision that cannot be made ends the sale as not charged. A journal
failure, or a bug in the pure core, stops the terminal with the display saying
so: the next start recovers from the journal.

Once a sale's outcome is on the display the journal records that the merchant
has seen it, so that after a crash the restarted terminal says what happened to
a sale whose result never reached the screen.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from firmware.config import Config
from firmware.core import sale as core
from firmware.core import iso
from firmware.core.effects import (
    Authorize, Beep, CheckPin, CloseBatch, CloseSale, DecideOffline, Effect, FindForVoid, Log,
    Print, PrintReport, PrintTotals, Show, StartTimer, Void,
)
from firmware.core.events import (
    AdviceRefused, CardReadFailed, CardSwiped, ConditionChanged, Event,
    KeyPressed, LinkChanged, PathChanged, PrintFinished, QueueChanged,
    PinChecked, SaleClosed, TimerFired, VoidCandidate, CloseFinished,
)
from firmware.core.link import UP
from firmware.core.model import SaleRecord
from firmware.errors import DeviceError, HostError, PostermError
from firmware.runtime import failpoints, threads
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.batch import CloseEngine, CloseSchedule
from firmware.runtime.decisions import Decisions
from firmware.runtime import batch as batch_close
from firmware.runtime.display import DisplayKeeper
from firmware.runtime.forwarder import Forwarder
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.journal_batch import BatchClose
from firmware.runtime.operator import OperatorGuard
from firmware.runtime.outcomes import Announcer
from firmware.runtime.printing import Prints
from firmware.runtime.printqueue import PrintSpooler, Settings
from firmware.runtime.power import PowerMonitor
from firmware.runtime.paths import (
    MODEM, PRIMARY, Failover, ModemKeeper, Paths, PrimaryProbe, modem_facts,
)
from firmware.runtime.linkmonitor import LinkMonitor
from firmware.runtime import maintenance, recovery, status
from firmware.runtime.maintenance import DailyRestart
from firmware.runtime.sdnotify import Notifier
from firmware.runtime.status import StatusServer
from firmware.runtime.supervisor import is_fatal, supervise
from firmware.runtime.wiring import Devices

log = logging.getLogger("posterm")
_TICK: Any = object()  # a watchdog tick on the event queue (never reaches the core)
Runner = Callable[[Any], object]  # runs an effect (spawning a task for background work)
Fallback = Callable[[Any], Event]  # the event that ends the effect's flow if running it fails


class App:
    def __init__(self, cfg: Config, devices: Devices, journal: Journal,
                 notifier: Notifier | None = None) -> None:
        self.cfg, self.devices, self.journal = cfg, devices, journal
        self.ident = cfg.core.identity
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        modem = getattr(devices, "modem", None)
        self.paths = Paths(cfg.modem, modem, emit=self._path_event) if modem else None
        self.link = HostLink(cfg.host, self.ident, journal.allocate_stan,
                             on_connected=self._on_connected, paths=self.paths)
        self.monitor = LinkMonitor(
            cfg.link, self.ident.terminal_id, self._probe, self._link_changed,
            echo=self._echo, idle_seconds=lambda: time.monotonic() - self.link.last_traffic,
            echo_interval=cfg.host.echo_interval, connected=lambda: self.link.connected)
        self.link.listeners.append(self.monitor.report)
        self.failover = Failover(self.paths, self.link, busy=self._in_flight) \
            if self.paths is not None else None
        self.forwarder = Forwarder(
            journal, self.link, cfg.host, sale_active=self._sale_active,
            link_usable=lambda: self.monitor.state != "DOWN", on_result=self.monitor.report,
            on_queue_change=self._queue_changed, on_error=self._background_error)
        self.authorizer = Authorizer(journal, self.link, self.ident, cfg.host.response_timeout,
                                     before_request=self.forwarder.flush,
                                     reversal_recorded=self.forwarder.kick,
                                     on_result=self.monitor.report)
        self.operator = OperatorGuard(cfg.operator.pin_hash,
                                      attempts=cfg.operator.lockout_attempts,
                                      lockout_minutes=cfg.operator.lockout_minutes,
                                      journal=journal)
        # the batch close (batch.py): started by CloseBatch, resumed from the journal
        self.closer = CloseEngine(
            journal, self.link, cfg.host, cfg.core, emit=self.emit,
            flush=lambda: self.forwarder.flush(due_only=False), kick=self.forwarder.kick,
            print_z=lambda batch, lines: self.prints.z_report(batch, lines),
            on_result=self.monitor.report, on_closed=self._batch_closed)
        self.schedule = CloseSchedule(
            cfg.operator.close_time, idle=lambda: self.state is not None and
            self.state.phase == core.Phase.IDLE, emit=self.emit,
            in_progress=lambda: self.journal.close_in_progress() is not None,
            running=lambda: self.closer.running,
            last_day=lambda: self.journal.note(batch_close.NOTE))
        self.state: core.State | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._rng = random.Random()
        self._fatal: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._announced: set[int] = set()  # refused offline sales told to the core
        self._stopping = False
        self._status_server: StatusServer | None = None
        self._recovery_copies: list[SaleRecord] = []
        # one thread each: a printer that hangs can hold up only the printer, never the
        # display or the pins (the default pool would fill with waiting prints). The
        # printer's thread belongs to the spooler, with the durable print queue
        self.spooler = PrintSpooler(devices.printer, journal, self.emit,
                                    Settings.from_options(cfg.printer.options),
                                    on_error=self._background_error)
        self._display_pool = threads.pool("display")
        # the newest screen, kept on the glass: a display that fails is retried in the
        # background while the sale goes on (display.py)
        self._display = DisplayKeeper(devices.display, self._display_pool,
                                      on_change=self._display_changed)
        self._pins_pool = threads.pool("pins")
        # what is printed, and how its end is told to the core (printing.py)
        self.prints = Prints(cfg.core, journal, self.spooler, self.emit,
                             link_state=lambda: self.monitor.state)
        self.restart_requested = False  # the daily restart: stop, then start again (exec)
        self.restart_reason = ""  # why, for the log: the daily restart, or mains back
        self.notifier = notifier or Notifier(environ={})
        self.power: PowerMonitor | None = None  # the battery gauge and the power-fail input
        # the journal writes the core asks for directly (decisions.py)
        self.decisions = Decisions(journal, self.ident, emit=self.emit,
                                   queue_changed=self._queue_changed, kick=self.forwarder.kick)
        # screens to the display; a sale's outcome, once shown, journaled and logged
        self.announcer = Announcer(self._display, journal, cfg.core.currency_code,
                                   on_fatal=self._fail)
        self._effects = self._effect_table()
        self.daily: DailyRestart | None = None  # the daily restart (started by run)
        self.in_hand = recovery.InHand(journal)  # the note of a sale not yet journaled

    # -- plumbing ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.queue.put_nowait(event)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        if is_fatal(exc):
            self._fail(exc)
        else:
            log.error("task %s failed: %s: %s", task.get_name(), type(exc).__name__, exc)

    def _supervised(self, coro_factory: Callable[[], Coroutine[Any, Any, object]],
                    name: str) -> None:
        self._spawn(supervise(name, coro_factory, on_fatal=self._fail), name)

    def _background_error(self, exc: BaseException) -> None:
        if is_fatal(exc):
            self._fail(exc)
        else:
            log.error("background work failed: %s: %s", type(exc).__name__, exc)

    def _fail(self, exc: BaseException) -> None:
        """A journal failure: stop the terminal (the next start recovers from the journal)."""
        if self._fatal is None:
            self._fatal = exc
            log.critical("stopping: %s: %s", type(exc).__name__, exc)
        if self._stop is not None:
            self._stop.set()

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

    def _path_event(self, event: Event) -> None:
        """The paths' news: idle echoes on the modem path follow its own, longer interval."""
        if isinstance(event, PathChanged):
            self.monitor.echo_interval = (self.cfg.modem.echo_interval if event.path == MODEM
                                          else self.cfg.host.echo_interval)
        self.emit(event)

    def _link_changed(self, state: str) -> None:
        if state == "DOWN" and self.failover is not None and self.failover.paths.modem_ready:
            self._spawn(self.failover.fail_over(), "failover")
        self.emit(LinkChanged(state, untrusted=self.monitor.health.untrusted))
        self._spawn(self._led(state == UP), "led")
        if state == UP:
            self.forwarder.kick()

    async def _led(self, on: bool) -> None:
        try:
            await self._in(self._pins_pool, self.devices.pins.set_led, on)
        except DeviceError as exc:
            log.warning("online LED: %s", exc)

    def _queue_changed(self) -> None:
        self.emit(QueueChanged(self.journal.queue_stats()))
        for _adv_id, record in self.journal.unannounced_refusals():
            if record.sale_id not in self._announced:  # once per run; printed -> journaled
                self._announced.add(record.sale_id)
                self.emit(AdviceRefused(record))

    @staticmethod
    def now() -> core.Now:
        return core.Now(mono=time.monotonic(), local=datetime.now().replace(microsecond=0))

    # -- main loop ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event, stop_now: asyncio.Event | None = None) -> None:
        """Run until `stop`; then finish a sale in flight (unless `stop_now`) and return."""
        self._stop = stop
        self.notifier.status("recovering: resolving the journal")
        done = recovery.recover(self.journal, self.cfg.core.currency_code)
        self._recovery_copies = done.copies
        notice = done.notice
        last = self.journal.last_sale()
        recent = self.journal.recent_approvals(self.cfg.core.duplicate_minutes)
        state, effects = core.initial(self.cfg.core, last=last, notice=notice, recent=recent)
        self.state = state
        await self.execute(effects)
        reader, keypad = self.devices.card_reader, self.devices.keypad
        self._supervised(lambda: reader.run(self.emit), "card reader")
        self._supervised(lambda: keypad.run(self.emit), "keypad")
        self._supervised(self.spooler.run, "printer watch")
        self._supervised(self.forwarder.run, "forwarder")
        self._supervised(self.monitor.run, "link monitor")
        if self.paths is not None and self.paths.modem is not None and self.failover is not None:
            keeper = ModemKeeper(self.paths, self.paths.modem, self.cfg.modem, emit=self.emit)
            probe = PrimaryProbe(
                self.paths, self.cfg.host.host, self.cfg.host.port, self.link.ssl_context,
                self.link.server_name,
                self.cfg.host.connect_timeout, failback=self.failover.failback,
                interval=min(10.0, max(1.0, self.cfg.modem.failback_after / 4)))
            self._supervised(keeper.run, "modem")
            self._supervised(probe.run, "primary probe")
            self.paths.report()
        self._queue_changed()
        self._spawn(self._led(True), "led")
        self._spawn(self._connect_at_start(), "first connection")
        self._spawn(self.prints.recovery_copies(
            self._recovery_copies, self.state.last.sale_id if self.state.last else 0),
            "recovery copies")
        self.daily = daily = DailyRestart(
            self.cfg.maintenance, idle=lambda: self.state is not None and
            self.state.phase == core.Phase.IDLE, emit=self.emit,
            last_day=lambda: self.journal.note(maintenance.NOTE),
            remember=lambda day: self.journal.set_note(maintenance.NOTE, day),
            restart=self._request_restart, status=self.notifier.status)
        self._supervised(daily.run, "daily restart")
        self._supervised(self.schedule.run, "batch close schedule")
        self._spawn(self.closer.print_pending_z(), "z reports")
        self._start_power()
        self.forwarder.kick()
        log.info("posterm ready: terminal %s, host %s", self.ident.terminal_id,
                 self.link.address)
        await self._start_status_server()
        self.notifier.ready(self._status_line())
        if self.notifier.watchdog_seconds:
            self._spawn(self._ticker(self.notifier.watchdog_seconds / 3), "watchdog ticker")
        stopper = asyncio.create_task(stop.wait())
        try:
            while True:
                item = await self._next(stopper)
                if item is None:
                    break
                await self._handle(item)
            if self._fatal is None:
                await self._drain(stop_now or asyncio.Event())
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._display.close()
            await self.forwarder.stop()  # before the link closes and fails their requests
            await self.link.close()
            if self.paths is not None and self.paths.modem is not None:
                try:  # the data session is closed politely; a silent modem is not waited for
                    await asyncio.wait_for(self.paths.modem.close(), 3.0)
                except Exception as exc:
                    log.debug("closing the modem: %s", exc)
            if self._status_server is not None:
                await self._status_server.stop()
        if self._fatal is None and self.power is not None:  # a stop for mains loss: shut down
            if await self.power.finish(self._show):
                self.restart_requested = True
                self.restart_reason = "mains power came back while stopping"
        if self._fatal is not None:
            await self._out_of_order()
            if isinstance(self._fatal, sqlite3.Error):
                raise self._fatal
            raise self._fatal

    async def _next(self, stopper: asyncio.Task[Any]) -> Event | None:
        """The next event for the core, or None once `stopper` is done. Watchdog ticks are
        answered here, by the loop itself: a loop stuck in an effect sends no pings."""
        while True:
            getter = asyncio.create_task(self.queue.get())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return None
            item = getter.result()
            if item is _TICK:
                self.notifier.watchdog()
                continue
            return item

    async def _ticker(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.queue.put_nowait(_TICK)

    def _in_flight(self) -> bool:
        return self.state is not None and self.state.phase in (
            core.Phase.AUTHORIZING, core.Phase.BUSY_WAIT, core.Phase.PRINTING)

    def _result_pending(self) -> bool:
        """A sale in flight, or its result still on the glass for its normal time."""
        return self._in_flight() or (self.state is not None and
                                     self.state.phase == core.Phase.RESULT)

    async def _drain(self, stop_now: asyncio.Event) -> None:
        """SIGTERM: take no new sale; let a sale in flight end (its attempt always ends
        within the connect and response timeouts) and its result be read (the result
        screen for its normal time, the receipt out), unless told to stop at once. A
        result the stop cut short is told again at the next start (LAST SALE ...)."""
        if self.state is not None and self.state.phase == core.Phase.BUSY_WAIT:
            await self._handle(KeyPressed("CANCEL"))  # nothing outstanding: close it now
        self._stopping = True  # from here on no key or card reaches the core
        if self._result_pending():
            self.notifier.stopping("stopping: finishing the sale in progress")
            log.info("stopping: finishing the sale in progress first")
            budget = min(60.0, self.cfg.host.connect_timeout +
                         2 * self.cfg.host.response_timeout + 10)
            quick = asyncio.create_task(stop_now.wait())
            timer = asyncio.create_task(asyncio.sleep(budget))
            try:
                while self._result_pending():
                    item = await self._next(quick if not timer.done() else timer)
                    if item is None:
                        log.warning("stopping with a sale in flight: the journal has it and "
                                    "the next start resolves it")
                        break
                    await self._handle(item)
            finally:
                quick.cancel()
                timer.cancel()
            st = self.state
            if st is not None and st.result is not None and st.result.sale_id and \
                    st.phase in (core.Phase.PRINTING, core.Phase.RESULT):
                # the stop cut the result short: the next start tells it again
                self.journal.mark_shown(st.result.sale_id, shown=False)
        self.notifier.stopping("stopping")
        await self._show(("POSTERM", "STOPPING", "PLEASE WAIT", ""))

    async def _start_status_server(self) -> None:
        env = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        where = Path(env) if env else self.cfg.runtime_dir
        if not (where.is_dir() and os.access(where, os.W_OK)):
            where = self.cfg.state_dir
        server = StatusServer(where / status.SOCKET_NAME, self._status_doc)
        try:
            await server.start()
        except OSError as exc:
            log.warning("status socket %s: %s; `posterm status` will read the journal",
                        server.path, exc.strerror or exc)
            return
        self._status_server = server

    async def _status_doc(self) -> dict[str, Any]:
        state_dir = self.cfg.state_dir
        facts = await asyncio.to_thread(status.read_journal, state_dir / "journal.sqlite3",
                                        state_dir / "card.key")
        return replace(facts, terminal=self._terminal_facts()).to_doc()

    def _status_line(self) -> str:
        """What the terminal is doing, in words, for `systemctl status` (status.py)."""
        return status.status_line(status.Facts(queue=status.Queue.of(self.journal.queue_stats()),
                                               terminal=self._terminal_facts()))

    def _terminal_facts(self) -> status.Terminal:
        """The running terminal's own part of `posterm status` (status.py)."""
        return status.Terminal(
            pid=os.getpid(), printer_fault=self.spooler.condition,
            display_fault=self._display.fault, waiting_prints=len(self.journal.queued_prints()),
            phase=self.state.phase.value if self.state else "",
            batch_close_running=self.closer.running,
            in_flight=self.link.outstanding + (1 if self._in_flight() else 0),
            link=status.Link(self.monitor.state, self.monitor.health.untrusted,
                             self.link.path or PRIMARY, self.link.address, self.link.connected),
            modem=modem_facts(self.paths) if self.paths is not None and
            self.paths.modem is not None else None,
            power=self.power.facts() if self.power is not None else None)

    async def _handle(self, event: Event) -> None:
        assert self.state is not None
        if self._stopping and isinstance(event, (KeyPressed, CardSwiped, CardReadFailed)):
            return  # stopping: no new sale, no menu
        was_active = self._sale_active()
        if isinstance(event, CardSwiped) and not event.pan_hash:
            # the duplicate guard compares keyed hashes, never PANs
            event = replace(event, pan_hash=self.journal.vault.pan_hash(event.card.pan))
        try:
            if isinstance(event, KeyPressed):
                failpoints.hit("main_loop_key")
            self.state, effects = core.step(self.state, event, self.now())
        except Exception as exc:  # a bug in the pure core
            if isinstance(event, (KeyPressed, CardSwiped, CardReadFailed)):
                # a person's input that could not be taken: the state is as it was (step
                # never returned), so the key or swipe is dropped and the loop goes on
                log.error("internal error taking %s: %s: %s; ignored", type(event).__name__,
                          type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                await self._beep()
                return
            # an outcome the core could not take: restart, and the journal resolves it
            log.critical("internal error handling %s: %s: %s", type(event).__name__,
                         type(exc).__name__, exc, exc_info=True)
            self._fail(PostermError(f"internal error in the sale logic ({type(exc).__name__}: "
                                    f"{exc}); the journal is intact and the next start "
                                    "recovers from it"))
            return
        await self.execute(effects)
        self.in_hand.update(self.state)
        if self.state.phase == core.Phase.IDLE:  # tasks waiting for an idle moment look now
            self.schedule.kick()
            if self.daily is not None:
                self.daily.kick()
        if was_active and not self._sale_active():
            # a sale that ended lets the upload go on; the journal tells the forwarder
            # itself when the queues change, so other steps need not wake it
            self.forwarder.kick()
        if isinstance(event, (LinkChanged, QueueChanged, PrintFinished, ConditionChanged)):
            self.notifier.status(self._status_line())

    def _start_power(self) -> None:
        """The battery gauge and the power-fail input (power.py), when there are any."""
        gauge = getattr(self.devices, "gauge", None)
        watch = self.cfg.power.enabled and self.cfg.gpio.backend != "none"
        if self.cfg.power.enabled and not watch:
            log.info("power-fail input not watched: [gpio] backend is none")
        if gauge is None and not watch:
            return

        async def power_ok() -> bool:
            return bool(await self._in(self._pins_pool, self.devices.pins.power_ok))

        async def watch_edges(changed: Callable[[], None]) -> None:
            await self._in(self._pins_pool, self.devices.pins.watch_power, changed)

        def stop() -> None:
            if self._stop is not None:
                self._stop.set()

        self.power = PowerMonitor(
            self.cfg.battery, self.cfg.power, gauge=gauge, power_ok=power_ok if watch else None,
            watch=watch_edges if watch else None,
            emit=self.emit, checkpoint=self.journal.checkpoint, request_stop=stop,
            changed=lambda: self.notifier.status(self._status_line()))
        if gauge is not None:
            self._supervised(self.power.run_gauge, "battery gauge")
        if watch:
            self._supervised(self.power.run_mains, "power-fail input")

    def _request_restart(self) -> None:
        self.restart_requested = True
        self.restart_reason = "daily restart"
        if self._stop is not None:
            self._stop.set()

    async def _connect_at_start(self) -> None:
        """Connect and sign on now, so an unreachable host shows before the first sale."""
        try:
            await self.link.ensure_connected()
        except HostError as exc:
            log.info("no host connection at start: %s", exc)

    async def _out_of_order(self) -> None:
        """The last screen. Written in the display's own thread, so that it comes after a
        screen whose write was already under way (it used to race it, and lose)."""
        try:
            await asyncio.wait_for(self._in(
                self._display_pool, self.devices.display.show,
                ("OUT OF ORDER", "TERMINAL FAULT", "SEE THE LOG", "")), 5.0)
        except Exception as exc:  # the display is a courtesy here; the log has the cause
            log.debug("display while stopping: %s", exc)

    # -- effects ------------------------------------------------------------------
    async def execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            try:
                await self._execute(effect)
            except Exception as exc:
                if is_fatal(exc):  # stop through the one path that says OUT OF ORDER
                    self._fail(exc)
                    return
                log.error("internal error running %s: %s: %s", type(effect).__name__,
                          type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                self._effect_failed(effect)

    def _effect_table(self) -> dict[type[Any], tuple[Runner, Fallback | None]]:
        """Effect type -> (how it runs, the event that still ends its flow if running it
        fails unexpectedly). Every effect the core can ask for is here (a test checks);
        an effect that runs in the background is spawned, and its task answers itself."""
        spawn = self._spawn
        return {
            Show: (lambda e: self.announcer.show(e.rows, self.state), None),
            StartTimer: (self._start_timer, None),
            Authorize: (lambda e: spawn(self._authorize(e), "authorize"), None),
            Print: (lambda e: spawn(self.prints.print(e), "print"),
                    lambda e: PrintFinished(False, "PRINTER FAULT", job=e.job)),
            CloseSale: (self.decisions.close_sale,
                        lambda e: SaleClosed(self.journal.sale(e.sale_id))),
            DecideOffline: (self.decisions.decide_offline, self.decisions.offline_failed),
            PrintReport: (lambda e: spawn(self.prints.offline_report(), "report"), None),
            Log: (lambda e: log.log(logging.getLevelName(e.level.upper()), "%s", e.text), None),
            Beep: (lambda e: spawn(self._beep(), "beep"), None),
            CheckPin: (lambda e: spawn(self._check_pin(e), "pin check"),
                       lambda e: PinChecked(False, e.function, "PIN CHECK FAILED")),
            FindForVoid: (self.decisions.find_for_void,
                          lambda e: VoidCandidate(None, "CANNOT BE VOIDED")),
            Void: (lambda e: self.decisions.void(e.sale_id), lambda e: VoidCandidate(None,
                                                                           "CANNOT BE VOIDED")),
            CloseBatch: (lambda e: spawn(self.closer.run(e.scheduled), "batch close"),
                         lambda e: CloseFinished(False, self.journal.open_batch(),
                                                 message="TERMINAL ERROR")),
            PrintTotals: (lambda e: spawn(self.prints.totals(e.kind), "totals"),
                          lambda e: PrintFinished(False, "PRINTER FAULT", job="x-report"
                                                  if e.kind == "X" else "z-report")),
        }

    def _effect_failed(self, effect: Effect) -> None:
        """An effect failed unexpectedly: make sure the flow it belongs to still ends."""
        fallback = self._effects.get(type(effect), (None, None))[1]
        if fallback is not None:
            self.emit(fallback(effect))

    async def _execute(self, effect: Effect) -> None:
        entry = self._effects.get(type(effect))
        if entry is None:  # never silence: a core asking for what the runtime cannot do
            log.error("internal error: no runner for the effect %s", type(effect).__name__)
            return
        entry[0](effect)

    async def _check_pin(self, effect: CheckPin) -> None:
        """The PIN is checked in a worker thread; every path answers PinChecked."""
        try:
            answer = await self.operator.check(effect.pin, effect.function)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.error("supervisor PIN check for %s failed: %s", effect.function,
                      type(exc).__name__)
            answer = PinChecked(False, effect.function, "PIN CHECK FAILED")
        self.emit(answer)

    def _batch_closed(self, close: BatchClose) -> None:
        """A close ended the batch: the daily close is done for the day it ended on."""
        day = self.schedule.done_today(close.finished or datetime.now())
        if day:
            self.journal.set_note(batch_close.NOTE, day)

    async def _show(self, rows: tuple[str, str, str, str]) -> None:
        """Show the rows; a display that fails never holds up the sale (display.py)."""
        await self._display.show(rows)

    def _display_changed(self) -> None:
        if self.state is not None:  # after start-up: systemd's STATUS says it too
            self.notifier.status(self._status_line())

    def _start_timer(self, effect: StartTimer) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = self._rng.uniform(0, effect.seconds) if effect.jitter else effect.seconds
        self._timer = asyncio.get_running_loop().call_later(
            delay, self.emit, TimerFired("phase", effect.token))

    async def _authorize(self, effect: Authorize) -> None:
        event = await self.authorizer.authorize(effect.request, effect.sale_id)
        self.emit(event)

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _beep(self) -> None:
        try:
            await self._in(self._pins_pool, self.devices.pins.beep, True)
            await asyncio.sleep(0.15)
            await self._in(self._pins_pool, self.devices.pins.beep, False)
        except DeviceError as exc:
            log.warning("buzzer: %s", exc)
