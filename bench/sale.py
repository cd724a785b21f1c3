"""Sale overhead: what the terminal itself adds between the swipe and the full result screen.

Starts hwsim and posterm as two real processes (tests/rig.py) with the simulated
host answering at once, and runs many sales the way a person would: key the
amount, OK, swipe, wait for the result, OK back to idle. The times come from
hwsim's own clocks, so the benchmark's polling does not enter them:

- the swipe: when the control request that writes the track to the reader's
  pseudo-terminal was made (the midpoint of its round trip);
- the 0200: when the host received it (the host's message log);
- the full result screen: the I2C transfer after which the display shows the
  whole result (hwsim's I2C log carries the rows after every transfer).

The terminal's own time is swipe -> full result screen minus the host's round
trip, measured in the same run with a bare client sending 0200s through the
same path (the primary-path proxy, then the host) as the firmware. Its
breakdown: swipe -> 0200 at the host (card read, core, the `sending` journal
write, framing) less half that round trip; after the answer (the answer's
journal write, core, the display's result screen); and the display's share
(transfers to the display between the swipe and the 0200 — nothing should hold
up the request — and from the first to the last transfer of the result
screen). Alongside: the measured fsync floor on the same file system, times
the two fsync'd writes the contract puts on this path.

    ./run bench        or     .venv/bin/python bench/sale.py [--sales 1500] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.core import iso  # noqa: E402
from firmware.core.card import CardData  # noqa: E402
import iso8583  # noqa: E402
from hwsim.hostproto import SPEC, encode  # noqa: E402
from tests.rig import Rig  # noqa: E402

PAN = "4761739001010010"
LCD = 0x27
POLL = 0.003  # the benchmark's own polling of the display (does not enter the figures)


@dataclass
class SaleTimes:
    total: float  # swipe -> full result screen
    to_host: float  # swipe -> 0200 at the host
    after: float  # 0200 at the host -> full result screen
    result_draw: float  # first -> last display transfer of the result screen
    display_before_request: int  # display transfers between the swipe and the 0200
    lcd_transactions: int  # display transactions from the swipe to the full result
    lcd_bits: int


def start_rig(tmp: pathlib.Path) -> Rig:
    rig = Rig(tmp, overrides={"operator": {"duplicate_minutes": 0},
                              "timeouts": {"result": 60.0}})
    rig.start()
    rig.wait_online()
    return rig


def wait_rows(rig: Rig, test: Any, what: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = rig.hw.display()
        if test(rows):
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"the display never showed {what}: {rows}")
        time.sleep(POLL)


def is_result(rows: list[str]) -> bool:
    return rows[0].startswith("APPROVED") and rows[3].startswith("PRINTING...")


def lcd_bits(size: int) -> int:
    """Bits on the wire of one write transaction: address + data bytes, 9 bits each (with
    the ACK), plus START and STOP."""
    return 9 * (size + 1) + 2


def run_sale(rig: Rig, n: int) -> tuple[float, list[dict[str, Any]]]:
    """One sale from idle back to idle: the swipe's time and the I2C transfers after it."""
    amount = f"{10 + n % 900}00"  # whole euros: the host approves them
    rig.hw.press(amount, "OK")
    wait_rows(rig, lambda r: r[2].strip() == "SWIPE CARD", "SWIPE CARD")
    mark = int(rig.hw.i2c_log(since=1 << 62)["next"])
    t0 = time.time()
    rig.hw.swipe(PAN)
    t1 = time.time()
    wait_rows(rig, lambda r: r[0].startswith("APPROVED") and "PRINTING" not in r[3], "the result")
    log = rig.hw.i2c_log(since=mark)
    if log["dropped"]:
        raise RuntimeError("hwsim's I2C log overflowed during a sale")
    rig.hw.press("OK")
    wait_rows(rig, lambda r: "ENTER AMOUNT" in r[2], "the idle screen")
    return (t0 + t1) / 2, list(log["entries"])


def analyse(swipe: float, entries: list[dict[str, Any]], request_at: float) -> SaleTimes:
    lcd = [e for e in entries if e["addr"] == LCD and e["kind"] == "write"]
    full = next((e for e in lcd if "rows" in e and is_result(e["rows"])), None)
    if full is None:
        raise RuntimeError("the I2C log has no full result screen for a sale")
    result_done = float(full["t"])
    after_req = [e for e in lcd if e["t"] >= request_at and e["t"] <= result_done]
    first = float(after_req[0]["t"]) if after_req else result_done
    upto = [e for e in lcd if e["seq"] <= full["seq"]]
    return SaleTimes(
        total=result_done - swipe, to_host=request_at - swipe, after=result_done - request_at,
        result_draw=result_done - first,
        display_before_request=sum(1 for e in lcd if e["t"] < request_at),
        lcd_transactions=len(upto), lcd_bits=sum(lcd_bits(int(e["bytes"])) for e in upto))


