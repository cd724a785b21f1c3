"""Footprint: the journal's work per sale, RSS idle and RSS growth over many sales.

Two measurements, each printed with min / median / max over its runs:

1. RSS idle: posterm started as its own process against hwsim (as systemd starts
   it), left idle for a few seconds after READY; VmRSS from /proc, split into
   anonymous memory and mapped files (shared libraries, mostly).
2. Sales: the real App (firmware/runtime/app.py) in this process, with the real
   devices of `wiring.open_devices` talking to hwsim (display over its I2C socket,
   printer over TCP, the acquirer host on loopback) and the real journal in a new
   state directory. Each sale is the events the keypad and the card reader would
   send (amount, OK, a swipe, OK on the result screen); the App does the rest
   (journal, host, display, receipt). Reported: SQL statements and transactions
   the journal ran per sale (sqlite3's trace callback), fsyncs per sale (each
   transaction is one WAL fsync with synchronous=FULL) and the process's RSS
   growth from the end of a warm-up to the last sale, so that the first-use costs
   (imports, code paths run once, the escpos stack on the first receipt) are not
   counted as growth. hwsim runs in its own process and is not in the figures.

    .venv/bin/python bench/memory.py [--sales 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from array import array
import logging
import pathlib
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rig import Rig, _env  # noqa: E402

CARD_PAN = "4761739001010010"
WARMUP = 200  # sales before the first RSS reading


def rss_kb(pid: int | str = "self") -> dict[str, int]:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"(VmRSS|RssAnon|RssFile|VmHWM):\s+(\d+) kB", text)}


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return (f"min {fmt.format(min(values))} / median {fmt.format(statistics.median(values))}"
            f" / max {fmt.format(max(values))}")


# -- 1. RSS idle: posterm as a process -------------------------------------------------
def idle_rss(rig: Rig, settle: float) -> dict[str, int]:
    shutil.rmtree(rig.state_dir, ignore_errors=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = rig.tmp / "notify.sock"
    path.unlink(missing_ok=True)
    notify.bind(str(path))
    notify.settimeout(30)
    log = open(rig.log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "--config", str(rig.config_path)],
                            env=_env({"NOTIFY_SOCKET": str(path)}), stdout=subprocess.DEVNULL,
                            stderr=log)
    try:
        while "READY=1" not in notify.recv(4096).decode():
            pass
        time.sleep(settle)
        return rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        notify.close()


# -- 2. sales through the real App, in this process -------------------------------------
class SqlCount:
    """Statements the journal's connection runs (sqlite3 trace callback): by kind, by the
    runtime module that asked (the first caller outside the journal), and the commits
    that wait for an fsync (synchronous=FULL at the time of the COMMIT)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.kinds: Counter[str] = Counter()
        self._full = True
        db.set_trace_callback(self._seen)

    def _seen(self, sql: str) -> None:
        words = sql.split()
        word = words[0].upper() if words else "?"
        self.kinds[word] += 1
        if word == "PRAGMA" and "synchronous" in sql.lower():
            self._full = sql.upper().rstrip(" ;").endswith("FULL")
        if word == "COMMIT" and self._full:
            self.kinds["fsync"] += 1
        frame = sys._getframe(1)
        while frame is not None and (frame.f_code.co_filename.endswith(
                ("/journal.py", "/journal_base.py", "/journal_queues.py", "/journal_void.py",
                 "/journal_batch.py", "contextlib.py"))):
            frame = frame.f_back  # type: ignore[assignment]
        who = pathlib.Path(frame.f_code.co_filename).stem if frame is not None else "?"
        self.kinds[f"by {who}"] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.kinds)


