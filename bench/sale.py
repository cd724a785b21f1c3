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
import asyncio
import os
import pathlib
import shutil
import signal
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
from hwsim.fwconfig import render_config  # noqa: E402
from hwsim.hostproto import SPEC, encode  # noqa: E402
from bench.memory import waiter  # noqa: E402
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


def start_rig(tmp: pathlib.Path, hwsim_only: bool = False) -> Rig:
    rig = Rig(tmp, overrides={"operator": {"duplicate_minutes": 0},
                              "timeouts": {"result": 60.0}})
    if hwsim_only:
        rig.start_sim()
        return rig
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


def is_approved(rows: Any) -> bool:
    return any("APPROVED" in row for row in rows)


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


def host_round_trips(address: tuple[str, int], count: int) -> list[float]:
    """0200 -> 0210 from a bare client at `address` (the firmware's path: proxy, host)."""
    ident = iso.Identity("BENCH001", "BENCHMERCHANT01", "978")
    card = CardData(pan=PAN, expiry="3012", service_code="101",
                    track2=f"{PAN}=30121011000000000000")
    out: list[float] = []
    with socket.create_connection(address) as s:
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


# -- the firmware's own time: the real App in this process --------------------------------
class DisplaySink:
    """The display port, in process: each screen the runtime hands it, stamped (it runs in
    the display keeper's thread, as the LCD driver would)."""

    def __init__(self) -> None:
        self.shown: list[tuple[float, tuple[str, ...]]] = []
        self.result: asyncio.Event | None = None  # set once a result screen is shown
        self.loop: asyncio.AbstractEventLoop | None = None

    def show(self, rows: Any) -> None:
        self.shown.append((time.perf_counter(), tuple(rows)))
        if self.result is not None and self.loop is not None and is_approved(rows):
            self.loop.call_soon_threadsafe(self.result.set)  # after the stamp

    def close(self) -> None:
        pass


class CardSource:
    """The card reader port, in process: a swipe's bytes go through the magstripe driver's
    own framing and track parsing, and the event to the runtime, as the driver does."""

    def __init__(self) -> None:
        self.emit: Any = None

    async def run(self, emit: Any) -> None:
        self.emit = emit
        await asyncio.Event().wait()

    def swipe(self, line: bytes) -> float:
        from drivers.magstripe import LineFramer, events_from_read
        t0 = time.perf_counter()
        for event in events_from_read(LineFramer(), line, time.monotonic()):
            self.emit(event)
        return t0

    def close(self) -> None:
        pass


