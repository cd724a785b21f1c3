"""The runtime's loop: events in, the pure core stepped, its effects run. The parts it
drives are built and connected in graph.py; the effects run from runners.py's table.

Drivers, the host link and timers put events on one queue; the loop takes them one at a
time, calls `core.machine.step`, and runs the effects in order. A `Show` is handed to
the display's writer and not waited for; screens still reach the glass in order, and
never before the durable writes that precede them (authorizer.py). Exceptions from a
device never unwind this loop, and none leaves the terminal stuck: a sale attempt
always ends in an event, long-lived tasks are supervised (supervisor.py), an effect
that fails still ends its flow (its fallback event). A journal failure, or a bug in
the pure core while it takes an outcome, stops the terminal with OUT OF ORDER on the
display: the next start recovers from the journal. On SIGTERM the loop drains: a sale
in flight finishes and its result is read before the terminal stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from firmware.config import Config
from firmware.core import machine as core
from firmware.core.effects import Effect, StartTimer
from firmware.core.events import (
    CardReadFailed, CardSwiped, ConditionChanged, Event, KeyPressed, LinkChanged,
    PrintFinished, QueueChanged, TimerFired,
)
from firmware.errors import PostermError
from firmware.runtime import failpoints, recovery, runners
from firmware.runtime.clock import SYSTEM, Clock
from firmware.runtime.current import Current
from firmware.runtime.graph import Parts
from firmware.runtime.journal import Journal
from firmware.runtime.livestatus import LiveStatus
from firmware.runtime.sdnotify import Notifier
from firmware.runtime.supervisor import is_fatal, supervise
from firmware.runtime.wiring import Devices

log = logging.getLogger("posterm")
_TICK: Any = object()  # a watchdog tick on the event queue (never reaches the core)
PEOPLE = (KeyPressed, CardSwiped, CardReadFailed)  # a person's input: none while stopping


class App:
    def __init__(self, cfg: Config, devices: Devices, journal: Journal,
                 notifier: Notifier | None = None, clock: Clock = SYSTEM) -> None:
        self.cfg, self.journal, self.clock = cfg, journal, clock
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.current = Current()
        self.notifier = notifier or Notifier(environ={})
        self._tasks: set[asyncio.Task[object]] = set()
        self._fatal: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.parts = Parts(cfg, devices, journal, self.notifier, self.current, emit=self.emit,
                           spawn=self._spawn, fail=self._fail,
                           background_error=self._background_error,
                           request_stop=self._request_stop,
                           request_restart=self._request_restart,
                           status_changed=self._status_changed, clock=clock)
        self.monitor = self.parts.monitor
        self.live = LiveStatus(self.parts, self.current)
        self._timer: asyncio.TimerHandle | None = None
        self._rng = random.Random()
        self._stopping = False
        self.restart_requested = False  # the daily restart: stop, then start again (exec)
        self.restart_reason = ""  # why, for the log: the daily restart, or mains back
        self._effects = runners.table(self.parts, self.current, journal, spawn=self._spawn,
                                      answer=self._answer, start_timer=self._start_timer)

    @property
    def state(self) -> core.State | None:
        return self.current.state

    # -- plumbing ---------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.queue.put_nowait(event)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._background_error(exc, f"task {task.get_name()}")

    def _background_error(self, exc: BaseException, what: str = "background work") -> None:
        if is_fatal(exc):
            self._fail(exc)
        else:
            log.error("%s failed: %s: %s", what, type(exc).__name__, exc)

    def _fail(self, exc: BaseException) -> None:
        """A journal failure: stop the terminal (the next start recovers from the journal)."""
        if self._fatal is None:
            self._fatal = exc
            log.critical("stopping: %s: %s", type(exc).__name__, exc)
        self._request_stop()

    def _request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _request_restart(self) -> None:
        self.restart_requested, self.restart_reason = True, "daily restart"
        self._request_stop()

    def _status_changed(self) -> None:
        if self.current.state is not None:  # after start-up: systemd's STATUS says it too
            self.notifier.status(self.live.line())

    def now(self) -> core.Now:
        return core.Now(mono=self.clock.monotonic(),
                        local=self.clock.local().replace(microsecond=0))

    # -- main loop ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event, stop_now: asyncio.Event | None = None) -> None:
        """Run until `stop`; then finish a sale in flight (unless `stop_now`) and return."""
        self._stop, p = stop, self.parts
        self.notifier.status("recovering: resolving the journal")
        done = recovery.recover(self.journal, self.cfg.core.currency_code)
        state, effects = core.initial(
            self.cfg.core, last=self.journal.last_sale(), notice=done.notice,
            recent=self.journal.recent_approvals(self.cfg.core.duplicate_minutes,
                                                 now=self.clock.local()))
        self.current.state = state
        await self.execute(effects)
        for name, factory in p.tasks().items():
            self._spawn(supervise(name, factory, on_fatal=self._fail,
                                  clock=self.clock.monotonic), name)
        if p.paths is not None and p.paths.modem is not None:
            p.paths.report()
        p.queue_changed()
        self._spawn(p.signals.led(True), "led")
        self._spawn(p.connect_at_start(), "first connection")
        self._spawn(p.prints.recovery_copies(done.copies, state.last.sale_id if state.last
                                             else 0), "recovery copies")
        self._spawn(p.closer.print_pending_z(), "z reports")
        p.forwarder.kick()
        log.info("posterm ready: terminal %s, host %s", self.cfg.core.identity.terminal_id,
                 p.link.address)
        await self.live.start()
        self.notifier.ready(self.live.line())
        if self.notifier.watchdog_seconds:
            self._spawn(self._ticker(self.notifier.watchdog_seconds / 3), "watchdog ticker")
        stopper = asyncio.create_task(stop.wait())
        try:
            while (item := await self._next(stopper)) is not None:
                await self._handle(item)
            if self._fatal is None:
                await self._drain(stop_now or asyncio.Event())
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await p.close()
            await self.live.stop()
        if self._fatal is None and p.power is not None:  # a stop for mains loss: shut down
            if await p.power.finish(p.display.show):
                self.restart_requested = True
                self.restart_reason = "mains power came back while stopping"
        if self._fatal is not None:
            await p.display.last_words(("OUT OF ORDER", "TERMINAL FAULT", "SEE THE LOG", ""))
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

    async def _drain(self, stop_now: asyncio.Event) -> None:
        """SIGTERM: take no new sale; let a sale in flight end (its attempt always ends
        within the connect and response timeouts) and its result be read (the result
        screen for its normal time, the receipt out), unless told to stop at once. A
        result the stop cut short is told again at the next start (LAST SALE ...)."""
        if self.current.phase == core.Phase.BUSY_WAIT:
            await self._handle(KeyPressed("CANCEL"))  # nothing outstanding: close it now
        self._stopping = True  # from here on no key or card reaches the core
        if self.current.result_pending():
            self.notifier.stopping("stopping: finishing the sale in progress")
            log.info("stopping: finishing the sale in progress first")
            host = self.cfg.host
            budget = min(60.0, host.connect_timeout + 2 * host.response_timeout + 10)
            quick = asyncio.create_task(stop_now.wait())
            timer = asyncio.create_task(asyncio.sleep(budget))
            try:
                while self.current.result_pending():
                    item = await self._next(quick if not timer.done() else timer)
                    if item is None:
                        log.warning("stopping with a sale in flight: the journal has it and "
                                    "the next start resolves it")
                        break
                    await self._handle(item)
            finally:
                quick.cancel()
                timer.cancel()
            result = self.current.state.result if self.current.state is not None else None
            if result is not None and result.sale_id and self.current.phase in (
                    core.Phase.PRINTING, core.Phase.RESULT):
                # the stop cut the result short: the next start tells it again
                self.journal.mark_shown(result.sale_id, shown=False)
        self.notifier.stopping("stopping")
        await self.parts.display.show(("POSTERM", "STOPPING", "PLEASE WAIT", ""))

    async def _handle(self, event: Event) -> None:
        assert self.current.state is not None
        if self._stopping and isinstance(event, PEOPLE):
            return  # stopping: no new sale, no menu
        p, was_active = self.parts, self.current.sale_active()
        if p.pinpad is not None and p.pinpad.takes(event):  # a PIN's keys: never the core's
            return
        if isinstance(event, CardSwiped) and not event.pan_hash:
            # the duplicate guard compares keyed hashes, never PANs
            event = replace(event, pan_hash=self.journal.vault.pan_hash(event.card.pan))
        try:
            if isinstance(event, KeyPressed):
                failpoints.hit("main_loop_key")
            self.current.state, effects = core.step(self.current.state, event, self.now())
        except Exception as exc:  # a bug in the pure core
            if isinstance(event, PEOPLE):
                # a person's input that could not be taken: the state is as it was (step
                # never returned), so the key or swipe is dropped and the loop goes on
                log.error("internal error taking %s: %s: %s; ignored", type(event).__name__,
                          type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                await p.signals.beep()
                return
            # an outcome the core could not take: restart, and the journal resolves it
            log.critical("internal error handling %s: %s: %s", type(event).__name__,
                         type(exc).__name__, exc, exc_info=True)
            self._fail(PostermError(f"internal error in the sale logic ({type(exc).__name__}: "
                                    f"{exc}); the journal is intact and the next start "
                                    "recovers from it"))
            return
        await self.execute(effects)
        p.in_hand.update(self.current.state)
        if self.current.idle():  # tasks waiting for an idle moment look now
            p.schedule.kick()
            p.daily.kick()
        if was_active and not self.current.sale_active():
            # a sale that ended lets the upload go on; the journal tells the forwarder
            # itself when the queues change, so other steps need not wake it
            p.forwarder.kick()
        if isinstance(event, (LinkChanged, QueueChanged, PrintFinished, ConditionChanged)):
            self.notifier.status(self.live.line())

    # -- effects ------------------------------------------------------------------
    async def execute(self, effects: list[Effect]) -> None:
        """Run the effects in order from the table (runners.py); one that fails
        unexpectedly is logged and its fallback event still ends its flow."""
        for effect in effects:
            runner, fallback = self._effects.get(type(effect), (None, None))
            try:
                if runner is None:  # never silence: a core asking for what cannot be done
                    raise PostermError(f"no runner for the effect {type(effect).__name__}")
                runner(effect)
            except Exception as exc:
                if is_fatal(exc):  # stop through the one path that says OUT OF ORDER
                    self._fail(exc)
                    return
                log.error("internal error running %s: %s: %s", type(effect).__name__,
                          type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                if fallback is not None:  # the flow the effect belongs to still ends
                    self.emit(fallback(effect))

    def _answer(self, work: Callable[[], Coroutine[Any, Any, Event]], name: str) -> None:
        """Background work whose result is the core's next event (a sale's answer, the
        PIN's verdict): spawned, and its event emitted when it ends."""
        async def run() -> None:
            self.emit(await work())
        self._spawn(run(), name)

    def _start_timer(self, effect: StartTimer) -> None:
        if self._timer is not None:
            self._timer.cancel()
        delay = self._rng.uniform(0, effect.seconds) if effect.jitter else effect.seconds
        self._timer = asyncio.get_running_loop().call_later(
            delay, self.emit, TimerFired("phase", effect.token))
