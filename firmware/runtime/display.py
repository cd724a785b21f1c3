"""The display as the runtime sees it: the latest screen, kept on the glass whatever the bus does.

`DisplayKeeper.submit` hands a screen to the display and returns at once with a
future that says when it is on the glass (True) or could not be written
(False). Screens are written one after the other in the order they were
submitted, by one writer task, each in the display's own worker thread, so the
event loop never waits for the bus: a progress screen such as AUTHORIZING does
not hold up the request it announces. At most two screens are held: the one being
written and the newest; a screen not yet started when a newer one comes is never
written (the glass would show it only to overwrite it), and its future answers with
the newer one's, so a display slower than the screens holds nothing more. `show` is
`submit` awaited. What may be shown is decided before a screen is submitted: the
runtime submits a result only once it is journaled (app.py), and journals that the
merchant has seen it when the future says it is on the glass (or on it as part of a
newer screen).

When a write fails (an I2C error: the module unplugged, a loose wire, a glitch)
or does not finish within `stall` seconds, the keeper logs it once, goes on
without the display and retries in the background with pauses that double
from `base` to `cap` seconds (each drawn at random in the upper half of its
ceiling). Meanwhile screens are only remembered (the newest one) and their
futures answer False at once, so keys, cards and the host's answers are handled
as usual. When a retry succeeds the driver has initialised the controller
afresh (after a bus error it always does: the module may have lost power) and
written every character of the newest screen; one log line says the display
works again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from firmware.core.backoff import ceiling
from firmware.errors import DeviceError
from firmware.ports import DisplayPort

log = logging.getLogger("posterm.display")

RETRY_BASE = 0.25  # first pause before a retry, seconds (its ceiling; doubled each time)
RETRY_CAP = 8.0  # the longest pause: a display that answers again is redrawn within this
STALL = 2.0  # a write that takes longer than this counts as a display that does not answer

Rows = tuple[str, ...]
STALE = "a write that had stalled finished"


class DisplayKeeper:
    def __init__(self, display: DisplayPort, pool: Executor, *, base: float = RETRY_BASE,
                 cap: float = RETRY_CAP, stall: float = STALL,
                 rng: random.Random | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self._display = display
        self._pool = pool
        self._base, self._cap, self._stall = base, cap, stall
        self._rng = rng or random.Random()
        self._on_change = on_change
        self._wanted: Rows | None = None  # the newest screen the core asked for
        self._fault = ""  # why the display is not in use ("" while it works)
        self._retry: asyncio.Task[None] | None = None
        self._pending: asyncio.Future[object] | None = None  # a write still in its thread
        # to write, in order: the screen being written, then at most the newest, each with
        # the futures of the screens it stands for
        self._queue: deque[tuple[Rows, list[asyncio.Future[bool]]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.failures = 0  # failed writes since the display last worked

    @property
    def fault(self) -> str:
        """Why the display is not in use, for `posterm status` ("" while it works)."""
        return self._fault.removeprefix("display: ")

    def submit(self, rows: Sequence[str]) -> asyncio.Future[bool]:
        """Queue `rows` for the glass and return at once; the future answers True when they
        are on it, False when the display is not in use (the retry draws the newest screen
        when it is back)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._wanted = tuple(rows)
        if self._fault:
            done.set_result(False)
            return done
        if len(self._queue) > 1:  # not yet started: the newest stands for it
            _, superseded = self._queue.pop()
            superseded.append(done)
            self._queue.append((self._wanted, superseded))
        else:
            self._queue.append((self._wanted, [done]))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain(),
                                                                  name="display writer")
        return done

    async def show(self, rows: Sequence[str]) -> bool:
        """Show `rows`, waiting until they are on the glass; False when the display is not in
        use (they are remembered for the retry)."""
        return await self.submit(rows)

    async def last_words(self, rows: Sequence[str], timeout: float = 5.0) -> None:
        """The last screen before the terminal stops (OUT OF ORDER). Written in the
        display's own thread, so that it comes after a screen whose write was already
        under way (it used to race it, and lose); a courtesy: the log has the cause."""
        try:
            await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                self._pool, self._display.show, tuple(rows)), timeout)
        except Exception as exc:
            log.debug("display while stopping: %s", exc)

    def close(self) -> None:
        for task in (self._retry, self._writer):
            if task is not None:
                task.cancel()
        self._retry = self._writer = None
        while self._queue:
            _, futures = self._queue.popleft()
            _answer(futures, False)

    # -- internals --------------------------------------------------------------

    async def _drain(self) -> None:
        """Write the queued screens in order; after a failure the rest answer False (the
        retry draws the newest)."""
        # Let the tasks started by the same effects take their first step before the bus:
        # an Authorize journals and writes its 0200 before the AUTHORIZING screen goes out.
        await asyncio.sleep(0)
        while self._queue:
            rows, futures = self._queue[0]
            ok = False
            if not self._fault:
                problem = await self._write(rows)
                while problem == STALE:  # an older write that had stalled: now ours
                    problem = await self._write(rows)
                if problem:
                    self._lost(problem)
                else:
                    ok = True
            self._queue.popleft()
            _answer(futures, ok)

    async def _write(self, rows: Rows) -> str:
        """Write `rows` in the display's thread: "" when done, STALE when only a write that
        had stalled finished (older rows), else what went wrong."""
        job, fresh = self._pending, self._pending is None
        if job is None:
            job = asyncio.get_running_loop().run_in_executor(self._pool, self._display.show,
                                                             rows)
        self._pending = job
        done, _ = await asyncio.wait({job}, timeout=self._stall)
        if not done:
            return f"display: no answer within {self._stall:g} s"
        self._pending = None
        try:
            job.result()
        except DeviceError as exc:
            return str(exc)
        except Exception as exc:  # a driver bug: the sale goes on without the display
            return f"display: internal error: {type(exc).__name__}: {exc}"
        return "" if fresh else STALE

    def _lost(self, problem: str) -> None:
        self._fault = problem
        self.failures = 1
        log.error("%s; the terminal goes on without the display and retries it", problem)
        self._changed()
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(
                self._recover(), name="display retry")

    async def _recover(self) -> None:
        """Retry with backoff until the newest screen is on the glass."""
        attempt = 0
        while True:
            top = ceiling(attempt, self._base, self._cap)
            await asyncio.sleep(top / 2 + self._rng.random() * top / 2)
            attempt += 1
            if await self._redraw():
                break
            self.failures += 1
        log.warning("display works again after %d failed write(s): initialised and "
                    "redrawn", self.failures)
        self._fault = ""
        self.failures = 0
        self._retry = None
        self._changed()

    async def _redraw(self) -> bool:
        """One retry: write the newest screen, and again at once while newer ones come
        meanwhile. True when the newest screen is on the glass."""
        while True:
            wanted = self._wanted
            if wanted is None:
                return True
            problem = await self._write(wanted)
            if problem == STALE:
                continue  # the bus answers again: write the newest screen now
            if problem:
                log.debug("%s (still retrying)", problem)
                return False
            if wanted == self._wanted:
                return True

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def _answer(futures: list[asyncio.Future[bool]], ok: bool) -> None:
    for done in futures:
        if not done.done():
            done.set_result(ok)
