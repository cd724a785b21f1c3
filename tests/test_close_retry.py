"""A close cut short after its upload is asked for again every minute, as the README says
("asked again at start and then every minute"), never as soon as its result screen has
gone: the real close engine and schedule (firmware/runtime/batch.py), the real host link
and journal, against the simulated host in the same event loop, on virtual time
(tests/vtime.py), so the interval asserted is exact and takes no real minute.

The host answers the 920000 with 95, takes the upload, and never answers a 960000: each
close ends NO ANSWER with its 960000 sent and nothing new uploaded (host-interface.md
4, 0500: "A 960000 without an answer is tried again as a new 0500 ... with no new
upload").
"""

from __future__ import annotations

import asyncio
import pathlib
from datetime import datetime

import pytest

from firmware.config import HostConfig
from firmware.core.events import CloseDue, CloseFinished, Event, HostAnswered
from firmware.core.model import SaleRequest
from firmware.runtime.authorizer import Authorizer
from firmware.runtime.batch import CloseEngine, CloseSchedule
from firmware.runtime.clock import LoopClock
from firmware.runtime.hostlink import HostLink
from firmware.runtime.journal import Journal
from firmware.runtime.vault import Vault
from hwsim.host import AcquirerHost
from tests import vtime
from tests.test_batch import CARD, CORE, IDENT

RESPONSE_TIMEOUT = 2.0
RESULT_SCREEN = 1.0  # the close's result screen, then idle: the app kicks the schedule


def test_a_960000_without_an_answer_is_asked_again_a_minute_after_the_close_ended(
        tmp_path: pathlib.Path) -> None:
    async def main() -> tuple[list[float], list[tuple[float, CloseFinished]], list[str]]:
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop, start=datetime(2026, 3, 2, 10, 0))
        host = AcquirerHost(rng_seed=3)
        port = await host.start()
        journal = Journal(tmp_path / "journal.sqlite3",
                          Vault.open(tmp_path / "card.key", create=True))
        cfg = HostConfig(host="127.0.0.1", port=port, tls=False, connect_timeout=1.0,
                         response_timeout=RESPONSE_TIMEOUT)
        link = HostLink(cfg, IDENT, journal.allocate_stan, clock=clock)
        auth = Authorizer(journal, link, IDENT, RESPONSE_TIMEOUT, before_request=lambda: None,
                          reversal_recorded=lambda: None, clock=clock)
        answered = await auth.authorize(SaleRequest(kind="purchase", amount=1000, card=CARD,
                                                    local=clock.local()), None)
        assert isinstance(answered, HostAnswered)
        host.force_out_of_balance(1)  # the 920000: 95, so the batch is uploaded
        host.add_fault("delay", count=1, mti="0500", seconds=0.0)  # taken by the 920000
        host.add_fault("swallow", count=0, mti="0500")  # every 960000: no answer

        finished: list[tuple[float, CloseFinished]] = []
        asks: list[float] = []
        closing: list[asyncio.Task[None]] = []

        def emit(event: Event) -> None:
            if isinstance(event, CloseFinished):
                finished.append((loop.time(), event))
                # the result screen, then idle: the app kicks the schedule (app.py)
                loop.call_later(RESULT_SCREEN, schedule.kick)
            elif isinstance(event, CloseDue):  # the core, idle, starts the close it asks
                asks.append(loop.time())
                closing.append(asyncio.create_task(engine.run()))

        async def flush() -> None:
            return None

        async def print_z(batch: int, lines: tuple[str, ...]) -> bool:
            return True

        engine = CloseEngine(journal, link, cfg, CORE, emit=emit, flush=flush,
                             kick=lambda: None, print_z=print_z, clock=clock.local,
                             monotonic=clock.monotonic)
        schedule = CloseSchedule("", idle=lambda: not engine.running, emit=emit,
                                 in_progress=lambda: journal.close_in_progress() is not None,
                                 running=lambda: engine.running, ended=lambda: engine.ended,
                                 last_day=lambda: "", clock=clock.local,
                                 monotonic=clock.monotonic)
        ticking = asyncio.create_task(schedule.run())
        await engine.run()  # from the menu: CLOSE BATCH? OK
        await asyncio.sleep(140)
        ticking.cancel()
        for task in closing:
            await task
        pcodes = [m["fields"].get("3") for m in host.messages() if m["mti"] == "0500"]
        uploads = sum(1 for m in host.messages() if m["mti"] in ("0320", "0321"))
        await link.close()
        await host.stop()
        journal.close()
        assert uploads == 1  # one transaction, uploaded once: no new upload on a retry
        return asks, finished, pcodes

    (asks, finished, pcodes), _ = vtime.run(main())
    assert [f.message for _t, f in finished] == ["NO ANSWER"] * len(finished)
    assert pcodes == ["920000"] + ["960000"] * len(finished)
    ended = [t for t, _f in finished]
    # each ask a minute after the close before it ended (README: "every minute"), none
    # when its result screen went (the old behaviour: about a second after)
    assert len(asks) == 2 and len(ended) == 3
    assert asks == pytest.approx([ended[0] + 60.0, ended[1] + 60.0], abs=0.01)
    # each close itself is its 960000's wait: the response timeout
    assert [e - a for a, e in zip(asks, ended[1:], strict=True)] == pytest.approx(
        [RESPONSE_TIMEOUT, RESPONSE_TIMEOUT], abs=0.1)
