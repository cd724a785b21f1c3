"""Fleet channel cost: what [fleet] brokers add to one terminal, in memory, wake-ups, CPU.

Two runs of the real firmware against hwsim (tests/rig.py, as bench/idle.py), one without
the channel ([fleet] brokers = [], the default) and one with it pointing at a real
Mosquitto (tests/fleetrig.py: TLS with a test CA, the terminal's client certificate, the
fleet's ACL, a free loopback port) and a console subscribed to `posterm/v1/#`. The
channel runs with [fleet]'s defaults but for `--keepalive` (60 s by default: the goal
below is stated for it) and `--telemetry` ([fleet] telemetry_interval, its default).

Each run: start, wait for the idle screen (and, with the channel, for `state` online at
the console), settle, read VmRSS (`after start`); make `--sales` sales (with the channel,
wait until the console has every sale's event), settle, read VmRSS (`after sales`); then
watch the terminal at rest for `--seconds` and count, per thread, the voluntary context
switches (wake-ups) and CPU time from /proc/<pid>/task/*/ (bench/idle.py's `threads` and
`delta`: its method). hwsim's stand-in threads and the control-socket round trips are
counted apart, as bench/idle.py does: a real terminal has neither.

Threads the kernel knows by the interpreter's name (the event loop's, paho's `fleet
mqtt`, which does not name itself to the kernel) are told apart here by the thread id
(the event loop's is the process id) and by where each sleeps (/proc/.../wchan: paho's
loop sleeps in select(), the event loop in epoll_wait).

Goals (issue 21): the channel adds at most 2 MB RSS, and no wake-ups beyond its
keepalive (one PINGREQ a keepalive, each a wake-up to send and one to read the
PINGRESP) and its telemetry (every telemetry_interval, and on change).

    .venv/bin/python bench/fleet_cost.py [--seconds 60] [--sales 20] [--keepalive 60]
                                         [--telemetry 300] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.idle import Sample, delta, threads  # noqa: E402
from firmware.config_fleet import FleetTable  # noqa: E402
from tests.fleetrig import MOSQUITTO, Broker, Client  # noqa: E402
from tests.rig import Rig, _env, wait_until  # noqa: E402

TID = "TERM0001"  # hwsim's terminal id (field 41), the CN of the terminal's certificate
GOAL_RSS_MB = 2.0
Rows = dict[str, tuple[int, int, int, int]]


def rss_kb(pid: int) -> dict[str, int]:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"(VmRSS|RssAnon|RssFile):\s+(\d+) kB", text)}


def labelled(pid: int, sample: dict[int, Sample]) -> dict[int, Sample]:
    """The same sample with the unnamed threads named: the event loop's (tid = pid) and
    the others of the interpreter's name by where they sleep now (wchan)."""
    main = sample.get(pid, ("?", 0, 0, 0))[0]
    out = {}
    for tid, (name, vol, invol, cpu) in sample.items():
        if tid == pid:
            name = "event loop"
        elif name == main:
            try:
                wchan = pathlib.Path(f"/proc/{pid}/task/{tid}/wchan").read_text().strip()
            except OSError:
                wchan = "?"
            name = "fleet mqtt" if "select" in wchan or wchan.startswith("poll") else \
                f"{name}[{wchan or '?'}]"
        out[tid] = (name, vol, invol, cpu)
    return out


