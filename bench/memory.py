"""Footprint: the journal's work per sale, RSS idle and RSS growth over many sales.

Two measurements, each printed with min / median / max over its runs:

1. RSS idle: posterm started as its own process against hwsim (as systemd starts
   it), left idle for a few seconds after READY; VmRSS from /proc, split into
   anonymous memory and mapped files (shared libraries, mostly).
2. Sales: the real App (firmware/runtime/app.py) in this process, with the real
   devices of `wiring.open_devices` talking to hwsim (display over its I2C socket,
   printer over TCP, the acquirer host on loopback) and the real journal in a new
   state directory. Each sale is the events the keypad and the card reader would
   send (amount, OK, a swipe, OK on the result screen once it is on the glass); the
   App does the rest (journal, host, display, receipt). Reported: SQL statements and
   transactions the journal ran per sale (sqlite3's trace callback), fsyncs per sale
   (each transaction is one WAL fsync with synchronous=FULL) and the process's memory
   every 1,000 sales from the end of a warm-up, so that the first-use costs (imports,
   code paths run once, the escpos stack on the first receipt) are not counted as
   growth: RSS (anonymous, mapped files), glibc's heap (in use; free inside its
   arenas; arenas), the Python heap's blocks, SQLite's own counters (sqlite3_status,
   the journal's page cache and statements) and the WAL and its index on disk. After
   the first 2,000 sales the growth of each 1,000 is printed, so that a slow leak
   cannot hide in a step. Then `--traced` more sales run under tracemalloc (kept out
   of the figures: its bookkeeping is in the RSS) and the Python heap's growth over
   them is printed by line. hwsim runs in its own process and is not in the figures.

    .venv/bin/python bench/memory.py [--sales 10000] [--runs 3] [--traced 1000]
                                     [--outrun-display]

About 2.5 minutes on the 2-core development machine under others' load (10,000 sales
at 11-13 s per 1,000, 1,000 traced ones, three idle starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
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
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.runtime.journal_base import CACHE_KIB  # noqa: E402
from tests.rig import Rig, _env  # noqa: E402

CARD_PAN = "4761739001010010"
WARMUP = 200  # sales before the first RSS reading
STEP = 1000  # sales between two samples
SETTLED = 2000  # growth is reported per step after this many sales


def waiter(app: Any, runner: asyncio.Task[Any]) -> Callable[..., Awaitable[None]]:
    """`await until(test, what)`: wait for `test()` to hold while the App in this process
    runs (`runner`), failing with `what` when it stops or 30 s (`timeout`) pass
    (bench/sale.py's in-process sales use it too)."""
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
    return until

def rss_kb(pid: int | str = "self") -> dict[str, int]:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(
        r"(VmRSS|RssAnon|RssFile|RssShmem|VmHWM):\s+(\d+) kB", text)}


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