class Stamps:
    """Wrappers around the parts a sale goes through, each noting when it ran: the core's
    step (by event), the two journal writes, the 0200 written, the 0210 read."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def mark(self, name: str, t: float | None = None) -> None:
        self.marks.setdefault(name, time.perf_counter() if t is None else t)

    def wrap(self, owner: Any, attr: str, before: str | None, after: str | None,
             when: Any = None) -> None:
        inner = getattr(owner, attr)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            hit = when is None or when(*args)
            if hit and before:
                self.mark(before)
            out = inner(*args, **kwargs)
            if hit and after:
                self.mark(after)
            return out
        setattr(owner, attr, wrapped)


# the breakdown: (label, from mark, to mark); the host's round trip is taken out
STEPS = (
    ("card read (driver parse, queue)", "swipe", "core1"),
    ("core: the swipe's step", "core1", "core1_end"),
    ("-> journal (effects, task, fields)", "core1_end", "journal1"),
    ("journal: `sending` (fsync)", "journal1", "journal1_end"),
    ("-> 0200 written (build, encode)", "journal1_end", "sent"),
    ("[host round trip, not counted]", "sent", "answer"),
    ("answer -> journal (decode, match)", "answer", "journal2"),
    ("journal: the answer (fsync)", "journal2", "journal2_end"),
    ("-> core (event, queue)", "journal2_end", "core2"),
    ("core: the answer's step", "core2", "core2_end"),
    ("-> screen at the sink", "core2_end", "screen"),
)


async def inprocess_sales(cfg_path: pathlib.Path, log_path: pathlib.Path, sales: int,
                          warmup: int, prof: Any = None) -> list[dict[str, float]]:
    from firmware import config as config_mod
    from firmware.core import iso as iso_mod
    from firmware.core import machine
    from firmware.core.events import CardSwiped, HostAnswered, KeyPressed
    from firmware.runtime import journald
    from firmware.runtime.app import App
    from firmware.runtime.journal import Journal
    from firmware.runtime.vault import Vault
    from firmware.runtime.wiring import open_devices

    cfg = config_mod.load(str(cfg_path))
    saved, sys.stderr = sys.stderr, open(log_path, "a")  # the terminal's logging, to a file
    try:
        journald.setup(cfg.log_level)
    finally:
        sys.stderr = saved
    state = pathlib.Path(cfg.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    journal = Journal(state / "journal.sqlite3", Vault.open(state / "card.key", create=True))
    devices = open_devices(cfg)
    devices.card_reader.close()
    source, sink = CardSource(), DisplaySink()
    devices.card_reader, devices.display = source, sink  # type: ignore[assignment]
    app = App(cfg, devices, journal)
    sink.loop = asyncio.get_running_loop()
    st = Stamps()
    step = machine.step

    def stepped(state: Any, event: Any, now: Any) -> Any:
        name = ("core1" if isinstance(event, CardSwiped) else
                "core2" if isinstance(event, HostAnswered) else None)
        if name:
            st.mark(name)
        out = step(state, event, now)
        if name:
            st.mark(name + "_end")
        return out
    machine.step = stepped  # app.py calls core.step through the module
    st.wrap(journal, "start_attempt", "journal1", "journal1_end")
    st.wrap(journal, "record_answer", "journal2", "journal2_end")
    st.wrap(app.parts.link, "_write", None, "sent", when=lambda doc, **_: doc.get("t") == "0200")
    decode = iso_mod.decode
    iso_mod.decode = lambda payload: (st.mark("answer"), decode(payload))[1]
    stop = asyncio.Event()
    runner = asyncio.create_task(app.run(stop))

    until = waiter(app, runner)  # bench/memory.py's

    def phase() -> object:
        return app.state.phase if app.state is not None else None

    await until(lambda: phase() == machine.Phase.IDLE and app.monitor.state == "UP",
                "online idle")
    line = f"%B{PAN}^BENCH/CARD^30121010000000000000?;{PAN}=30121010000000000000?\r\n".encode()
    out: list[dict[str, float]] = []
    try:
        for n in range(warmup + sales):
            for key in (*f"{10 + n % 90}00", "OK"):
                app.emit(KeyPressed(key))
            await until(lambda: phase() == machine.Phase.WAIT_CARD, "SWIPE CARD")
            await until(lambda: not app.queue.qsize(), "the keys taken")
            await asyncio.sleep(0.002)  # the SWIPE CARD screen's write is done
            st.marks.clear()
            seen = len(sink.shown)
            sink.result = asyncio.Event()  # waited for, not polled: no bench task between
            if prof is not None and n >= warmup:
                prof.enable()  # the window from the swipe to the result screen only
            st.mark("swipe", source.swipe(line))
            await asyncio.wait_for(sink.result.wait(), 30)
            if prof is not None:
                prof.disable()
            journal.db.set_trace_callback(None)
            st.mark("screen", next(t for t, rows in sink.shown[seen:] if is_approved(rows)))
            if n >= warmup:
                out.append(dict(st.marks))
            await until(lambda: phase() == machine.Phase.RESULT, "the receipt printed")
            app.emit(KeyPressed("OK"))
            await until(lambda: phase() == machine.Phase.IDLE, "the idle screen")
    finally:
        machine.step, iso_mod.decode = step, decode
        stop.set()
        await runner
        devices.close()
        journal.close()
    return out


def inprocess(rig: Rig, sales: int, warmup: int,
              profile: str = "") -> tuple[list[dict[str, float]], list[float]]:
    """Run the in-process sales against hwsim's host directly (no proxy): the marks of each
    sale, and a bare client's round trips to the same host."""
    state = rig.tmp / "state-inprocess"
    shutil.rmtree(state, ignore_errors=True)
    cfg = rig.tmp / "inprocess.toml"
    overrides = {k: dict(v) for k, v in rig.overrides.items()}
    address = (str(rig.info["host"]), int(rig.info["host_port"]))
    overrides.setdefault("host", {}).update({"host": address[0], "port": address[1]})
    cfg.write_text(render_config(rig.info, state_dir=str(state), overrides=overrides))
    host = host_round_trips(address, 300)
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
    marks = asyncio.run(inprocess_sales(cfg, rig.tmp / "inprocess.log", sales, warmup, prof))
    if prof is not None:
        prof.dump_stats(profile)
    host += host_round_trips(address, 300)
    return marks, host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=1500, help="sales in all (default 1500)")
    parser.add_argument("--runs", type=int, default=3, help="runs they are split into")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--inprocess", type=int, default=1500,
                        help="sales through the real App in this process (default 1500)")
    parser.add_argument("--only-inprocess", action="store_true",
                        help="skip the measurement through hwsim")
    parser.add_argument("--profile", default="",
                        help="write cProfile's statistics of the in-process sales here")
    args = parser.parse_args()
    per_run = max(1, args.sales // args.runs)
    with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp:
        rig = start_rig(pathlib.Path(tmp), hwsim_only=args.only_inprocess)
        try:
            fsync = fsync_floor(rig.state_dir if rig.state_dir.exists() else rig.tmp)
            results: list[list[SaleTimes]] = []
            host: list[float] = []
            if not args.only_inprocess:
                primary = (str(rig.info["primary_host"]), int(rig.info["primary_port"]))
                host = host_round_trips(primary, 300)
                run(rig, args.warmup, 0)
                results = [run(rig, per_run, args.warmup + r * per_run)
                           for r in range(args.runs)]
                host += host_round_trips(primary, 300)
                rig.kill_fw(signal.SIGTERM)  # one terminal at a time on this host
            own_marks, own_host = inprocess(rig, args.inprocess, args.warmup, args.profile)
        finally:
            rig.stop()
    fsync_med = statistics.median(fsync)
    if results:
        print_hwsim(args, results, host, fsync_med)
    print_inprocess(own_marks, own_host, fsync, args.runs)
    return 0


def print_hwsim(args: Any, results: list[list[SaleTimes]], host: list[float],
                fsync_med: float) -> None:
    host_med = statistics.median(host)
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
    held = sum(t.display_before_request for t in everything)
    print(f"  display transfers before the 0200  {held} in {len(everything)} sales "
          f"({held / len(everything):.2f} a sale)")
    tx = statistics.median(t.lcd_transactions for t in everything)
    bits = statistics.median(t.lcd_bits for t in everything)
    print(f"  display, swipe -> full result      {tx:.0f} transactions, {bits:.0f} bits: "
          f"{bits / 100:.2f} ms at 100 kHz, {bits / 400:.2f} ms at 400 kHz (median)")
    ratio = statistics.median(t.total - host_med for t in everything) / (2 * fsync_med)
    print(f"  own time / (2 fsyncs)              {ratio:.1f}x  (1.0 would be the journal alone)")


def print_inprocess(marks: list[dict[str, float]], host: list[float], fsync: list[float],
                    runs: int) -> None:
    """The firmware's own time: swipe bytes handed to the driver's parser -> the result
    screen handed to the display sink, less that sale's own host round trip (0200 written
    -> 0210 read)."""
    def gap(m: dict[str, float], a: str, b: str) -> float:
        return m[b] - m[a]

    whole = [m for m in marks if all(k in m for _, a, b in STEPS for k in (a, b))]
    if len(whole) < len(marks):  # e.g. an answer that came too late: approved offline
        print(f"  ({len(marks) - len(whole)} sales without every mark are left out)")
    marks = whole
    own = [gap(m, "swipe", "screen") - gap(m, "sent", "answer") for m in marks]
    size = max(1, len(marks) // runs)
    chunks = [own[i:i + size] for i in range(0, len(own), size)][:runs]
    print("the firmware's own time (the real App in this process: card source and display "
          "sink in process,")
    print("  journal with its fsyncs, the host link to hwsim's host on loopback, no proxy)")
    print(f"  sales measured                     {len(marks)} in {len(chunks)} runs")
    print("                                          min  median     max  (ms, over runs)")
    shown = [pct([gap(m, "swipe", "screen") for m in marks[i * size:(i + 1) * size]], 50)
             for i in range(len(chunks))]
    print(f"  swipe -> result screen, p50        {spread(shown)}")
    print(f"  firmware's own time, p50           {spread([pct(c, 50) for c in chunks])}"
          "   goal <= 2 ms")
    print(f"  firmware's own time, p99           {spread([pct(c, 99) for c in chunks])}"
          "   goal <= 5 ms")
    trip = pct([gap(m, "sent", "answer") for m in marks], 50)
    print(f"  host round trip in the sale, p50   {ms(trip)}"
          f"  (a bare client's: {ms(statistics.median(host))})")
    print("  breakdown, ms (p50 / p99 of all sales):")
    for label, a, b in STEPS:
        values = [gap(m, a, b) for m in marks]
        print(f"    {label:36s} {ms(pct(values, 50))} {ms(pct(values, 99))}")
    print(f"  floor: 2 fsyncs on this file system "
          f"{ms(2 * min(fsync))} {ms(2 * statistics.median(fsync))} {ms(2 * max(fsync))}"
          "  (min/median/max of the probe, x 2)")
    ratio = statistics.median(own) / (2 * statistics.median(fsync))
    print(f"  own time / (2 fsyncs)              {ratio:.1f}x  (1.0 would be the journal alone)")


if __name__ == "__main__":
    sys.exit(main())