def run(tmp: pathlib.Path, channel: bool, args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, dict[str, Any]] = {"maintenance": {"restart_window": ""}}
    broker: Broker | None = None
    console: Client | None = None
    if channel:
        broker = Broker(tmp).start()
        defaults = FleetTable()
        overrides["fleet"] = broker.fleet_table(
            TID, keepalive=args.keepalive, telemetry_interval=args.telemetry,
            reconnect_base=defaults.reconnect_base, reconnect_cap=defaults.reconnect_cap)
        console = broker.client("console")
        console.watch("posterm/v1/#")
    rig = Rig(tmp, overrides=overrides)
    topic = f"posterm/v1/{TID}"
    try:
        rig.start()
        rig.wait_idle(timeout=30)
        if console is not None:
            wait_until(lambda: any(m["state"] == "online"
                                   for m in console.payloads(f"{topic}/state")),
                       30, "the channel did not come online")
        time.sleep(args.settle)
        assert rig.fw is not None and rig.sim is not None
        pid = rig.fw.pid
        rss_start = rss_kb(pid)
        for n in range(args.sales):
            rig.sale(f"{10 + n % 90}00")
            rig.hw.wait_display("APPROVED", timeout=30)
            rig.wait_idle(timeout=30)
        if console is not None:
            wait_until(lambda: sum(1 for e in console.payloads(f"{topic}/events")
                                   if e["kind"] == "sale") >= args.sales,
                       60, "not every sale's event reached the console")
        time.sleep(args.settle)
        rss_sales = rss_kb(pid)
        seen0 = len(console.everything()) if console is not None else 0
        served0 = rig.hw.control_stats()
        fw0 = labelled(pid, threads(pid))
        t0 = time.monotonic()
        time.sleep(args.seconds)
        fw1 = labelled(pid, threads(pid))
        seconds = time.monotonic() - t0
        served1 = rig.hw.control_stats()
        got = console.everything()[seen0:] if console is not None else []
        assert "ENTER AMOUNT" in " ".join(rig.hw.display()), "the terminal left the idle screen"
        rss_end = rss_kb(pid)
        parts = pieces(broker) if broker is not None else None
    finally:
        rig.stop()
        if broker is not None:
            broker.close()
    rows = delta(fw0, fw1)
    requests = sum(n - served0.get(op, 0) for op, n in served1.items()
                   if op != "control_stats")
    standin = sum(v for name, (_, v, _, _) in rows.items() if name.startswith("hwsim-"))
    total = sum(v for _, v, _, _ in rows.values())
    return {"rss_start": rss_start, "rss_sales": rss_sales, "rss_end": rss_end,
            "rows": rows, "seconds": seconds, "pieces": parts, "total": total,
            "own": total - standin - requests, "requests": requests,
            "cpu": sum(c for _, _, _, c in rows.values()),
            "messages": [t.rsplit("/", 1)[-1] for t, _, _ in got]}


PIECES = """
import re, ssl, sys, pathlib, tracemalloc
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", pathlib.Path("/proc/self/status").read_text())[1])
import firmware.__main__
from firmware.runtime import app, graph, status  # what every terminal imports
before = set(sys.modules)
tracemalloc.start()
a = tracemalloc.get_traced_memory()[0]
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
out, a = [tracemalloc.get_traced_memory()[0] - a], tracemalloc.get_traced_memory()[0]
from firmware.runtime import fleet  # the channel's own modules
out.append(tracemalloc.get_traced_memory()[0] - a)
tracemalloc.stop()
a = rss()
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="TERM0001", protocol=mqtt.MQTTv311)
c.tls_set(ca_certs=sys.argv[1], certfile=sys.argv[2], keyfile=sys.argv[3],
          cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
out.append((rss() - a) * 1024)
print(*out)
print(*sorted({m.split(".")[0] for m in set(sys.modules) - before}))
"""


def pieces(broker: Broker) -> tuple[list[int], str]:
    """Bytes that each adds to an interpreter that has imported what every terminal
    imports (firmware.runtime.app and the rest, as without brokers): the Python heap
    (tracemalloc: RSS moves by whole pages and allocator arenas, too coarse for a module)
    that paho-mqtt takes (with the standard library it imports at its top: urllib.request,
    http.client, the email parser) and the channel's own modules; the RSS of a paho
    client with the terminal's TLS context (OpenSSL's memory, which tracemalloc does not
    see; what fleet_mqtt.Connection makes); and the top-level packages imported."""
    cert, key = broker.cert(TID)
    out = subprocess.run([sys.executable, "-c", PIECES, broker.ca_cert, cert, key],
                         env=_env(), capture_output=True, text=True, timeout=60, check=True)
    figures, names = out.stdout.splitlines()[:2]
    return [int(x) for x in figures.split()], names


