"""Store-and-forward upload benchmark: 1,000 offline sales queued, then the host comes back.

Fills a real journal (SQLite, WAL, synchronous=FULL) with N offline approvals —
each with its advice and AES-GCM-sealed card data, written as the firmware
writes them — then starts the simulated acquirer host and runs the firmware's
real Forwarder over a real HostLink until every advice is accepted, and checks
that the host charged each sale exactly once.

Each case runs several times on a fresh journal and prints min / median / max:

- 0 ms, host in this process: the host shares the event loop (and the CPU) with
  the forwarder, as this benchmark always did; its decoding and encoding count.
- 0 ms, host in its own process: as on a terminal, where the host is elsewhere.
- 100 ms round trip (all of it on the answer: `AcquirerHost(latency=0.1)`, what
  `hwsim ctl host-latency --seconds 0.1` sets), host in its own process.
- the same with `[host] advice_window = 1`, one advice at a time, as before
  pipelining (at 0 ms only unless --slow: at 100 ms it takes 100 s and more).

Next to each figure, what bounds it: the fsync'd journal transactions per advice
times the fsync measured here, and at a round trip, the pipelining floor
(advices / window x round trip).

Then the batch upload (host-interface.md 4, 0320): 500 sales approved online (made
through the real Authorizer, not timed), the host told to answer the close 95, and
the real CloseEngine's close timed from its start to its end: 0500 920000, the 500
0320s pipelined up to the same window, 0500 960000; at 0 ms and at the 100 ms round
trip (the host's `latency`, as above; in this process, since its ledger must know
the sales), each checked in balance with every sale uploaded once. Goal: <= 5 s at
100 ms; its floor: 500 / window x round trip, plus the two 0500s' round trips.

    ./run bench            or      .venv/bin/python bench/upload.py --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.config import HostConfig  # noqa: E402
from firmware.core import iso  # noqa: E402
from firmware.core.card import CardData  # noqa: E402
from firmware.core.events import CloseFinished, Event, HostAnswered  # noqa: E402
from firmware.core.model import CoreConfig, SaleRequest  # noqa: E402
from firmware.runtime.authorizer import Authorizer  # noqa: E402
from firmware.runtime.batch import CloseEngine  # noqa: E402
from firmware.runtime.forwarder import Forwarder  # noqa: E402
from firmware.runtime.hostlink import HostLink  # noqa: E402
from firmware.runtime.journal import Journal  # noqa: E402
from firmware.runtime.vault import Vault  # noqa: E402
from hwsim.host import AcquirerHost  # noqa: E402

IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")
CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101", track2="")


@dataclass
class Run:
    seconds: float
    transactions: int  # fsync'd journal transactions during the upload
    charged: int
    left: int  # advices still pending, plus sealed card data left
    cpu: float  # this process's CPU seconds during the upload


def fill(journal: Journal, count: int) -> float:
    start = time.perf_counter()
    for n in range(count):
        local = datetime(2026, 11, 23, 12, 0, 0)
        amount = 100 + n
        fields = iso.sale_fields(IDENT, card=CARD, amount=amount, processing_code=iso.PURCHASE,
                                 local=local, batch=0, invoice=0)
        journal.record_offline(None, approved=True, reason="WITHIN OFFLINE LIMITS",
                               fields=fields, card=CARD, kind="purchase", amount=amount,
                               currency="978", local=local)
    return time.perf_counter() - start


@contextmanager
def counting_transactions(journal: Journal) -> Iterator[list[int]]:
    """Count the journal's transactions (each one a commit, so an fsync of the WAL)."""
    count = [0]
    real = journal.tx

    @contextmanager
    def tx(*args: Any, **kwargs: Any) -> Iterator[Any]:
        if kwargs.get("durable", True):
            count[0] += 1
        with real(*args, **kwargs) as db:
            yield db

    journal.tx = tx  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del journal.tx


# -- the host: in this loop, or in a process of its own -----------------------------------
def _host_process(latency: float, conn: Connection) -> None:
    async def serve() -> None:
        host = AcquirerHost(rng_seed=1, latency=latency)
        conn.send(await host.start())
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        charged = sum(1 for e in host.ledger() if e["charged"])
        await host.stop()
        conn.send(charged)

    asyncio.run(serve())


class OwnProcessHost:
    def __init__(self, latency: float) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_host_process, args=(latency, child), daemon=True)
        self.proc.start()
        self.port = int(self.conn.recv())

    def stop(self) -> int:
        self.conn.send("stop")
        charged = int(self.conn.recv())
        self.proc.join(10)
        return charged


