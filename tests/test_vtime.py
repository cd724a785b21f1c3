"""The virtual-time loop (tests/vtime.py), and runtime parts whose behaviour over minutes
and hours is tested on it: exact, in milliseconds of real time."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime

import pytest

from firmware.runtime.clock import LoopClock
from firmware.runtime.supervisor import Wake, supervise
from tests.vtime import run, virtual_loop


def test_a_long_sleep_takes_no_real_time() -> None:
    started = time.monotonic()
    _, elapsed = run(asyncio.sleep(3600))
    assert elapsed == pytest.approx(3600)
    assert time.monotonic() - started < 1.0


def test_timers_fire_in_order_at_their_virtual_times() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        for name, at in (("c", 30.0), ("a", 0.5), ("b", 2.0)):
            loop.call_later(at, lambda n=name: fired.append((n, loop.time())))
        await asyncio.sleep(31)
        return fired

    fired, _ = run(main())
    assert [n for n, _t in fired] == ["a", "b", "c"]
    assert [t for _n, t in fired] == pytest.approx([0.5, 2.0, 30.0])


def test_work_in_a_thread_is_waited_for_really() -> None:
    async def main() -> str:
        return await asyncio.to_thread(lambda: (time.sleep(0.05), "done")[1])

    result, _ = run(main())
    assert result == "done"


def test_the_loop_clock_moves_wall_time_with_virtual_time() -> None:
    async def main() -> tuple[datetime, datetime]:
        clock = LoopClock(asyncio.get_running_loop(), start=datetime(2026, 12, 7, 23, 59, 0))
        before = clock.local()
        await asyncio.sleep(120)
        return before, clock.local()

    (before, after), _ = run(main())
    assert (after - before).total_seconds() == pytest.approx(120)
    assert after.day == 8  # the date turned over in virtual time


def test_supervised_task_restarts_with_growing_backoff_then_afresh_when_healthy() -> None:
    """supervise(): a task failing in a row waits longer each time (full jitter under a
    doubling ceiling); one that ran `healthy_after` seconds starts its count afresh."""
    starts: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def flaky() -> None:
            starts.append(loop.time())
            if len(starts) == 6:  # a long healthy run, then a failure
                await asyncio.sleep(100)
            if len(starts) >= 8:
                await asyncio.sleep(10_000)
            raise RuntimeError("boom")

        task = asyncio.create_task(supervise("flaky", flaky, on_fatal=pytest.fail, base=1.0,
                                             cap=30.0, healthy_after=60.0,
                                             rng=random.Random(7), clock=loop.time))
        await asyncio.sleep(1000)
        task.cancel()

    run(main())
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    ceilings = [1.0, 2.0, 4.0, 8.0, 16.0]
    for gap, ceiling in zip(gaps[:5], ceilings, strict=True):
        assert 0 <= gap <= ceiling + 1e-9
    # the sixth run lasted 100 s (healthy): the next wait is under the first ceiling again
    assert gaps[5] - 100 <= ceilings[0] + 1e-9


def test_wake_sleeps_to_its_deadline_or_until_kicked() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        wake = Wake()
        t0 = loop.time()
        await wake.nap(3600)
        slept = loop.time() - t0
        loop.call_later(5, wake.kick)
        t1 = loop.time()
        await wake.nap(3600)
        return slept, loop.time() - t1

    (slept, kicked), _ = run(main())
    assert slept == pytest.approx(3600) and kicked == pytest.approx(5)


def test_real_io_still_works_on_virtual_time() -> None:
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return line

    line, _ = run(main())
    assert line == b"ping\n"


def test_virtual_loop_closes_cleanly() -> None:
    with virtual_loop() as loop:
        loop.run_until_complete(asyncio.sleep(1))
    assert loop.is_closed()
