"""Battery and mains power: the fuel gauge read every interval, the power-fail input watched.

Theory of operation. Two supervised tasks share this monitor:

- The gauge task reads the MAX17048 every `[battery] interval` seconds (in a
  thread of its own: an I2C transfer blocks) and tells the core the level
  (`BatteryRead`, shown on the idle screen). Below `[battery] low_percent`
  while not charging the battery is LOW: `ConditionChanged("battery",
  "BATTERY LOW", blocks_sales=True)`, so no new sale starts while a sale in
  flight finishes. It stays low until the level is `HYSTERESIS` points above
  the threshold, or the battery charges (the charger is then on mains: the
  terminal cannot run flat in the middle of a sale). A gauge that does not
  answer, or answers nonsense, is logged once and shown as BATTERY GAUGE FAULT,
  which does not block sales (a broken gauge must not close the shop); it is
  read again every interval and the fault clears when it answers.
- The mains task reads the power-fail input (low = mains lost) when it
  changes: the GPIO library's edge detection wakes it (`watch`), and only then
  is the pin read, `POLL_SECONDS` apart, until `DEBOUNCE` equal readings in a
  row make a change (or the level goes back). Idle, it sleeps: it also reads
  the pin every `RECHECK_SECONDS` in case an edge was missed, and wakes when
  the grace runs out. Where edges cannot be detected, it reads the pin every
  `POLL_SECONDS` and says so once in the log. Mains lost: a warning,
  `ConditionChanged("power", "MAINS POWER LOST", blocks_sales=True)`, the
  journal's WAL is folded into the database
  (a clean file if the battery runs out), and the grace timer starts. Mains
  back within `[power] grace`: the timer is cancelled and the condition
  cleared. Grace over: the monitor asks the app to stop the way SIGTERM does
  (no new sale, the sale in flight finishes, devices and journal closed).

After the app has stopped, `finish` runs `[power] shutdown_command` (default
`systemctl poweroff`; empty: posterm only stops). posterm then exits 0, which
systemd's `Restart=on-failure` leaves alone. If mains came back while posterm
was stopping, nothing is shut down and posterm starts again in the same process.
A shutdown command that fails is an error (exit 1): systemd starts posterm
again, and the grace begins anew if mains is still lost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from firmware.config import BatteryConfig, Config, PowerConfig
from firmware.core.events import BatteryRead, ConditionChanged, Event
from firmware.runtime import threads
from firmware.errors import DeviceError, PostermError
from firmware.runtime.signals import Signals

log = logging.getLogger("posterm.power")

POLL_SECONDS = 0.2  # the power-fail input, while it changes (or without edge detection)
RECHECK_SECONDS = 60.0  # the input read anyway, in case an edge was missed
DEBOUNCE = 2  # equal readings in a row before mains counts as lost or back
HYSTERESIS = 3  # percent above low_percent before a low battery is no longer low
SHUTDOWN_TIMEOUT = 60.0  # seconds the shutdown command may take
LOW_TEXT, FAULT_TEXT, MAINS_TEXT = "BATTERY LOW", "BATTERY GAUGE FAULT", "MAINS POWER LOST"


class GaugeReadingLike(Protocol):
    @property
    def voltage(self) -> float: ...

    @property
    def percent(self) -> float: ...

    @property
    def rate(self) -> float: ...


class GaugePort(Protocol):
    """A battery fuel gauge (drivers.gauge.Max17048). `read` raises a DeviceError."""

    def read(self) -> GaugeReadingLike: ...

    def close(self) -> None: ...


class PowerMonitor:
    def __init__(self, battery: BatteryConfig, power: PowerConfig, *,
                 gauge: GaugePort | None, power_ok: Callable[[], Awaitable[bool]] | None,
                 watch: Callable[[Callable[[], None]], Awaitable[object]] | None = None,
                 emit: Callable[[Event], None], checkpoint: Callable[[], None],
                 request_stop: Callable[[], None], changed: Callable[[], object],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.battery_cfg, self.power_cfg = battery, power
        self.gauge, self.power_ok, self.watch = gauge, power_ok, watch
        self.emit, self.checkpoint, self.request_stop = emit, checkpoint, request_stop
        self.changed, self.clock = changed, clock
        self.reading: GaugeReadingLike | None = None
        self.gauge_error = ""
        self.low = False
        self.mains = True
        self.lost_at: float | None = None
        self.shutdown_requested = False
        self._pin_error = ""
        self._pool = threads.pool("gauge")

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
        """The supervised tasks to run, by name: the gauge's and the power-fail input's."""
        tasks: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {}
        if self.gauge is not None:
            tasks["battery gauge"] = self.run_gauge
        if self.power_ok is not None:
            tasks["power-fail input"] = self.run_mains
        return tasks

    # -- the battery gauge ----------------------------------------------------------
    async def run_gauge(self) -> None:
        assert self.gauge is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                reading = await loop.run_in_executor(self._pool, self.gauge.read)
            except DeviceError as exc:
                self._gauge_failed(str(exc))
            else:
                self._gauge_read(reading)
            await asyncio.sleep(self.battery_cfg.interval)

    def _gauge_failed(self, why: str) -> None:
        self.reading = None
        if self.gauge_error:
            self.gauge_error = why
            return
        log.warning("%s; sales go on, the gauge is read again every %g s", why,
                    self.battery_cfg.interval)
        if self.low:
            log.warning("battery level no longer known (the gauge does not answer): sales "
                        "allowed again")
        self.gauge_error = why
        self.low = False
        self.emit(ConditionChanged("battery", FAULT_TEXT, blocks_sales=False))
        self.changed()

    def _gauge_read(self, reading: GaugeReadingLike) -> None:
        if self.gauge_error:
            log.info("battery gauge answers again: %d %%", int(reading.percent))
            self.gauge_error = ""
            self.emit(ConditionChanged("battery", ""))
        first = self.reading is None
        self.reading = reading
        charging = reading.rate > 0
        limit = self.battery_cfg.low_percent
        was_low = self.low
        if limit <= 0 or charging or reading.percent >= limit + HYSTERESIS:
            self.low = False
        elif reading.percent < limit:
            self.low = True
        if first:
            trend = "charging" if charging else "discharging" if reading.rate < 0 else "steady"
            log.info("battery %d %%, %.3f V, %+.1f %%/h (%s)", int(reading.percent),
                     reading.voltage, reading.rate, trend)
        self.emit(BatteryRead(int(reading.percent), charging=charging))
        if self.low and not was_low:
            log.warning("battery low: %d %% (below %d %%) and not charging: no new sale "
                        "until it charges or reaches %d %%", int(reading.percent), limit,
                        limit + HYSTERESIS)
            self.emit(ConditionChanged("battery", LOW_TEXT, blocks_sales=True))
        elif was_low and not self.low:
            log.info("battery no longer low: %d %%%s: sales allowed again", int(reading.percent),
                     ", charging" if charging else "")
            self.emit(ConditionChanged("battery", ""))
        self.changed()

    # -- the power-fail input -------------------------------------------------------
    async def run_mains(self) -> None:
        assert self.power_ok is not None
        changed = asyncio.Event()
        watching = await self._watch_edges(changed)
        streak = 0
        while True:
            changed.clear()  # before the read: an edge during it wakes the wait below
            level = await self._read_pin()
            if level is None or level == self.mains:
                streak = 0
            else:
                streak += 1
                if streak >= DEBOUNCE:
                    streak = 0
                    if level:
                        self._mains_back()
                    else:
                        self._mains_lost()
            grace_left = None
            if not self.mains and not self.shutdown_requested and self.lost_at is not None:
                grace_left = self.lost_at + self.power_cfg.grace - self.clock()
                if grace_left <= 0:
                    self._grace_over()
                    grace_left = None
            if not watching or streak or self._pin_error:
                await asyncio.sleep(POLL_SECONDS)
                continue
            wait = RECHECK_SECONDS if grace_left is None else min(RECHECK_SECONDS, grace_left)
            try:  # asleep until the pin changes, the grace runs out, or the recheck
                await asyncio.wait_for(changed.wait(), max(0.0, wait))
            except TimeoutError:
                pass

    async def _watch_edges(self, changed: asyncio.Event) -> bool:
        """Ask for the input's edges; False (and one log line) when they cannot be had."""
        if self.watch is None:
            return False
        loop = asyncio.get_running_loop()

        def edge() -> None:  # the GPIO library's thread
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                pass

        try:
            await self.watch(edge)
        except DeviceError as exc:
            log.info("power-fail input: no edge detection (%s); reading it every %g s",
                     exc, POLL_SECONDS)
            return False
        return True

    async def _read_pin(self) -> bool | None:
        assert self.power_ok is not None
        try:
            level = await self.power_ok()
        except DeviceError as exc:
            if not self._pin_error:
                log.warning("power-fail input cannot be read: %s; mains is taken to be as it "
                            "was", exc)
            self._pin_error = str(exc)
            return None
        if self._pin_error:
            log.info("power-fail input can be read again")
            self._pin_error = ""
        return bool(level)

    def _mains_lost(self) -> None:
        self.mains = False
        self.lost_at = self.clock()
        log.warning("mains power lost: running on battery; no new sale (a sale in progress "
                    "finishes); posterm stops in %g s unless mains power comes back",
                    self.power_cfg.grace)
        self.emit(ConditionChanged("power", MAINS_TEXT, blocks_sales=True))
        self._flush_journal()
        self.changed()

    def _mains_back(self) -> None:
        on_battery = self.clock() - (self.lost_at or self.clock())
        self.mains = True
        self.lost_at = None
        if self.shutdown_requested:
            log.warning("mains power back after %.1f s, but posterm is already stopping: it "
                        "starts again once stopped", on_battery)
        else:
            log.info("mains power back after %.1f s on battery: shutdown cancelled, sales "
                     "allowed again", on_battery)
        self.emit(ConditionChanged("power", ""))
        self.changed()

    def _grace_over(self) -> None:
        self.shutdown_requested = True
        what = (" ".join(self.power_cfg.shutdown_command) if self.power_cfg.shutdown_command
                else "nothing else (no shutdown_command)")
        log.warning("mains power lost for %g s: stopping posterm cleanly (a sale in progress "
                    "finishes first), then shutting down: %s", self.power_cfg.grace, what)
        self.changed()
        self.request_stop()

    def _flush_journal(self) -> None:
        try:
            self.checkpoint()
        except sqlite3.Error as exc:  # the journal stays valid; the WAL is folded in later
            log.warning("journal checkpoint on mains loss: %s", exc)

    # -- after the app has stopped --------------------------------------------------
    async def finish(self, show: Callable[[tuple[str, str, str, str]], Awaitable[object]]
                     ) -> bool:
        """After a stop this monitor asked for: run the shutdown command. True when
        posterm should start again instead (mains came back while it was stopping).
        A shutdown command that fails raises PostermError (posterm exits 1)."""
        self._pool.shutdown(wait=False)
        if not self.shutdown_requested:
            return False
        self._flush_journal()
        level = await self._read_pin() if self.power_ok is not None else None
        if level is not None:
            self.mains = level
        if self.mains:
            log.warning("mains power came back while posterm was stopping: no shutdown; "
                        "posterm starts again")
            return True
        command = self.power_cfg.shutdown_command
        if not command:
            log.warning("posterm stopped: mains power lost for over %g s; no shutdown_command "
                        "is configured, so the machine stays on", self.power_cfg.grace)
            await show(("MAINS POWER LOST", "POSTERM STOPPED", "", ""))
            return False
        await show(("MAINS POWER LOST", "SHUTTING DOWN", "", ""))
        log.warning("posterm stopped: mains power lost for over %g s; running the shutdown "
                    "command: %s", self.power_cfg.grace, " ".join(command))
        why = await asyncio.to_thread(run_command, command)
        if why:
            raise PostermError(f"mains power lost and the shutdown command failed ({why}); "
                               "posterm stopped with its journal clean and will be started "
                               "again ([power] shutdown_command)")
        return False

    # -- for `posterm status` -------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        battery: dict[str, Any] | None = None
        if self.gauge is not None:
            r = self.reading
            battery = {"percent": round(r.percent, 1) if r else None,
                       "voltage": round(r.voltage, 3) if r else None,
                       "rate": round(r.rate, 2) if r else None,
                       "charging": bool(r and r.rate > 0), "low": self.low,
                       "low_percent": self.battery_cfg.low_percent, "error": self.gauge_error}
        mains: dict[str, Any] | None = None
        if self.power_ok is not None:
            left = None
            if self.lost_at is not None and not self.shutdown_requested:
                left = max(0.0, round(self.power_cfg.grace - (self.clock() - self.lost_at), 1))
            mains = {"ok": self.mains, "shutdown_in": left,
                     "stopping": self.shutdown_requested, "error": self._pin_error}
        return {"battery": battery, "mains": mains}