async def upload(journal: Journal, *, latency: float, window: int,
                 other: OwnProcessHost | None) -> tuple[float, int, float]:
    """Upload the queue; (seconds, charged at the host, CPU seconds of this process)."""
    inproc: AcquirerHost | None = None
    if other is not None:
        port = other.port
    else:
        inproc = AcquirerHost(rng_seed=1, latency=latency)
        port = await inproc.start()
    cfg = HostConfig(host="127.0.0.1", port=port, tls=False, response_timeout=10.0,
                     repeat_backoff_base=0.1, repeat_backoff_cap=1.0, advice_window=window)
    link = HostLink(cfg, IDENT, journal.allocate_stan)
    done = asyncio.Event()

    def changed() -> None:
        if not journal.queue_stats().count:
            done.set()

    forwarder = Forwarder(journal, link, cfg, on_queue_change=changed)
    link.on_connected = forwarder.flush
    cpu = time.process_time()
    start = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await forwarder.stop()
    await link.close()
    if inproc is not None:
        charged = sum(1 for e in inproc.ledger() if e["charged"])
        await inproc.stop()
    else:
        assert other is not None
        charged = other.stop()
    return elapsed, charged, cpu


def one_run(count: int, *, latency: float, window: int, own_process: bool) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp)
        journal = Journal(path / "journal.sqlite3", Vault.open(path / "card.key", create=True))
        fill(journal, count)
        other = OwnProcessHost(latency) if own_process else None  # forked outside any loop
        with counting_transactions(journal) as txs:
            elapsed, charged, cpu = asyncio.run(upload(journal, latency=latency, window=window,
                                                       other=other))
        left = journal.queue_stats().count + journal.db.execute(
            "SELECT count(*) FROM card_data").fetchone()[0]
        journal.close()
    return Run(elapsed, txs[0], charged, left, cpu)


# -- the batch upload -------------------------------------------------------------------
CORE = CoreConfig(identity=IDENT, merchant_name="BENCH", address=(), currency_code="EUR",
                  max_amount=10_000_000)
CLOSE_GOAL = 5.0  # seconds for the close of 500 at a 100 ms round trip


@dataclass
class CloseRun:
    seconds: float
    transactions: int  # fsync'd journal transactions during the close
    uploads: int  # 0320s and 0321s the host received
    most: int  # 0320s the host held unanswered at once (from their arrival times)
    ok: bool  # closed in balance, every sale uploaded once


async def close_upload(journal: Journal, count: int, *, latency: float,
                       window: int) -> CloseRun:
    host = AcquirerHost(rng_seed=1)
    port = await host.start()
    cfg = HostConfig(host="127.0.0.1", port=port, tls=False, response_timeout=10.0,
                     advice_window=window)
    link = HostLink(cfg, IDENT, journal.allocate_stan)
    auth = Authorizer(journal, link, IDENT, cfg.response_timeout,
                      before_request=lambda: None, reversal_recorded=lambda: None)
    for n in range(count):  # the batch: approved online (amounts ending in 00)
        req = SaleRequest(kind="purchase", amount=1000 + 100 * n, card=CARD,
                          local=datetime(2026, 11, 23, 12, 0, 0))
        assert isinstance(await auth.authorize(req, None), HostAnswered)
    events: list[Event] = []

    async def nothing() -> None:
        return None

    async def printed(batch: int, lines: tuple[str, ...]) -> bool:
        return True

    engine = CloseEngine(journal, link, cfg, CORE, emit=events.append, flush=nothing,
                         kick=lambda: None, print_z=printed)
    host.force_out_of_balance(1)
    host.set_latency(latency)
    before = len(host.messages())
    with counting_transactions(journal) as txs:
        start = time.perf_counter()
        await engine.run()
        elapsed = time.perf_counter() - start
    messages = host.messages()[before:]
    times = [m["time"] for m in messages if m["mti"] in ("0320", "0321")]
    most = max((sum(1 for t in times if now - latency < t <= now) for now in times),
               default=0) if latency else 0
    [record] = [b for b in host.batches() if b["batch"] == "000001"]
    ok = (events[-1:] == [CloseFinished(True, 1, balanced=True)]
          and len(record["uploads"]) == count
          and all(u["status"] == "matched" for u in record["uploads"]))
    await link.close()
    await host.stop()
    return CloseRun(elapsed, txs[0], len(times), most, ok)


def one_close(count: int, *, latency: float, window: int) -> CloseRun:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp)
        journal = Journal(path / "journal.sqlite3", Vault.open(path / "card.key", create=True))
        try:
            return asyncio.run(close_upload(journal, count, latency=latency, window=window))
        finally:
            journal.close()