class Probe:
    """What this process holds, by who holds it: RSS (anonymous, mapped files, shared),
    glibc's heap (in use, free inside its arenas, the arenas' count), the Python heap's
    allocated blocks (sys.getallocatedblocks) and SQLite's own counters
    (sqlite3_status: its memory, page cache overflow, allocations; sqlite3_db_status of
    the journal's connection: page cache and prepared statements), the WAL and its
    index (-shm, mapped) on disk. SQLite's are read through ctypes on the libsqlite3
    Python's sqlite3 module loaded."""

    def __init__(self, db: sqlite3.Connection, path: pathlib.Path) -> None:
        self.db, self.path = db, path
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self.libc.mallinfo2.restype = _Mallinfo2
        self.libc.fopen.restype = ctypes.c_void_p
        self.libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        self.libc.fclose.argtypes = [ctypes.c_void_p]
        self.libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        lib = next((line.split()[-1] for line in pathlib.Path("/proc/self/maps").read_text()
                    .splitlines() if "libsqlite3" in line), "libsqlite3.so.0")
        self.sqlite = ctypes.CDLL(lib)
        # the sqlite3* of the connection: the first member after PyObject_HEAD in CPython's
        # pysqlite_Connection, used only once SQLite names the journal's file for it
        handle = ctypes.c_void_p.from_address(id(db) + 2 * ctypes.sizeof(ctypes.c_void_p))
        self.sqlite.sqlite3_db_filename.restype = ctypes.c_char_p
        self.sqlite.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        named = self.sqlite.sqlite3_db_filename(handle, b"main") if handle.value else None
        self.handle = handle if named and pathlib.Path(named.decode()).samefile(path) else None

    def _status(self, op: int) -> int:
        cur, high = ctypes.c_int64(), ctypes.c_int64()
        self.sqlite.sqlite3_status64(op, ctypes.byref(cur), ctypes.byref(high), 0)
        return cur.value

    def _db_status(self, op: int) -> int:
        cur, high = ctypes.c_int(), ctypes.c_int()
        if self.handle is None or self.sqlite.sqlite3_db_status(self.handle, op, ctypes.byref(cur),
                                         ctypes.byref(high), 0):
            return -1
        return cur.value

    def _arenas(self) -> int:
        out = self.path.parent / "malloc_info.xml"
        fp = self.libc.fopen(str(out).encode(), b"w")
        self.libc.malloc_info(0, fp)
        self.libc.fclose(fp)
        text = out.read_text()
        out.unlink()
        return text.count("<heap nr=")

    @staticmethod
    def _size(path: pathlib.Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def sample(self) -> dict[str, int]:
        gc.collect()  # what cycles hold until the next full collection is not a leak
        rss = rss_kb()
        info = self.libc.mallinfo2()
        return {
            "rss": rss["VmRSS"] * 1024, "anon": rss["RssAnon"] * 1024,
            "file": rss["RssFile"] * 1024, "shmem": rss["RssShmem"] * 1024,
            "heap_used": info.uordblks + info.hblkhd, "heap_free": info.fordblks,
            "arenas": self._arenas(), "blocks": sys.getallocatedblocks(),
            "t": time.monotonic(),
            "sqlite": self._status(0), "sqlite_overflow": self._status(2),
            "sqlite_mallocs": self._status(9),
            "cache": self._db_status(1), "stmts": self._db_status(3),
            "wal": self._size(self.path.with_name(self.path.name + "-wal")),
            "shm": self._size(self.path.with_name(self.path.name + "-shm")),
        }


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
        # the file's name by plain string operations: a pathlib.Path made and dropped for
        # each statement interns its parts and frees them again, and the churn resizes the
        # interpreter's table of interned strings now and then (a 1.8 MB block that
        # tracemalloc took for growth)
        who = (frame.f_code.co_filename.rsplit("/", 1)[-1].removesuffix(".py")
               if frame is not None else "?")
        self.kinds[f"by {who}"] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.kinds)


# the figures printed every STEP sales: (key of Probe.sample, label)
SHOWN = (("rss", "RSS"), ("anon", "anon"), ("file", "files"), ("heap_used", "malloc in use"),
         ("heap_free", "free in arenas"), ("sqlite", "SQLite"), ("wal", "WAL"), ("shm", "shm"))


