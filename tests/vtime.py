"""An asyncio event loop on virtual time, for tests that wait on timers.

Modelled on trio's `MockClock(autojump_threshold=...)`: when every task is waiting
and no I/O has come within `JUMP_AFTER` of real time, the clock jumps straight to the
next timer instead of sleeping. A test of a 30 s backoff takes milliseconds, and what
it asserts about time is exact. Real I/O still works (loopback sockets answer well
within `JUMP_AFTER`); only waiting on timers is skipped. Threads are not virtual:
work handed to an executor takes real time, and the loop waits for it for real (a
short real poll), so a test mixing threads and timers stays correct, if not instant.
Input from another process (hwsim, a subprocess) or from a thread the loop did not
start is NOT waited for: after `JUMP_AFTER` without it the clock jumps, so such a
test must not run on this loop.

    with virtual_loop() as loop:
        loop.run_until_complete(main())
        loop.time()  # virtual seconds elapsed
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
from collections.abc import Iterator
from typing import Any

REAL_POLL = 0.005  # seconds the loop really waits when executor work may be pending
JUMP_AFTER = 0.002  # real seconds without I/O before the clock jumps to the next timer


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._vloop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)  # real I/O first, without waiting
        if ready or timeout == 0:
            return ready
        ready = super().select(JUMP_AFTER if timeout is None else min(timeout, JUMP_AFTER))
        if ready:
            return ready
        if self._vloop.real_work():  # a thread may answer: wait for it for real, briefly
            return super().select(REAL_POLL if timeout is None else min(timeout, REAL_POLL))
        if timeout is None:  # nothing scheduled and nothing to wait for: a real wait
            return super().select(REAL_POLL)
        self._vloop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        self._executor_jobs = 0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)

    def real_work(self) -> bool:
        return self._executor_jobs > 0

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        fut = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1

        def done(_f: object) -> None:
            self._executor_jobs -= 1
        fut.add_done_callback(done)
        return fut


@contextlib.contextmanager
def virtual_loop() -> Iterator[VirtualTimeLoop]:
    loop = VirtualTimeLoop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def run(coro: Any) -> tuple[Any, float]:
    """Run `coro` on virtual time: its result, and the virtual seconds it took."""
    with virtual_loop() as loop:
        result = loop.run_until_complete(coro)
        return result, loop.time()
