"""What the running terminal holds does not grow with its sales (bench/memory.py measures
the bytes; these count the structures, so they fail on a leak without timing anything).

- Sales through the real App in this process, against hwsim (as bench/memory.py drives
  them, each OK once the screen is on the glass): after a warm-up, a hundred more sales
  leave the same number of the firmware's own objects, asyncio tasks and futures alive,
  and no dict, list, set or deque alive before them 50 items longer.
- The display keeper's queue while the glass is slower than the screens asked for: the
  leak bench/memory.py measured (about a screen a sale, each holding its sale's record).
- The refused offline sales the runtime has told the core about: only those the journal
  has not yet marked announced are remembered.
"""

from __future__ import annotations

import asyncio
import gc
import pathlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any


from firmware.core.events import AdviceRefused, QueueChanged
from firmware.runtime.display import DisplayKeeper
from firmware.runtime.graph import Parts
from tests.rig import Rig

PAN = "4761739001010010"


class Census:
    """Live objects of the firmware's own classes, asyncio's tasks and futures, by type;
    and every container alive (dict, list, set, deque) with its length, held so that the
    next census can see which of them grew."""

    def __init__(self) -> None:
        gc.collect()
        self.counts: Counter[str] = Counter()
        self.sizes: list[tuple[Any, int]] = []
        # asyncio's heap of timers keeps a cancelled one until it is due, or until more
        # than half of at least 100 are cancelled: bounded by asyncio, not by the sales
        timers = getattr(asyncio.get_running_loop(), "_scheduled", None)
        seen: set[int] = set()
        for holder in gc.get_objects():
            # a dict of strings and numbers only is not tracked by the collector: it is
            # found through what holds it
            for obj in (holder, *(r for r in gc.get_referents(holder)
                                  if type(r) is dict and not gc.is_tracked(r))):
                if type(obj) in (dict, list, set, deque) and id(obj) not in seen and \
                        all(obj is not mine for mine in (self.sizes, seen, timers)):
                    seen.add(id(obj))
                    self.sizes.append((obj, len(obj)))
        self.counts = _alive()

    def grown(self, by: int) -> list[str]:
        """The containers of this census that hold at least `by` more items now."""
        return [f"{type(obj).__name__} of {len(obj)} (was {size}): {_sample(obj)}"
                for obj, size in self.sizes if len(obj) - size >= by]


def _sample(obj: Any) -> str:
    items = list(obj.items() if isinstance(obj, dict) else obj)[-3:]
    return repr(items)[:200]


def _alive() -> Counter[str]:
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        module = kind.__dict__.get("__module__", "")  # a metaclass's is a descriptor
        if (isinstance(module, str) and module.startswith(("firmware.", "drivers."))) or \
                kind in (asyncio.Task, asyncio.Future):
            counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


