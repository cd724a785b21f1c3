"""Fleet console benchmark: how fast it takes in events, how fast its page opens.

1. Ingest, live: a Mosquitto started here (plain TCP on loopback, its own
   configuration), the console's real subscriber (`fleet.ingest.Ingest`) into a fresh
   SQLite store, and publisher processes (paho, QoS 1, each its own terminals)
   sending events as fast as they can. Timed from the first publish to the last event
   on disk (written, committed, acknowledged). The publishers share the two cores.
2. Ingest, backlog: the console away while the events are published (the broker keeps
   them for its persistent session), then started: timed from its start to the last
   event on disk: the console's own rate, publishers out of the way.
3. The page with 10,000 terminals in the store (one in ten with an alert): the JSON of
   the table (`GET /api/fleet`, median of 5), and in Debian's Chromium (when there is
   one) from navigation to the table drawn (the page's `window.fleetPage.loaded`).

    .venv/bin/python bench/fleet_console.py [--events 20000] [--terminals 10000] [--quick]

Goal: >= 5,000 events/s ingested.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fleet.ingest import Ingest  # noqa: E402
from fleet.store import Store  # noqa: E402
from fleet.web import WebUI  # noqa: E402
from tests.browser import find_chromium, launch  # noqa: E402
from tests.test_fleet_console import MOSQUITTO, Mosquitto  # noqa: E402

PUBLISHERS = 4
GOAL = 5000


def publish(port: int, first_tid: int, terminals: int, events: int) -> None:
    """One publisher process: `events` events spread over its terminals, QoS 1."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{first_tid}",
                    protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    last = None
    for n in range(events):
        tid = f"B{first_tid + n % terminals:07d}"
        seq = n // terminals + 1
        body = {"tid": tid, "seq": seq, "t": t, "kind": "sale",
                "data": {"sale_id": seq, "kind": "purchase", "amount": 1250,
                         "status": "approved", "entry": "chip"}}
        last = c.publish(f"posterm/v1/{tid}/events", json.dumps(body), qos=1)
    if last is not None:
        last.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def run_publishers(port: int, events: int) -> None:
    each = events // PUBLISHERS
    procs = [multiprocessing.Process(target=publish, args=(port, i * 1000, 100, each))
             for i in range(PUBLISHERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


def wait_events(ingest: Ingest, total: int, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while ingest.counts.events + ingest.counts.duplicates < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {ingest.counts.events} of {total} events after {limit} s")
        time.sleep(0.005)


def bench_ingest(folder: pathlib.Path, events: int) -> list[tuple[str, str]]:
    broker = Mosquitto(folder)
    rows = []
    try:
        total = events // PUBLISHERS * PUBLISHERS
        live = Ingest(folder / "live.db", broker.broker(), client_id="bench-live")
        live.start()
        started = time.monotonic()
        run_publishers(broker.port, events)
        wait_events(live, total)
        took = time.monotonic() - started
        live.stop()
        rows += [("live: events", f"{total}"), ("live: seconds", f"{took:.2f}"),
                 ("live: events/s", f"{total / took:,.0f}"),
                 ("live: batches (one transaction each)", f"{live.counts.batches}")]
        # the backlog: a session made, the console away, the events published, then back
        away = Ingest(folder / "backlog.db", broker.broker(), client_id="bench-backlog")
        away.start()
        away.stop()
        run_publishers(broker.port, events)
        back = Ingest(folder / "backlog.db", broker.broker(), client_id="bench-backlog")
        started = time.monotonic()
        back.start()
        wait_events(back, total)
        took = time.monotonic() - started
        back.stop()
        stored = Store(folder / "backlog.db")
        kept = stored.db.execute("SELECT count(*) FROM events").fetchone()[0]
        stored.close()
        rows += [("backlog: events", f"{total} ({kept} stored)"),
                 ("backlog: seconds", f"{took:.2f}"),
                 ("backlog: events/s", f"{total / took:,.0f}")]
    finally:
        broker.stop()
    return rows


def fill(db: pathlib.Path, terminals: int) -> None:
    store = Store(db)
    now = datetime.now(timezone.utc)
    t = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    messages: list[tuple[str, bytes]] = []
    for n in range(terminals):
        tid = f"T{n:07d}"
        version = "0.2.0" if n % 20 == 7 else "0.3.0"
        facts = {"device": {"manufacturer": "posterm", "firmware_version": version,
                            "uptime": n, "battery_level": 15 if n % 20 == 3 else 80,
                            "power_source": "mains"},
                 "connectivity": {"network_bearer": "ETH", "radio_signal_bars": 0, "link": "UP"},
                 "printer": "ready", "card_reader": "ready",
                 "queue": {"reversals": 0, "offline_count": 0, "offline_amount": 0,
                           "offline_oldest": None, "refused": 0},
                 "batch": {"number": 1, "purchases": 0, "purchase_amount": 0, "refunds": 0},
                 "last_close": None, "journal_ok": True}
        messages.append((f"posterm/v1/{tid}/state", json.dumps(
            {"tid": tid, "state": "online", "version": version, "since": t}).encode()))
        messages.append((f"posterm/v1/{tid}/telemetry", json.dumps(
            {"tid": tid, "t": t, "facts": facts}).encode()))
    store.apply(messages, now)
    store.close()


async def _api_times(db: pathlib.Path, tries: int) -> tuple[str, list[float], int, WebUI]:
    page = WebUI(db, None, None, "127.0.0.1", 0)
    url = await page.start()
    times = []
    size = 0
    for _ in range(tries):
        started = time.monotonic()
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "api/fleet").read())
        times.append(time.monotonic() - started)
        size = len(body)
    return url, times, size, page


def bench_page(folder: pathlib.Path, terminals: int) -> list[tuple[str, str]]:
    db = folder / "page.db"
    started = time.monotonic()
    fill(db, terminals)
    rows = [("terminals in the store", f"{terminals} (filled in "
                                       f"{time.monotonic() - started:.1f} s)")]
    loop = asyncio.new_event_loop()
    url, times, size, page = loop.run_until_complete(_api_times(db, 5))
    rows += [("GET /api/fleet, median of 5 (ms)", f"{statistics.median(times) * 1000:.0f}"),
             ("its JSON (KiB)", f"{size / 1024:.0f}")]
    chromium, why = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        chromium, why = None, f"the Python package playwright is missing ({exc})"
    if chromium is None:
        rows.append(("page in Chromium", f"skipped: {why}"))
    else:
        import threading
        server = threading.Thread(target=loop.run_forever, daemon=True)
        server.start()
        loads = []
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium)
            for _ in range(3):
                tab = browser.new_page(viewport={"width": 1400, "height": 900})
                tab.goto(url)
                tab.wait_for_function(f"() => document.body.dataset.rows === '{terminals}'",
                                      timeout=120_000)
                loads.append(tab.evaluate("window.fleetPage.loaded"))
                tab.close()
            browser.close()
        rows.append(("page in Chromium: navigation to table drawn, median of 3 (ms)",
                     f"{statistics.median(loads):.0f}"))
        loop.call_soon_threadsafe(loop.stop)
        server.join()
    loop.run_until_complete(page.stop())
    loop.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--terminals", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="4,000 events, 1,000 terminals")
    args = ap.parse_args()
    events, terminals = (4000, 1000) if args.quick else (args.events, args.terminals)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="posterm-fleet-bench-") as tmp:
        if MOSQUITTO is None:
            rows.append(("ingest", "skipped: no mosquitto (apt install mosquitto)"))
        else:
            rows += bench_ingest(pathlib.Path(tmp), events)
        rows += bench_page(pathlib.Path(tmp), terminals)
    print("fleet console benchmark")
    for key, value in rows:
        print(f"  {key:62} {value}")
    rates = [float(v.replace(",", "")) for k, v in rows if k.endswith("events/s")]
    if rates and min(rates) < GOAL:
        print(f"BELOW THE GOAL: {GOAL:,} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