async def run_sales(cfg_path: pathlib.Path, sales: int,
                    report: Callable[[str], None]) -> dict[str, float]:
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
    sql = SqlCount(journal.db)
    devices = open_devices(cfg)
    app = App(cfg, devices, journal)
    stop = asyncio.Event()
    runner = asyncio.create_task(app.run(stop))

    async def until(test: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not test():
            if runner.done():
                runner.result()
                raise RuntimeError(f"the app stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what} "
                                   f"(phase {app.state.phase if app.state else None})")
            await asyncio.sleep(0.0005)

    def phase() -> object:
        return app.state.phase if app.state is not None else None

    await until(lambda: phase() == core.Phase.IDLE and app.monitor.state == "UP", "online idle")
    card = CardData(pan=CARD_PAN, expiry="3012", service_code="101",
                    track2=f"{CARD_PAN}=30121010000000000000")
    # preallocated, so that the bench's own records do not grow with the sales
    statements, commits, fsyncs = (array("i", bytes(4 * sales)) for _ in range(3))
    kinds: Counter[str] = Counter()
    start_rss = end_rss = 0
    t0 = time.monotonic()
    for n in range(sales):
        if n == WARMUP or (n == 0 and sales <= WARMUP):
            gc.collect()
            start_rss = rss_kb()["VmRSS"]
        before = sql.snapshot()
        # amounts vary, ending in 00 (hwsim's host answers 05, 51, 91... by the last two
        # digits; the duplicate guard is off in this configuration anyway)
        for key in (*f"{10 + n % 90}00", "OK"):
            app.emit(KeyPressed(key))
        await until(lambda: phase() == core.Phase.WAIT_CARD, "SWIPE CARD")
        app.emit(CardSwiped(card))
        await until(lambda: phase() == core.Phase.RESULT, "the result screen")
        app.emit(KeyPressed("OK"))
        await until(lambda: phase() == core.Phase.IDLE, "the idle screen")
        sale = sql.snapshot() - before
        statements[n] = sum(v for k, v in sale.items() if k.isupper())
        commits[n], fsyncs[n] = sale["COMMIT"], sale["fsync"]
        if n >= min(WARMUP, sales - 1):
            kinds.update(sale)
        if (n + 1) % 1000 == 0:
            report(f"    {n + 1} sales, {time.monotonic() - t0:.0f} s, "
                   f"RSS {rss_kb()['VmRSS'] / 1024:.1f} MB")
    gc.collect()
    end_rss = rss_kb()["VmRSS"]
    stop.set()
    await runner
    devices.close()
    steady = sales - min(WARMUP, sales - 1)
    journal.close()
    return {
        "statements": statistics.median(statements),
        "statements_max": max(statements),
        "transactions": statistics.median(commits),
        "fsyncs": statistics.median(fsyncs),
        "kinds": {k: v / steady for k, v in sorted(kinds.items())},  # type: ignore[dict-item]
        "rss_start": start_rss / 1024,
        "rss_end": end_rss / 1024,
        "growth": (end_rss - start_rss) / 1024,
        "seconds": time.monotonic() - t0,
    }


def fsync_floor(folder: pathlib.Path, count: int = 200) -> float:
    """The median time of one fsync of a small write in `folder` (the journal's floor)."""
    path = folder / "fsync.probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(count):
            f.write(b"x" * 4096)
            f.flush()
            t = time.perf_counter()
            import os
            os.fsync(f.fileno())
            times.append(time.perf_counter() - t)
    path.unlink()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=10_000,
                        help="sales for the RSS growth (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="idle RSS runs (default 3)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds idle after READY before reading RSS")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # the App's sale log lines, not figures
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="posterm-bench-memory-"))
    rig = Rig(tmp, overrides={"operator": {"duplicate_minutes": 0}})
    try:
        rig.start_sim()
        rig.write_config()
        idle = [idle_rss(rig, args.settle) for _ in range(args.runs)]
        print(f"RSS idle, posterm as a process, {args.settle:g} s after READY=1 "
              f"({args.runs} runs; goal <= 40 MB):")
        for key, label in (("VmRSS", "RSS"), ("RssAnon", "  anonymous"),
                           ("RssFile", "  mapped files")):
            print(f"  {label:14s} {spread([r[key] / 1024 for r in idle])} MB")
        shutil.rmtree(rig.state_dir, ignore_errors=True)
        floor = fsync_floor(tmp)
        print(f"sales through the real App in this process, devices and host in hwsim "
              f"({args.sales} sales, RSS measured after {min(WARMUP, args.sales)}):", flush=True)
        res = asyncio.run(run_sales(rig.config_path, args.sales,
                                    lambda line: print(line, flush=True)))
        kinds = res["kinds"]
        assert isinstance(kinds, dict)
        by_kind = ", ".join(f"{k} {v:.1f}" for k, v in kinds.items() if k.isupper())
        by_who = ", ".join(f"{k[3:]} {v:.1f}" for k, v in kinds.items() if k.startswith("by "))
        print(f"  SQL statements per sale: median {res['statements']:.0f} "
              f"(max {res['statements_max']:.0f})")
        print(f"    by kind (mean): {by_kind}")
        print(f"    asked by (mean): {by_who}")
        print(f"  transactions per sale: median {res['transactions']:.0f}, of which waiting "
              f"for an fsync {res['fsyncs']:.0f}; x measured fsync floor "
              f"{floor * 1000:.2f} ms = {res['fsyncs'] * floor * 1000:.2f} ms per sale")
        print(f"  RSS {res['rss_start']:.1f} MB after warm-up -> {res['rss_end']:.1f} MB after "
              f"{args.sales} sales: growth {res['growth']:+.2f} MB (goal <= 1 MB over 10,000) "
              f"in {res['seconds']:.0f} s")
    finally:
        rig.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