async def _sales(cfg_path: pathlib.Path, warmup: int, more: int) -> tuple[Census, Census]:
    from firmware import config as config_mod
    from firmware.core import machine as core
    from firmware.core.card import CardData
    from firmware.core.events import CardSwiped, KeyPressed
    from firmware.runtime.app import App
    from firmware.runtime.journal import Journal
    from firmware.runtime.vault import Vault
    from firmware.runtime.wiring import open_devices

    cfg = config_mod.load(str(cfg_path))
    state = pathlib.Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    journal = Journal(state / "journal.sqlite3", Vault.open(state / "card.key", create=True))
    devices = open_devices(cfg)
    app = App(cfg, devices, journal)
    stop = asyncio.Event()
    runner = asyncio.create_task(app.run(stop))

    async def until(test: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not test():
            assert not runner.done(), f"the app stopped while waiting for {what}"
            assert time.monotonic() < deadline, f"no {what}"
            await asyncio.sleep(0.001)

    def phase(wanted: Any) -> Callable[[], bool]:
        # and every screen handed to the display written, as a person sees it
        return lambda: (app.state is not None and app.state.phase == wanted
                        and not app.parts.display._queue)

    card = CardData(pan=PAN, expiry="3012", service_code="101",
                    track2=f"{PAN}=30121010000000000000")
    try:
        await until(lambda: phase(core.Phase.IDLE)() and app.monitor.state == "UP", "idle")
        counts = []
        for n in range(warmup + more + 1):
            if n in (warmup, warmup + more):
                counts.append(Census())
            if n == warmup + more:
                break
            for key in (*f"{10 + n % 90}00", "OK"):
                app.emit(KeyPressed(key))
            await until(phase(core.Phase.WAIT_CARD), "SWIPE CARD")
            app.emit(CardSwiped(card))
            await until(phase(core.Phase.RESULT), "the result")
            app.emit(KeyPressed("OK"))
            await until(phase(core.Phase.IDLE), "the idle screen")
        assert app.parts.link.outstanding == 0
    finally:
        stop.set()
        await runner
        devices.close()
        journal.close()
    return counts[0], counts[1]


def test_sales_leave_nothing_behind_in_the_running_terminal(tmp_path: pathlib.Path) -> None:
    rig = Rig(tmp_path, overrides={"operator": {"duplicate_minutes": 0}})
    try:
        rig.start_sim()
        rig.write_config()
        before, after = asyncio.run(_sales(rig.config_path, warmup=20, more=100))
    finally:
        rig.stop()
    # a hundred sales: anything kept per sale (a record, a screen, a task, a future, an
    # entry of a dict keyed by sale or STAN) shows as about a hundred more
    grown = {k: after.counts[k] - before.counts[k] for k in after.counts
             if after.counts[k] - before.counts[k] > 2}
    assert not grown, f"alive after 100 more sales, more than before: {grown}"
    containers = before.grown(50)
    assert not containers, f"grown by 50 or more in 100 sales: {containers}"


# -- the display keeper while the glass is slower than the screens -----------------------

class SlowDisplay:
    """A DisplayPort whose writes wait for `go`: a bus slower than the screens asked for."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.shown: list[tuple[str, ...]] = []

    def show(self, rows: Sequence[str]) -> None:
        self.go.wait(30)
        self.shown.append(tuple(rows))

    def close(self) -> None:
        pass


def test_display_keeper_holds_a_bounded_number_of_screens_while_the_glass_is_slow() -> None:
    async def run() -> tuple[int, list[tuple[str, ...]], list[bool]]:
        display = SlowDisplay()
        pool = ThreadPoolExecutor(1)
        keeper = DisplayKeeper(display, pool, stall=60.0)
        try:
            futures = [keeper.submit([f"SCREEN {n}", "", "", ""]) for n in range(50)]
            for _ in range(5):
                await asyncio.sleep(0)  # the writer starts its first write, which waits
            held = len(keeper._queue)
            display.go.set()
            answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
            return held, display.shown, answers
        finally:
            keeper.close()
            pool.shutdown()

    held, shown, answers = asyncio.run(run())
    assert shown[-1][0] == "SCREEN 49" and all(isinstance(a, bool) for a in answers)
    assert held <= 2, f"{held} screens held for a display that is slow"
    assert shown == [("SCREEN 0", "", "", ""), ("SCREEN 49", "", "", "")], shown
    assert all(answers), answers  # each future answers with the screen that stood for it


# -- refused offline sales told to the core ----------------------------------------------

def _record(sale_id: int) -> Any:
    return SimpleNamespace(sale_id=sale_id)


def test_refused_sales_are_remembered_only_until_the_journal_has_them_announced() -> None:
    unannounced: list[int] = []
    emitted: list[object] = []
    journal = SimpleNamespace(
        queue_stats=lambda: None,
        unannounced_refusals=lambda: [(n, _record(n)) for n in unannounced])
    parts = SimpleNamespace(emit=emitted.append, journal=journal, _announced=set())

    def changed() -> list[int]:
        emitted.clear()
        Parts.queue_changed(parts)  # type: ignore[arg-type]
        assert isinstance(emitted[0], QueueChanged)
        return [e.record.sale_id for e in emitted[1:] if isinstance(e, AdviceRefused)]

    for sale in range(1, 501):
        unannounced.append(sale)
        assert changed() == [sale]  # told once, while the journal has it unannounced
        assert changed() == []
        unannounced.remove(sale)  # its slip printed: the journal marks it announced
        changed()
    assert parts._announced == set()