def host_round_trips(rig: Rig, count: int) -> list[float]:
    """0200 -> 0210 through the firmware's path (proxy, host) from a bare client."""
    ident = iso.Identity("BENCH001", "BENCHMERCHANT01", "978")
    card = CardData(pan=PAN, expiry="3012", service_code="101",
                    track2=f"{PAN}=30121011000000000000")
    out: list[float] = []
    with socket.create_connection((rig.info["primary_host"], rig.info["primary_port"])) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for n in range(count):
            base = iso.sale_fields(ident, card=card, amount=1000 + n, processing_code=iso.PURCHASE,
                                   local=datetime.now(), batch=1, invoice=n + 1)
            doc = iso.financial_request(base, stan=n % 999999 + 1, utc=datetime.now(timezone.utc),
                                        track2=card.track2)
            payload = encode(doc)
            t0 = time.perf_counter()
            s.sendall(struct.pack(">H", len(payload)) + payload)
            size = struct.unpack(">H", _recv(s, 2))[0]
            answer, _ = iso8583.decode(bytearray(_recv(s, size)), SPEC)
            out.append(time.perf_counter() - t0)
            if answer.get("t") != "0210":
                raise RuntimeError(f"the host answered {answer.get('t')} to a 0200")
    return out


def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise RuntimeError("the host closed the connection")
        data += chunk
    return data


def fsync_floor(directory: pathlib.Path, count: int = 200) -> list[float]:
    """One 4 KiB write and fsync on the journal's file system, as a WAL commit does."""
    path = directory / "fsync-probe"
    out = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(count):
            os.pwrite(fd, b"\0" * 4096, 0)
            t0 = time.perf_counter()
            os.fsync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(x: float) -> str:
    return f"{x * 1000:7.2f}"


def spread(values: list[float]) -> str:
    """min / median / max, in ms."""
    return f"{ms(min(values))} {ms(statistics.median(values))} {ms(max(values))}"


def run(rig: Rig, sales: int, start: int) -> list[SaleTimes]:
    done = [run_sale(rig, start + n) for n in range(sales)]
    requests = [m["time"] for m in rig.hw.messages()
                if m["mti"] == "0200" and m["tid"] != "BENCH001"
                and m["time"] >= done[0][0] - 0.001]
    times = []
    for swipe, entries in done:
        req = next((t for t in requests if t >= swipe - 0.001), None)
        if req is None:
            raise RuntimeError("the host never received a 0200 for a sale")
        times.append(analyse(swipe, entries, req))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=1500, help="sales in all (default 1500)")
    parser.add_argument("--runs", type=int, default=3, help="runs they are split into")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    per_run = max(1, args.sales // args.runs)
    with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp:
        rig = start_rig(pathlib.Path(tmp))
        try:
            fsync = fsync_floor(rig.state_dir)
            host = host_round_trips(rig, 300)
            run(rig, args.warmup, 0)
            results = [run(rig, per_run, args.warmup + r * per_run) for r in range(args.runs)]
            host += host_round_trips(rig, 300)
        finally:
            rig.stop()
    host_med = statistics.median(host)
    fsync_med = statistics.median(fsync)
    everything = [t for r in results for t in r]

    def runs_of(fn: Any) -> str:
        return spread([fn(r) for r in results])

    def own(r: list[SaleTimes], p: float) -> float:
        return pct([t.total - host_med for t in r], p)

    print("sale overhead benchmark (hwsim host answering at once; times from hwsim's clocks)")
    print(f"  sales measured                     {len(everything)} in {args.runs} runs "
          f"(+{args.warmup} warm-up)")
    print("                                          min  median     max  (ms, over runs)")
    print(f"  swipe -> full result, p50          "
          f"{runs_of(lambda r: pct([t.total for t in r], 50))}")
    print(f"  swipe -> full result, p99          "
          f"{runs_of(lambda r: pct([t.total for t in r], 99))}")
    print(f"  host round trip (bare client) p50  {ms(min(host))} {ms(host_med)} {ms(max(host))}"
          "  (min/median/max of all)")
    print(f"  terminal's own time, p50           {runs_of(lambda r: own(r, 50))}"
          "   goal <= 2 ms")
    print(f"  terminal's own time, p99           {runs_of(lambda r: own(r, 99))}"
          "   goal <= 5 ms")
    print("  breakdown (p50 over runs):")
    print(f"    swipe -> 0200 at host, less half  "
          f"{runs_of(lambda r: pct([t.to_host - host_med / 2 for t in r], 50))}")
    print("      the host round trip (card read, core, `sending` journal write, link)")
    print(f"    0200 -> full result, less half    "
          f"{runs_of(lambda r: pct([t.after - host_med / 2 for t in r], 50))}")
    print("      the round trip (answer's journal write, core, display)")
    print(f"    display: result screen drawing    "
          f"{runs_of(lambda r: pct([t.result_draw for t in r], 50))}")
    print(f"    fsync floor x 2 (sending, answer) "
          f"{ms(2 * min(fsync))} {ms(2 * fsync_med)} {ms(2 * max(fsync))}"
          "  (min/median/max of the probe)")
    held = sum(t.display_before_request for t in everything)
    print(f"  display transfers before the 0200  {held} in {len(everything)} sales "
          f"({held / len(everything):.2f} a sale)")
    tx = statistics.median(t.lcd_transactions for t in everything)
    bits = statistics.median(t.lcd_bits for t in everything)
    print(f"  display, swipe -> full result      {tx:.0f} transactions, {bits:.0f} bits: "
          f"{bits / 100:.2f} ms at 100 kHz, {bits / 400:.2f} ms at 400 kHz (median)")
    ratio = statistics.median(t.total - host_med for t in everything) / (2 * fsync_med)
    print(f"  own time / (2 fsyncs)              {ratio:.1f}x  (1.0 would be the journal alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