def show(name: str, r: dict[str, Any]) -> None:
    s = r["seconds"]
    print(f"  {name}: RSS after start {r['rss_start']['VmRSS'] / 1024:.1f} MB (anonymous "
          f"{r['rss_start']['RssAnon'] / 1024:.1f}), after the sales "
          f"{r['rss_sales']['VmRSS'] / 1024:.1f} MB (anonymous "
          f"{r['rss_sales']['RssAnon'] / 1024:.1f}), at the end "
          f"{r['rss_end']['VmRSS'] / 1024:.1f} MB")
    print(f"    at rest {s:.0f} s: {r['total']} wake-ups ({r['total'] / s:.2f}/s; "
          f"{r['own']} the firmware's own after hwsim's stand-ins and {r['requests']} "
          f"control round trips), CPU {r['cpu'] / 1e9 / s * 100:.3f} % "
          f"({r['cpu'] / 1e6:.1f} ms)")
    print(f"    {'thread':18s} {'threads':>7s} {'wake-ups':>9s} {'per min':>8s} {'CPU ms':>8s}")
    for tname, (n, v, _, c) in sorted(r["rows"].items(), key=lambda x: -x[1][1]):
        print(f"    {tname:18s} {n:7d} {v:9d} {v / s * 60:8.1f} {c / 1e6:8.1f}")
    if r["messages"]:
        kinds = {k: r["messages"].count(k) for k in sorted(set(r["messages"]))}
        print(f"    at the console in the window: {json.dumps(kinds)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="the window at rest")
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--sales", type=int, default=20)
    ap.add_argument("--keepalive", type=int, default=60)
    ap.add_argument("--telemetry", type=float, default=FleetTable().telemetry_interval)
    ap.add_argument("--quick", action="store_true", help="30 s at rest, 5 sales")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.sales = min(args.seconds, 30.0), min(args.sales, 5)
    if MOSQUITTO is None:
        print("mosquitto is not installed (Debian: apt-get install mosquitto)")
        return 1
    results = {}
    for channel in (False, True):
        tmp = pathlib.Path(tempfile.mkdtemp(prefix="posterm-bench-fleetcost-"))
        try:
            results[channel] = run(tmp, channel, args)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    off, on = results[False], results[True]
    print(f"posterm under hwsim, {args.sales} sales, then {args.seconds:.0f} s at rest; "
          f"the channel with keepalive {args.keepalive} s, telemetry every "
          f"{args.telemetry:g} s (TLS, Mosquitto on loopback):")
    show("without the channel", off)
    show("with the channel   ", on)
    added = {k: (on[k]["VmRSS"] - off[k]["VmRSS"]) / 1024
             for k in ("rss_start", "rss_sales", "rss_end")}
    anon = (on["rss_sales"]["RssAnon"] - off["rss_sales"]["RssAnon"]) / 1024
    print(f"  RSS the channel adds: {added['rss_start']:+.1f} MB after start, "
          f"{added['rss_sales']:+.1f} MB after the sales ({anon:+.1f} MB anonymous), "
          f"{added['rss_end']:+.1f} MB at the end (goal <= {GOAL_RSS_MB:g} MB)")
    (paho, own, client), names = on["pieces"][0], on["pieces"][1]
    print(f"    measured apart, after the modules every terminal imports: paho-mqtt "
          f"{paho / 2**20:.2f} MB of Python heap (with the standard library it imports), the "
          f"channel's own modules {own / 2**20:.2f} MB, a paho client with the terminal's "
          f"TLS context {client / 2**20:.1f} MB RSS; packages imported for the channel: "
          f"{names}")
    s = min(on["seconds"], off["seconds"])
    extra = on["own"] / on["seconds"] * s - off["own"] / off["seconds"] * s
    # a PINGREQ is a wake-up to send it and one to read the PINGRESP; a telemetry message
    # wakes the loop (its timer) and paho's thread (to write it)
    budget = 2 * (s / args.keepalive + s / args.telemetry)
    mqtt = on["rows"].get("fleet mqtt", (0, 0, 0, 0))
    loop_on, loop_off = on["rows"].get("event loop"), off["rows"].get("event loop")
    print(f"  wake-ups the channel adds in {s:.0f} s at rest: {extra:+.0f} "
          f"({extra / s * 60:+.1f} per minute; budget for its keepalive and telemetry "
          f"about {budget:.0f}); paho's thread alone {mqtt[1]} ({mqtt[1] / on['seconds'] * 60:.1f}"
          f" per minute, CPU {mqtt[3] / 1e6:.1f} ms); the event loop "
          f"{(loop_on or (0, 0, 0, 0))[1]} with, {(loop_off or (0, 0, 0, 0))[1]} without")
    cpu_on, cpu_off = (r["cpu"] / 1e9 / r["seconds"] * 100 for r in (on, off))
    print(f"  CPU at rest: {cpu_on:.3f} % with, {cpu_off:.3f} % without "
          f"({cpu_on - cpu_off:+.3f} % of one core)")
    ok_rss = added["rss_sales"] <= GOAL_RSS_MB
    ok_wake = extra <= budget
    print(f"  goals: RSS {'met' if ok_rss else 'NOT met'}, wake-ups "
          f"{'met' if ok_wake else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
