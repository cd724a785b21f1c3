"""The terminal's object graph: every long-lived part, built once from the configuration,
the opened devices (wiring.py) and the journal, and connected to each other here.

App (app.py) keeps the loop and nothing else: it hands this module the four things the
parts need from the loop (emit an event, spawn a task, stop on a fatal error, report a
background error) and the core's current state (current.py), which the parts ask
questions of (is the terminal idle? is a sale in flight?) instead of calling back into
the loop. `Parts.tasks` names the supervised tasks the loop starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from firmware.config import Config
from firmware.core.effects import ChipBegin, ChipChoice, ChipComplete, ChipStop, TakePin
from firmware.core.emv.steps import Outcome, PinResult
from firmware.core.events import (
    AdviceRefused, ChipFinished, Event, LinkChanged, PathChanged, PinTaken, QueueChanged,
)
from firmware.core.link import UP
from firmware.errors import HostError
from firmware.runtime import batch as batch_close
from firmware.runtime import failpoints, maintenance, recovery, status, threads
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.batch import CloseEngine, CloseSchedule
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.current import Current
from firmware.runtime.decisions import Decisions
from firmware.runtime.display import DisplayKeeper
from firmware.runtime.forwarder import Forwarder
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.journal_batch import BatchClose
from firmware.runtime.linkmonitor import LinkMonitor
from firmware.runtime.maintenance import DailyRestart
from firmware.runtime.operator import OperatorGuard
from firmware.runtime.outcomes import Announcer
from firmware.runtime.paths import MODEM, Failover, ModemKeeper, Paths, PrimaryProbe
from firmware.runtime.power import PowerMonitor, monitor_for
from firmware.runtime.printing import Prints
from firmware.runtime.printqueue import PrintSpooler, Settings
from firmware.runtime.sdnotify import Notifier
from firmware.runtime.signals import Signals
from firmware.runtime.wiring import Devices

if TYPE_CHECKING:  # imported where [fleet] brokers, [chip], [pin] are set (Parts.__init__)
    from firmware.runtime.chip import ChipSession
    from firmware.runtime.fleet import FleetChannel
    from firmware.runtime.pinentry import KeypadPinPad

log = logging.getLogger("posterm")
Spawn = Callable[[Coroutine[Any, Any, object], str], None]
TaskFactory = Callable[[], Coroutine[Any, Any, object]]


class Parts:
    """Every part of the running terminal but the loop."""

    def __init__(self, cfg: Config, devices: Devices, journal: Journal, notifier: Notifier,
                 current: Current, *, emit: Callable[[Event], None], spawn: Spawn,
                 fail: Callable[[BaseException], None],
                 background_error: Callable[[BaseException], None],
                 request_stop: Callable[[], None], request_restart: Callable[[], None],
                 status_changed: Callable[[], None], clock: Clock = SYSTEM) -> None:
        self.cfg, self.devices, self.journal, self.notifier = cfg, devices, journal, notifier
        self.clock = clock
        self.current, self.emit, self.spawn = current, emit, spawn
        ident = cfg.core.identity
        # the fleet channel (fleet.py), with [fleet] brokers: it sees every event the
        # parts emit (faults, closes, changes) on its way to the loop
        self.fleet: FleetChannel | None = None
        if cfg.fleet.enabled:  # paho and the channel's modules only where it runs
            from firmware.runtime.fleet import FleetChannel
            self.fleet = FleetChannel(cfg.fleet, ident.terminal_id, journal,
                                      facts=self._fleet_doc, idle=current.idle, emit=emit,
                                      restart=request_restart, version=status.version(),
                                      clock=clock, config=cfg)
        if self.fleet is not None:
            emit = self.emit = self._told_fleet(emit, self.fleet)
        self.signals = Signals(devices.pins)
        modem = getattr(devices, "modem", None)
        self.paths = Paths(cfg.modem, modem, emit=self._path_event,
                           clock=clock.monotonic) if modem else None
        self.link = HostLink(cfg.host, ident, journal.allocate_stan,
                             on_connected=self._on_connected, paths=self.paths, clock=clock)
        self.monitor = LinkMonitor(
            cfg.link, ident.terminal_id, self.link.probe, self._link_changed,
            echo=self.link.echo, idle_seconds=lambda: clock.monotonic() - self.link.last_traffic,
            echo_interval=cfg.host.echo_interval, connected=lambda: self.link.connected,
            clock=clock.monotonic)
        self.link.listeners.append(self.monitor.report)
        self.link.lost_listeners.append(self.monitor.lost)  # reconnect at once on a loss
        self.failover = Failover(self.paths, self.link, busy=current.in_flight) \
            if self.paths is not None else None
        self.forwarder = Forwarder(
            journal, self.link, cfg.host, sale_active=current.sale_active,
            link_usable=lambda: self.monitor.state != "DOWN", on_result=self.monitor.report,
            on_queue_change=self.queue_changed, on_error=background_error, clock=clock)
        chip = cfg.core.chip
        pin_pad = chip.pin_pad if chip is not None else False
        self.authorizer = Authorizer(journal, self.link, ident, cfg.host.response_timeout,
                                     before_request=self.forwarder.flush,
                                     reversal_recorded=self.forwarder.kick,
                                     on_result=self.monitor.report, clock=clock,
                                     pin_pad=pin_pad or cfg.core.pin_entry,
                                     pin_block=lambda: self.pinpad.take_block()
                                     if self.pinpad is not None else None)
        # the cardholder's PIN (pinentry.py), when a PIN pad is configured: the keypad
        self.pinpad: KeypadPinPad | None = None
        if cfg.core.pin_entry:  # the PIN pad's modules (DUKPT, the key store) only with [pin]
            from firmware.runtime.pinentry import keypad_pinpad
            self.pinpad = keypad_pinpad(cfg, journal, emit)
        # the chip reader and the EMV kernel's session (chip.py), when [chip] is configured
        reader = getattr(devices, "chip_reader", None)
        self.chip: ChipSession | None = None
        if chip is not None and reader is not None:  # the EMV kernel only with [chip]
            from firmware.runtime.chip import ChipSession
            self.chip = ChipSession(reader, chip, emit=emit, pan_hash=journal.vault.pan_hash,
                                    sequence=lambda: int(journal.allocate_stan()), spawn=spawn,
                                    pinpad=self.pinpad)
        self.operator = OperatorGuard(cfg.operator.pin_hash,
                                      attempts=cfg.operator.lockout_attempts,
                                      lockout_minutes=cfg.operator.lockout_minutes,
                                      journal=journal, clock=clock.wall)
        # one thread each: a printer that hangs can hold up only the printer, never the
        # display or the pins (the default pool would fill with waiting prints). The
        # printer's thread belongs to the spooler, with the durable print queue
        self.spooler = PrintSpooler(devices.printer, journal, emit,
                                    Settings.from_options(cfg.printer.options),
                                    on_error=background_error, clock=clock.monotonic,
                                    now=clock.local)
        # the newest screen, kept on the glass: a display that fails is retried in the
        # background while the sale goes on (display.py)
        self.display = DisplayKeeper(devices.display, threads.pool("display"),
                                     on_change=status_changed)
        # what is printed, and how its end is told to the core (printing.py)
        self.prints = Prints(cfg.core, journal, self.spooler, emit,
                             link_state=lambda: self.monitor.state, clock=clock)
        # the batch close (batch.py): started by CloseBatch, resumed from the journal
        self.closer = CloseEngine(
            journal, self.link, cfg.host, cfg.core, emit=emit,
            flush=lambda: self.forwarder.flush(due_only=False), kick=self.forwarder.kick,
            print_z=self.prints.z_report, on_result=self.monitor.report,
            on_closed=self._batch_closed, clock=clock.local, monotonic=clock.monotonic)
        self.schedule = CloseSchedule(
            cfg.operator.close_time, idle=current.idle, emit=emit,
            in_progress=lambda: journal.close_in_progress() is not None,
            running=lambda: self.closer.running, ended=lambda: self.closer.ended,
            last_day=lambda: journal.note(batch_close.NOTE), clock=clock.local,
            monotonic=clock.monotonic)
        # the journal writes the core asks for directly (decisions.py)
        self.decisions = Decisions(journal, ident, emit=emit,
                                   queue_changed=self.queue_changed, kick=self.forwarder.kick,
                                   pin_pad=pin_pad)
        # screens to the display; a sale's outcome, once shown, journaled and logged
        self.announcer = Announcer(self.display, journal, cfg.core.currency_code,
                                   on_fatal=fail, on_outcome=self.fleet.sale_ended
                                   if self.fleet is not None else None)
        self.in_hand = recovery.InHand(journal)  # the note of a sale not yet journaled
        self.daily = DailyRestart(
            cfg.maintenance, idle=current.idle, emit=emit,
            last_day=lambda: journal.note(maintenance.NOTE),
            remember=lambda day: journal.set_note(maintenance.NOTE, day),
            restart=self._daily_restart(request_restart), status=notifier.status,
            clock=clock.local)
        self.power: PowerMonitor | None = monitor_for(
            cfg, getattr(devices, "gauge", None), self.signals, emit=emit,
            checkpoint=journal.checkpoint, request_stop=request_stop, changed=status_changed,
            clock=clock.monotonic)
        self._announced: set[int] = set()  # refused offline sales told to the core

    def tasks(self) -> dict[str, TaskFactory]:
        """The supervised tasks of a running terminal, by name (supervisor.py restarts
        each with backoff)."""
        reader, keypad = self.devices.card_reader, self.devices.keypad
        chip_reader = getattr(self.devices, "chip_reader", None) if self.chip else None
        tasks: dict[str, TaskFactory] = {
            "card reader": lambda: reader.run(self.emit),
            **({"chip reader": lambda: chip_reader.run(self.emit)} if chip_reader else {}),
            "keypad": lambda: keypad.run(self.emit),
            "printer watch": self.spooler.run,
            "forwarder": self.forwarder.run,
            "link monitor": self.monitor.run,
        }
        paths, failover = self.paths, self.failover
        if paths is not None and paths.modem is not None and failover is not None:
            host = self.cfg.host
            tasks["modem"] = ModemKeeper(paths, paths.modem, self.cfg.modem, emit=self.emit).run
            tasks["primary probe"] = PrimaryProbe(
                paths, host.host, host.port, self.link.ssl_context, self.link.server_name,
                host.connect_timeout, failback=failover.failback,
                interval=min(10.0, max(1.0, self.cfg.modem.failback_after / 4))).run
        tasks["daily restart"] = self.daily.run
        tasks["batch close schedule"] = self.schedule.run
        if self.power is not None:
            tasks.update(self.power.tasks())
        if self.fleet is not None:
            tasks["fleet"] = self.fleet.run
        return tasks

    def chip_begin(self, effect: ChipBegin) -> None:
        if self.chip is None:  # a [chip] without a reader: the core is told at once
            self.emit(ChipFinished(Outcome("fallback", message="CHIP ERROR",
                                           detail="no chip reader")))
            return
        self.chip.begin(effect)

    def take_pin(self, effect: TakePin) -> None:
        """A swipe's online PIN: the PIN pad takes it, the core hears how it went."""
        pad = self.pinpad
        if pad is None:
            self.emit(PinTaken(PinResult("no_pinpad")))
            return
        request = effect.request

        async def take() -> None:
            try:
                result = await pad.online(request.card.pan, request.amount, bypass=False)
            except Exception:  # the sale must still end: nothing was sent
                self.emit(PinTaken(PinResult("failed")))
                raise
            self.emit(PinTaken(result))
        self.spawn(take(), "pin entry")

    def chip_choose(self, effect: ChipChoice) -> None:
        if self.chip is not None:
            self.chip.choose(effect.index)

    def chip_stop(self, effect: ChipStop) -> None:
        if self.chip is not None:
            self.chip.stop()

    def chip_complete(self, effect: ChipComplete) -> None:
        failpoints.hit("chip_second_ac")
        if self.chip is not None:
            self.chip.complete(effect)

    async def connect_at_start(self) -> None:
        """Connect and sign on now, so an unreachable host shows before the first sale."""
        try:
            await self.link.ensure_connected()
        except HostError as exc:
            log.info("no host connection at start: %s", exc)

    async def close(self) -> None:
        """At the end of a run, its tasks cancelled: the display let go, the queues'
        requests ended, the link and the modem's data session closed."""
        self.display.close()
        if self.fleet is not None:
            self.fleet.close()
        if self.chip is not None:
            self.chip.close()
        await self.forwarder.stop()  # before the link closes and fails their requests
        await self.link.close()
        if self.paths is not None and self.paths.modem is not None:
            try:  # the data session is closed politely; a silent modem is not waited for
                await asyncio.wait_for(self.paths.modem.close(), 3.0)
            except Exception as exc:
                log.debug("closing the modem: %s", exc)

    def queue_changed(self) -> None:
        """The journal's queues changed: the core hears their figures, and each offline
        sale the host refused, once per run (its slip printed, that is journaled)."""
        self.emit(QueueChanged(self.journal.queue_stats()))
        refusals = self.journal.unannounced_refusals()
        # only those still unannounced in the journal are remembered: the set would
        # otherwise keep every refused sale of the process's life
        self._announced.intersection_update(record.sale_id for _, record in refusals)
        for _adv_id, record in refusals:
            if record.sale_id not in self._announced:
                self._announced.add(record.sale_id)
                self.emit(AdviceRefused(record))

    async def _on_connected(self) -> None:
        await self.forwarder.flush(due_only=False)

    def _path_event(self, event: Event) -> None:
        """The paths' news: idle echoes on the modem path follow its own, longer interval."""
        if isinstance(event, PathChanged):
            self.monitor.echo_interval = (self.cfg.modem.echo_interval if event.path == MODEM
                                          else self.cfg.host.echo_interval)
        self.emit(event)

    def _link_changed(self, state: str) -> None:
        """The link monitor's verdict: fail over to the modem when the link is down, tell
        the core, light the LED, and let the queues go once it is up."""
        if state == "DOWN" and self.failover is not None and self.failover.paths.modem_ready:
            self.spawn(self.failover.fail_over(), "failover")
        self.emit(LinkChanged(state, untrusted=self.monitor.health.untrusted))
        self.spawn(self.signals.led(state == UP), "led")
        if state == UP:
            self.forwarder.kick()

    @staticmethod
    def _told_fleet(emit: Callable[[Event], None],
                    fleet: FleetChannel) -> Callable[[Event], None]:
        def told(event: Event) -> None:
            try:
                fleet.observe(event)
            except Exception as exc:  # the fleet never stands in an event's way
                log.error("fleet: %s: %s", type(exc).__name__, exc)
            emit(event)
        return told

    def _daily_restart(self, restart: Callable[[], None]) -> Callable[[], None]:
        def daily() -> None:
            if self.fleet is not None:
                self.fleet.restarting("daily restart")
            restart()
        return daily

    async def _fleet_doc(self) -> dict[str, Any]:
        from firmware.runtime.livestatus import LiveStatus  # it imports this module
        return await LiveStatus(self, self.current).doc()

    def _batch_closed(self, close: BatchClose) -> None:
        """A close ended the batch: the daily close is done for the day it ended on."""
        day = self.schedule.done_today(close.finished or self.clock.local())
        if day:
            self.journal.set_note(batch_close.NOTE, day)