def monitor_for(cfg: Config, gauge: GaugePort | None, signals: Signals, *,
                emit: Callable[[Event], None], checkpoint: Callable[[], None],
                request_stop: Callable[[], None], changed: Callable[[], object],
                clock: Callable[[], float] = time.monotonic) -> PowerMonitor | None:
    """The power monitor the configuration asks for: the battery gauge when there is one,
    the power-fail input when [power] is enabled and there are pins; None for neither.
    Its tasks (`tasks`) are started by the loop."""
    watch = cfg.power.enabled and cfg.gpio.backend != "none"
    if cfg.power.enabled and not watch:
        log.info("power-fail input not watched: [gpio] backend is none")
    if gauge is None and not watch:
        return None
    return PowerMonitor(cfg.battery, cfg.power, gauge=gauge,
                        power_ok=signals.power_ok if watch else None,
                        watch=signals.watch_power if watch else None, emit=emit,
                        checkpoint=checkpoint, request_stop=request_stop, changed=changed,
                        clock=clock)


def run_command(command: tuple[str, ...]) -> str:
    """Run `command`; '' when it succeeded, else why not (one line)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SHUTDOWN_TIMEOUT,
                              check=False)
    except FileNotFoundError:
        return f"{command[0]}: no such program"
    except subprocess.TimeoutExpired:
        return f"no answer within {SHUTDOWN_TIMEOUT:g} s"
    except OSError as exc:
        return f"{command[0]}: {exc.strerror or exc}"
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:200]
        return f"exit status {done.returncode}" + (f": {detail}" if detail else "")
    log.info("shutdown command done: %s", " ".join(command))
    return ""
