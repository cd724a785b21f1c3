"""Supervision of the runtime's long-lived tasks (forwarder, link monitor, devices).

A background task that dies of an unexpected exception is logged, in words, and
started again after a full-jitter backoff that grows with each failure in a row
(and starts afresh once the task has run well for `healthy_after` seconds), so a
bug in one part never silently stops the reversals, the link monitor or a
device. A journal failure (sqlite3.Error, JournalError) is not retried: it goes
to `on_fatal`, and the terminal stops rather than take sales it cannot record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from firmware.core.backoff import full_jitter
from firmware.errors import JournalError, KeyStoreError

log = logging.getLogger("posterm.supervisor")

FATAL = (sqlite3.Error, JournalError, KeyStoreError)


def is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, FATAL)


async def supervise(name: str, factory: Callable[[], Coroutine[Any, Any, object]], *,
                    on_fatal: Callable[[BaseException], None], base: float = 0.5,
                    cap: float = 30.0, healthy_after: float = 60.0,
                    rng: random.Random | None = None,
                    clock: Callable[[], float] = time.monotonic) -> None:
    """Run `factory()` for ever: restart it with backoff whenever it fails."""
    rng = rng or random.Random()
    failures = 0
    while True:
        started = clock()
        try:
            await factory()
            log.warning("%s stopped by itself; starting it again", name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_fatal(exc):
                on_fatal(exc)
                return
            if clock() - started >= healthy_after:
                failures = 0
            delay = full_jitter(failures, base, cap, rng.random())
            failures += 1
            log.error("%s failed: %s: %s; restarting it in %.1f s (failure %d in a row)",
                      name, type(exc).__name__, exc, delay, failures,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            await asyncio.sleep(delay)
            continue
        await asyncio.sleep(base)


class Wake:
    """A task's alarm clock: it sleeps until a deadline or until someone `kick`s it
    (the terminal went idle, a close ended), so a task that waits for a condition
    wakes when the condition may have changed instead of polling for it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def kick(self) -> None:
        self._event.set()

    async def nap(self, seconds: float) -> None:
        """Sleep up to `seconds`; return sooner if kicked since the last nap ended."""
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, seconds))
        except TimeoutError:
            pass
        self._event.clear()


def seconds_until(now: datetime, at: tuple[int, int]) -> float:
    """Seconds from `now` to the next local time `at` (hour, minute), at least 0."""
    target = now.replace(hour=at[0], minute=at[1], second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()
