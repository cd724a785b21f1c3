"""The daily restart (PCI PTS terminals restart at least once every 24 hours).

Once a day, inside `[maintenance] restart_window` (local time), when the
terminal is idle — no sale, not in the menu — the idle screen announces the
restart `restart_notice` seconds ahead; if the terminal is still idle then, the
firmware stops cleanly and starts again in the same process (exec), so it comes
back READY with its journal as it was. A sale or the menu in between puts the
restart off until the terminal is idle again, inside the window; a window that
passes without an idle moment skips that day. The journal keeps the day of the
last restart, so a restart inside the window is not repeated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta

from firmware.config import Maintenance
from firmware.core.events import Event, MaintenanceNotice
from firmware.runtime.supervisor import Wake, seconds_until

log = logging.getLogger("posterm.maintenance")
NOTE = "last_daily_restart"
LONGEST_NAP = 60.0  # seconds: the most the task sleeps without looking at the clock


def window_day(now: datetime, window: tuple[int, int]) -> date | None:
    """The day whose window `now` is in, or None when `now` is outside it."""
    start, end = window
    minute = now.hour * 60 + now.minute
    if start < end:
        return now.date() if start <= minute < end else None
    if minute >= start:  # the window runs past midnight
        return now.date()
    return now.date() - timedelta(days=1) if minute < end else None


def notice_text(seconds: float) -> str:
    when = f"IN {round(seconds / 60)} MIN" if seconds >= 90 else f"IN {int(seconds)} SECONDS"
    return f"DAILY RESTART\n{when}"


class DailyRestart:
    def __init__(self, cfg: Maintenance, *, idle: Callable[[], bool],
                 emit: Callable[[Event], None], last_day: Callable[[], str],
                 remember: Callable[[str], None], restart: Callable[[], None],
                 status: Callable[[str], object], clock: Callable[[], datetime] = datetime.now
                 ) -> None:
        self.cfg = cfg
        self.idle, self.emit, self.last_day, self.remember = idle, emit, last_day, remember
        self.restart, self.status, self.clock = restart, status, clock
        self._wake = Wake()

    def due(self) -> date | None:
        if self.cfg.window is None:
            return None
        day = window_day(self.clock(), self.cfg.window)
        if day is None or self.last_day() == day.isoformat():
            return None
        return day

    def kick(self) -> None:
        """Look again now: the terminal went idle."""
        self._wake.kick()

    async def run(self) -> None:
        """Runs until the restart (then waits to be cancelled); never returns on its own.
        It sleeps until the window opens or the terminal goes idle (a `kick`), and at
        most `LONGEST_NAP` seconds, so a clock set forward is noticed: it never polls."""
        window = self.cfg.window
        if window is None:
            await asyncio.Event().wait()
            return
        start = divmod(window[0], 60)
        while True:
            if self.due() is None:
                await self._wake.nap(min(LONGEST_NAP, seconds_until(self.clock(), start)))
                continue
            if not self.idle():
                await self._wake.nap(LONGEST_NAP)
                continue
            log.info("daily restart in %g s (announced on the display)", self.cfg.notice)
            self.status(f"daily restart in {self.cfg.notice:g} s")
            self.emit(MaintenanceNotice(notice_text(self.cfg.notice)))
            await asyncio.sleep(self.cfg.notice)
            while (day := self.due()) is not None and not self.idle():
                await self._wake.nap(LONGEST_NAP)  # a sale or the menu: until idle
            self.emit(MaintenanceNotice(""))
            if day is None:
                log.warning("daily restart skipped today: the terminal was never idle in "
                            "the window")
                continue
            self.remember(day.isoformat())
            log.info("daily restart now")
            self.status("daily restart")
            self.restart()
            await asyncio.Event().wait()