def close_cases(args: argparse.Namespace) -> bool:
    n, window = args.close_count, args.window
    print()
    print("batch upload benchmark (0500 95, then the 0320s pipelined, then 0500 960000)")
    print(f"  transactions uploaded   {n} (approved online), window {window}")
    logging.getLogger("posterm").setLevel(logging.ERROR)  # a close's out-of-balance warning
    print("  case                         close s min / median / max   goal     floor"
          "                                0320s  most in flight  fsync'd tx/0320")
    ok = True
    cases = [(0.0, window, args.close_runs), (args.rtt, window, args.close_runs)]
    if args.slow:
        cases.append((args.rtt, 1, 1))
    for latency, win, runs in cases:
        results = [one_close(n, latency=latency, window=win) for _ in range(runs)]
        ok &= all(r.ok for r in results)
        name = f"{latency * 1000:.0f} ms round trip" + (", window 1" if win == 1 else "")
        goal = f"<= {CLOSE_GOAL:g} s" if latency and win == window else "-"
        floor = (f"{n}/{win} x {latency * 1000:.0f} ms + 2 x 0500 = "
                 f"{(math.ceil(n / win) + 2) * latency:.2f} s" if latency else "fsyncs")
        most = max(r.most for r in results)
        txs = statistics.median(r.transactions for r in results) / n
        print(f"  {name:<28} {spread([r.seconds for r in results], lambda v: f'{v:.2f}'):<28}"
              f" {goal:<8} {floor:<36} {statistics.median(r.uploads for r in results):<6.0f}"
              f" {most if latency else '-':<15} {txs:.3f}")
    print(f"  closed in balance, every sale uploaded once: {'yes' if ok else 'NO'}")
    return ok


def fsync_floor(samples: int = 200) -> float:
    """Median seconds of one fsync of a small write, in a directory like the journal's."""
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(os.path.join(tmp, "probe"), os.O_WRONLY | os.O_CREAT, 0o600)
        times = []
        try:
            for _ in range(samples):
                os.write(fd, b"x" * 4096)
                start = time.perf_counter()
                os.fsync(fd)
                times.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    return statistics.median(times)


def spread(values: list[float], fmt: Callable[[float], str]) -> str:
    return (f"{fmt(min(values))} / {fmt(statistics.median(values))} / {fmt(max(values))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5, help="runs of each loopback case")
    parser.add_argument("--latency-runs", type=int, default=3,
                        help="runs of each case at a round trip")
    parser.add_argument("--rtt", type=float, default=0.1, help="round trip in seconds")
    parser.add_argument("--window", type=int, default=HostConfig("x", 1).advice_window,
                        help="[host] advice_window (default: the configuration's default)")
    parser.add_argument("--slow", action="store_true",
                        help="also one at a time at the round trip (takes count x rtt)")
    parser.add_argument("--close-count", type=int, default=500,
                        help="transactions in the batch upload")
    parser.add_argument("--close-runs", type=int, default=3,
                        help="runs of each batch upload case")
    parser.add_argument("--only-close", action="store_true",
                        help="only the batch upload cases")
    args = parser.parse_args()
    if args.only_close:
        return 0 if close_cases(args) else 1
    floor = fsync_floor()
    cases: list[tuple[str, float, int, bool, int]] = [
        ("0 ms, host in this process", 0.0, args.window, False, args.runs),
        ("0 ms, host in its own process", 0.0, args.window, True, args.runs),
        (f"{args.rtt * 1000:.0f} ms round trip", args.rtt, args.window, True,
         args.latency_runs),
        ("0 ms, one at a time (window 1)", 0.0, 1, True, max(1, args.runs // 2)),
    ]
    if args.slow:
        cases.append((f"{args.rtt * 1000:.0f} ms, one at a time", args.rtt, 1, True, 1))
    print("store-and-forward upload benchmark")
    print(f"  advices queued          {args.count} (offline sales, sealed card data)")
    print(f"  advice window           {args.window} outstanding at once")
    print(f"  fsync floor here        {floor * 1000:.3f} ms (median of 200)")
    print("  case                              upload s min / median / max   CPU s   "
          "fsync'd tx/advice   bounds")
    ok = True
    for name, latency, window, own, runs in cases:
        results = [one_run(args.count, latency=latency, window=window, own_process=own)
                   for _ in range(runs)]
        ok &= all(r.charged == args.count and r.left == 0 for r in results)
        txs = statistics.median(r.transactions for r in results) / args.count
        fsync_s = txs * args.count * floor
        bound = f"fsyncs {fsync_s:.2f} s"
        if latency:
            pipe = math.ceil(args.count / window) * latency
            bound += f", {args.count}/{window} x {latency * 1000:.0f} ms = {pipe:.2f} s"
        cpu = statistics.median(r.cpu for r in results)
        print(f"  {name:<33} {spread([r.seconds for r in results], lambda v: f'{v:.2f}'):<29}"
              f" {cpu:<7.2f} {txs:<19.3f} {bound}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("  (CPU s: this process's CPU time, median; with the host in this process it")
    print("  includes the host's work. On a shared machine the wall time waits for a CPU")
    print("  too: the minimum is the figure for an unloaded terminal.)")
    print(f"  peak process RSS        {rss_mb:.1f} MiB")
    print(f"  every sale charged exactly once, queue and sealed data empty: "
          f"{'yes' if ok else 'NO'}")
    ok &= close_cases(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
