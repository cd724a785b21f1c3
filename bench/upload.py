"""Store-and-forward upload benchmark: 1,000 offline sales queued, then the host comes back.

Fills a real journal (SQLite, WAL, synchronous=FULL) with N offline approvals —
each with its advice and AES-GCM-sealed card data, written as the firmware
writes them — then starts the simulated acquirer host on loopback and runs the
firmware's real Forwarder over a real HostLink until every advice is accepted.
Prints the upload time, advices per second, and the peak memory (Python heap
peak by tracemalloc during the upload, and the process's maximum RSS).
The host runs in the same process and event loop, so its work is included.

    ./run bench            or      .venv/bin/python bench/upload.py --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.config import HostConfig  # noqa: E402
from firmware.core import iso  # noqa: E402
from firmware.core.card import CardData  # noqa: E402
from firmware.runtime.forwarder import Forwarder  # noqa: E402
from firmware.runtime.hostlink import HostLink  # noqa: E402
from firmware.runtime.journal import Journal  # noqa: E402
from firmware.runtime.vault import Vault  # noqa: E402
from hwsim.host import AcquirerHost  # noqa: E402

IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")
CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101", track2="")


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


async def upload(journal: Journal, count: int) -> tuple[float, int, int]:
    host = AcquirerHost(rng_seed=1)
    port = await host.start()
    cfg = HostConfig(host="127.0.0.1", port=port, tls=False, response_timeout=10.0,
                     repeat_backoff_base=0.1, repeat_backoff_cap=1.0)
    link = HostLink(cfg, IDENT, journal.allocate_stan)
    forwarder = Forwarder(journal, link, cfg)
    link.on_connected = forwarder.flush
    tracemalloc.start()
    start = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    while journal.queue_stats().count:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await link.close()
    charged = sum(1 for e in host.ledger() if e["charged"])
    await host.stop()
    return elapsed, peak, charged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp)
        journal = Journal(path / "journal.sqlite3", Vault.open(path / "card.key", create=True))
        fill_s = fill(journal, args.count)
        elapsed, peak, charged = asyncio.run(upload(journal, args.count))
        stats = journal.queue_stats()
        left = journal.db.execute("SELECT count(*) FROM card_data").fetchone()[0]
        journal.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("store-and-forward upload benchmark")
    print(f"  offline sales queued           {args.count}")
    print(f"  time to queue them             {fill_s:.2f} s ({fill_s / args.count * 1000:.2f} ms"
          " each, one fsync'd transaction per sale)")
    print(f"  upload time (0220 -> 0230)     {elapsed:.2f} s")
    print(f"  advices per second             {args.count / elapsed:.0f}")
    print(f"  peak Python heap during upload {peak / 1024 / 1024:.2f} MiB (tracemalloc)")
    print(f"  peak process RSS               {rss_mb:.1f} MiB")
    print(f"  charged at the host            {charged} (expected {args.count})")
    print(f"  left in queue / sealed records {stats.count} / {left}")
    return 0 if charged == args.count and stats.count == 0 and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
