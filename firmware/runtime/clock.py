"""The runtime's one clock: monotonic seconds for timeouts and backoff, local wall time
for people (receipts, the daily close and restart), UTC for the host (field 7).

Every runtime part takes it from graph.py instead of reading `time` or `datetime`
itself, so a test can run the terminal on virtual time: `LoopClock` reads the
event loop's own clock, which a test loop may advance without sleeping
(tests/vtime.py, in the spirit of trio's MockClock(autojump_threshold=0)).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone


class Clock:
    """The real clocks of the machine."""

    def monotonic(self) -> float:
        return time.monotonic()

    def local(self) -> datetime:
        return datetime.now()

    def utc(self) -> datetime:
        return datetime.now(timezone.utc)

    def wall(self) -> float:
        """Seconds since the epoch: for deadlines that must outlive a restart (a lockout)."""
        return time.time()


class LoopClock(Clock):
    """Time as the running event loop tells it: the loop's monotonic clock, and wall time
    that moves with it from the moment the clock was made. Under a real loop this is the
    machine's time; under a virtual-time loop, virtual time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, start: datetime | None = None) -> None:
        self.loop = loop
        self.t0 = loop.time()
        self.start = start or datetime.now()

    def monotonic(self) -> float:
        return self.loop.time()

    def local(self) -> datetime:
        return self.start + timedelta(seconds=self.loop.time() - self.t0)

    def utc(self) -> datetime:
        return self.local().astimezone(timezone.utc)

    def wall(self) -> float:
        return self.local().timestamp()


SYSTEM = Clock()