async def run_sales(cfg_path: pathlib.Path, sales: int, report: Callable[[str], None],
                    traced: int = 0, glass: bool = True) -> dict[str, object]:
    """`sales` measured, then `traced` more under tracemalloc (its bookkeeping is in the
    process's RSS, so it is kept out of the measured ones)."""
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

    until = waiter(app, runner)

    def phase() -> object:
        return app.state.phase if app.state is not None else None

    def on_glass() -> bool:
        """Every screen handed to the display is written (its keeper's queue is empty)."""
        return not glass or not app.parts.display._queue

    await until(lambda: phase() == core.Phase.IDLE and app.monitor.state == "UP", "online idle")
    card = CardData(pan=CARD_PAN, expiry="3012", service_code="101",
                    track2=f"{CARD_PAN}=30121010000000000000")
    # preallocated, so that the bench's own records do not grow with the sales
    total = sales + traced
    statements, commits, fsyncs = (array("i", bytes(4 * total)) for _ in range(3))
    kinds: Counter[str] = Counter()
    probe = Probe(journal.db, journal.path)
    samples: dict[int, dict[str, int]] = {}
    snapshots: dict[int, tracemalloc.Snapshot] = {}
    first = min(WARMUP, sales - 1)
    # tracemalloc from the end of the measured sales; its first snapshot a tenth into the
    # traced ones (so what the sales churn is in both), its second at the end
    marks = (sales + traced // 10, total) if traced >= 10 else ()
    t0 = time.monotonic()
    for n in range(total):
        if n == first:
            samples[n] = probe.sample()
        if n == sales and marks:
            tracemalloc.start(1)
        before = sql.snapshot()
        # amounts vary, ending in 00 (hwsim's host answers 05, 51, 91... by the last two
        # digits; the duplicate guard is off in this configuration anyway)
        for key in (*f"{10 + n % 90}00", "OK"):
            app.emit(KeyPressed(key))
        await until(lambda: phase() == core.Phase.WAIT_CARD, "SWIPE CARD")
        app.emit(CardSwiped(card))
        # a person presses OK once the result is on the glass, and starts the next sale
        # once the idle screen is: without these waits the sales outran hwsim's display
        # (a control-socket round trip per I2C write) and its queue of screens to write
        # grew by about one screen a sale, which this benchmark took for a leak
        await until(lambda: phase() == core.Phase.RESULT and on_glass(), "the result screen")
        app.emit(KeyPressed("OK"))
        await until(lambda: phase() == core.Phase.IDLE and on_glass(), "the idle screen")
        sale = sql.snapshot() - before
        statements[n] = sum(v for k, v in sale.items() if k.isupper())
        commits[n], fsyncs[n] = sale["COMMIT"], sale["fsync"]
        if first <= n < sales:
            kinds.update(sale)
        if n + 1 in marks:
            gc.collect()
            snapshots[n + 1] = tracemalloc.take_snapshot()
        if n < sales and ((n + 1) % STEP == 0 or n + 1 == sales):
            samples[n + 1] = sample = probe.sample()
            report(f"    {n + 1} sales, {sample['t'] - t0:.0f} s, "
                   + ", ".join(f"{label} {sample[key] / 2**20:.2f}" for key, label in SHOWN)
                   + f" MB; blocks {sample['blocks']}, arenas {sample['arenas']}, "
                   f"screens queued {len(app.parts.display._queue)}, "
                   f"tasks {len(asyncio.all_tasks())}")
    t_end = time.monotonic()
    stop.set()
    await runner
    devices.close()
    steady = sales - first
    journal.close()
    growers: list[tracemalloc.StatisticDiff] = []
    if len(snapshots) == 2:
        own = (tracemalloc.Filter(False, tracemalloc.__file__),)
        old, new = (snapshots[k].filter_traces(own) for k in sorted(snapshots))
        growers = new.compare_to(old, "lineno")
        tracemalloc.stop()
    return {
        "statements": statistics.median(statements[:sales]),
        "statements_max": max(statements[:sales]),
        "transactions": statistics.median(commits[:sales]),
        "fsyncs": statistics.median(fsyncs[:sales]),
        "kinds": {k: v / steady for k, v in sorted(kinds.items())},  # type: ignore[dict-item]
        "samples": samples,  # type: ignore[dict-item]
        "growers": growers,  # type: ignore[dict-item]
        "snapshots": sorted(snapshots),  # type: ignore[dict-item]
        "seconds": samples[max(samples)]["t"] - samples[first]["t"],
        "traced_seconds": t_end - samples[max(samples)]["t"],
    }


@contextlib.contextmanager
def journal_sink(folder: pathlib.Path) -> Iterator[None]:
    """The App's log lines at INFO through the firmware's own journald handler (as under
    systemd, so that their cost is in the figures), to a datagram socket here whose
    messages a thread reads and drops."""
    from firmware.runtime.journald import JournalHandler

    path = folder / "journal.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    sink.settimeout(0.5)
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                sink.recv(65536)
            except (TimeoutError, OSError):
                pass

    reader = threading.Thread(target=drain, name="journal-sink", daemon=True)
    reader.start()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = JournalHandler(str(path))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        handler.close()
        done.set()
        reader.join()
        sink.close()


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


def print_growth(res: dict[str, object]) -> None:
    samples = res["samples"]
    assert isinstance(samples, dict)
    marks = sorted(samples)
    first, last = marks[0], marks[-1]

    def mb(key: str, a: int, b: int) -> float:
        return (samples[b][key] - samples[a][key]) / 2**20

    print(f"  RSS {samples[first]['rss'] / 2**20:.1f} MB after {first} sales -> "
          f"{samples[last]['rss'] / 2**20:.1f} MB after {last}: "
          f"{mb('rss', first, last):+.2f} MB in {res['seconds']:.0f} s (goal <= 1 MB over "
          "10,000 sales)")
    settled = [m for m in marks if m >= min(SETTLED, last)]
    if len(settled) > 1:
        print(f"  growth per {STEP:,} sales after the first {settled[0]:,}, MB (blocks: "
              "the Python heap's, in thousands):")
        print("    sales           RSS    anon   files  malloc  arenas  blocks  SQLite  WAL+shm")
        # the first row: the warm-up's fill (caches reaching their bounds), for comparison
        for a, b in zip([first, *settled], settled, strict=False):
            blocks = (samples[b]["blocks"] - samples[a]["blocks"]) / 1000
            label = f"{a}-{b}" + ("*" if a == first else "")
            print(f"    {label:<13} {mb('rss', a, b):+7.2f} {mb('anon', a, b):+7.2f} "
                  f"{mb('file', a, b):+7.2f} {mb('heap_used', a, b):+7.2f} "
                  f"{mb('heap_free', a, b):+7.2f} {blocks:+7.1f} "
                  f"{mb('sqlite', a, b):+7.2f} {mb('wal', a, b) + mb('shm', a, b):+7.2f}")
        a, b = settled[0], settled[-1]
        steps = [mb("rss", x, y) for x, y in zip(settled, settled[1:], strict=False)]
        print(f"    total {a:,}-{b:,}: RSS {mb('rss', a, b):+.2f} MB"
              + (f" (x {10_000 / (b - a):.2f} = {mb('rss', a, b) * 10_000 / (b - a):+.2f} MB "
                 "per 10,000 sales)" if b - a != 10_000 else "")
              + f", largest step {max(steps):+.2f} MB; goal <= 1 MB over 10,000 sales")
        print("    (* filling up, not counted in the steps; malloc: glibc's blocks in use; "
              "arenas: the free space glibc keeps inside its arenas)")
    end = samples[last]
    print(f"  at {last:,} sales: SQLite {end['sqlite'] / 2**20:.2f} MB (the journal's page "
          f"cache {end['cache'] / 2**10:.0f} KiB, capped at {CACHE_KIB} KiB; its statements "
          f"{end['stmts'] / 2**10:.0f} KiB; {end['sqlite_mallocs']:,} allocations), "
          f"WAL {end['wal'] / 2**10:,.0f} KiB, shm {end['shm'] / 2**10:.0f} KiB; glibc "
          f"{end['arenas']} arenas, {end['heap_used'] / 2**20:.2f} MB in use, "
          f"{end['heap_free'] / 2**20:.2f} MB free in them")
    growers = res["growers"]
    assert isinstance(growers, list)
    if growers:
        a, b = res["snapshots"]  # type: ignore[misc]
        held = sum(stat.size_diff for stat in growers)
        print(f"  Python heap under tracemalloc, sales {a:,} to {b:,} ({res['traced_seconds']:.0f}"
              f" s, not in the figures above): {held / 1024:+.1f} KiB held; largest by line:")
        for stat in sorted(growers, key=lambda st: -abs(st.size_diff))[:6]:
            frame = stat.traceback[0]
            where = pathlib.Path(frame.filename)
            short = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where.name
            print(f"    {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks  "
                  f"{short}:{frame.lineno}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=10_000,
                        help="sales for the RSS growth (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="idle RSS runs (default 3)")
    parser.add_argument("--traced", type=int, default=1000,
                        help="sales run after the measured ones under tracemalloc, whose "
                             "growth by line is printed (default 1000; 0: none)")
    parser.add_argument("--outrun-display", action="store_true",
                        help="press the keys as soon as the core is in the phase, without "
                             "waiting for the screen on the glass (as this benchmark did "
                             "before: the display keeper's queue grows)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds idle after READY before reading RSS")
    args = parser.parse_args()
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
        with journal_sink(tmp):
            res = asyncio.run(run_sales(rig.config_path, args.sales,
                                        lambda line: print(line, flush=True), args.traced,
                                        not args.outrun_display))
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
        print_growth(res)
    finally:
        rig.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
