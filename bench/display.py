"""Display bus traffic: the characters each screen of a sale changes, and their bus time.

Starts hwsim and posterm as two real processes (tests/rig.py) and runs sales as a
person would (amount, OK, swipe, result, OK back to idle). hwsim counts every
I2C transfer to the display's PCF8574 (address 0x27) and keeps the text it shows
after it, so each screen's cost is read from the simulator, not estimated. The
bus time is what those transfers take on a real wire: per transaction the
address byte and the data bytes, 9 bits each with the ACK, plus START and STOP,
at 100 kHz and 400 kHz. A changed character is 4 PCF8574 bytes (two nibbles, E
high then low): 36 bits, 0.36 ms at 100 kHz; a cursor move costs the same.

Printed, for the sale from the swipe back to idle (and the whole sale from the
first key): per screen, the characters it changed, the cursor moves, the bytes and
the bus time at 100 and 400 kHz; then the total against the goal (<= 10 ms at
100 kHz), and the floor: the characters any layout must change for the words
those screens show. Per transition, the words that appear must be written and the
words that go must be overwritten, so at least max(characters appearing,
characters going) cells change whatever the rows and columns (letters that happen
to fall on the same letter aside). `--chip` adds a chip sale (pcscd and vpcd
must be usable: root).

    ./run bench        or     .venv/bin/python bench/display.py [--sales 30] [--chip]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from sale import LCD, PAN, lcd_bits, start_rig, wait_rows  # noqa: E402
from tests.rig import Rig  # noqa: E402

GOAL_MS = 10.0  # bus time at 100 kHz from the swipe back to the idle screen
CHAR_BITS = 4 * 9  # one character or one cursor move: four PCF8574 bytes with their ACKs
OVERHEAD_BITS = lcd_bits(0)  # a transaction's START, address byte and STOP
CHIP_PROFILE = "online-pin"  # hwsim's chip card that goes online (bench/chip.py's)


def one_sale(rig: Rig, n: int) -> tuple[list[dict[str, Any]], list[str], int]:
    """The display transfers of one sale from idle back to idle, the rows on the glass
    before the first key, and where the swipe came."""
    wait_rows(rig, lambda r: "ENTER AMOUNT" in r[2], "the idle screen")
    time.sleep(0.02)
    start = int(rig.hw.i2c_log(since=1 << 62)["next"])
    before = [r.ljust(20) for r in rig.hw.display()]
    rig.hw.press(f"{10 + n % 900}00", "OK")
    wait_rows(rig, lambda r: r[2].strip() == "SWIPE CARD", "SWIPE CARD")
    time.sleep(0.02)
    swipe = int(rig.hw.i2c_log(since=1 << 62)["next"])
    rig.hw.swipe(PAN)
    wait_rows(rig, lambda r: r[0].startswith("APPROVED") and "PRINTING" not in r[3],
              "the result")
    rig.hw.press("OK")
    wait_rows(rig, lambda r: "ENTER AMOUNT" in r[2], "the idle screen")
    time.sleep(0.02)
    log = rig.hw.i2c_log(since=start)
    if log["dropped"]:
        raise RuntimeError("hwsim's I2C log overflowed during a sale")
    writes = [e for e in log["entries"] if e["addr"] == LCD and e["kind"] == "write"]
    return writes, before, swipe


def chip_sale(rig: Any, n: int, profile: str) -> tuple[list[dict[str, Any]], list[str], int]:
    """The same for a chip card: amount, insert, REMOVE CARD, card out, idle."""
    rig.hw.wait_display("ENTER AMOUNT", timeout=30)
    time.sleep(0.05)
    start = int(rig.hw.i2c_log(since=1 << 62)["next"])
    before = [r.ljust(20) for r in rig.hw.display()]
    rig.key_amount("1250")
    rig.hw.wait_display("INSERT CARD", timeout=10)
    time.sleep(0.05)
    insert = int(rig.hw.i2c_log(since=1 << 62)["next"])
    rig.hw.chip_insert(profile)
    deadline = time.monotonic() + 30
    while not any(r.startswith("REMOVE CARD") for r in rig.hw.display()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no REMOVE CARD: {rig.hw.display()}")
        time.sleep(0.01)
    rig.hw.chip_remove()
    rig.wait_idle(timeout=30)
    time.sleep(0.05)
    log = rig.hw.i2c_log(since=start)
    if log["dropped"]:
        raise RuntimeError("hwsim's I2C log overflowed during a sale")
    writes = [e for e in log["entries"] if e["addr"] == LCD and e["kind"] == "write"]
    return writes, before, insert


def items(rows: list[str]) -> list[str]:
    """The words of a screen: each row's runs of text, split where two spaces part them
    ("SALE       EUR 12.00" is SALE and EUR 12.00)."""
    return [w for row in rows for w in re.split(r" {2,}", row.strip()) if w]


def letters(words: list[str]) -> int:
    return sum(len(w.replace(" ", "")) for w in words)


def floor_chars(old: list[str], new: list[str]) -> int:
    """The fewest cells any layout changes from `old` to `new`: the words that appear
    must be written, the words that go overwritten (one write does one of each)."""
    was, now = items(old), items(new)
    appear = [w for w in now if w not in was]
    go = [w for w in was if w not in now]
    return max(letters(appear), letters(go))


def changed(old: list[str], new: list[str]) -> int:
    return sum(a != b for r0, r1 in zip(old, new, strict=True)
               for a, b in zip(r0.ljust(20), r1.ljust(20), strict=True))


def screens(writes: list[dict[str, Any]], before: list[str]) -> list[dict[str, Any]]:
    """Per transfer: the rows it left, the characters it changed, cursor moves, bytes, bits."""
    out, glass = [], before
    for e in writes:
        rows = [r.ljust(20) for r in e.get("rows", glass)]
        chars = changed(glass, rows)
        out.append({"seq": e["seq"], "rows": rows, "chars": chars,
                    "moves": e["bytes"] // 4 - chars, "bytes": e["bytes"],
                    "bits": lcd_bits(e["bytes"]), "floor": floor_chars(glass, rows)})
        glass = rows
    return out


def ms(bits: float, hz: int) -> float:
    return bits / hz * 1000


def report(title: str, sales: list[list[dict[str, Any]]], goal: bool) -> float:
    """Print one kind of sale's screens (the first sale's) and totals over all; the median
    bus time at 100 kHz."""
    first = sales[0]
    print(f"  {title}, per screen (first sale; the rows it leaves on the glass):")
    print(f"    {'chars':>5} {'moves':>5} {'bytes':>5} {'@100k ms':>8} {'@400k ms':>8} "
          f"{'floor':>5}  rows")
    for s in first:
        text = " | ".join(r.rstrip() for r in s["rows"])
        print(f"    {s['chars']:5d} {s['moves']:5d} {s['bytes']:5d} {ms(s['bits'], 100_000):8.2f} "
              f"{ms(s['bits'], 400_000):8.2f} {s['floor']:5d}  {text}")
    totals = [(sum(s["chars"] for s in sale), sum(s["moves"] for s in sale), len(sale),
               sum(s["bits"] for s in sale), sum(s["floor"] for s in sale)) for sale in sales]
    t100 = [ms(t[3], 100_000) for t in totals]
    t400 = [ms(t[3], 400_000) for t in totals]
    print(f"    total over {len(sales)} sales, min / median / max:")
    print(f"      changed characters {_mmm([t[0] for t in totals], '{:.0f}')}, cursor moves "
          f"{_mmm([t[1] for t in totals], '{:.0f}')}, transactions "
          f"{_mmm([t[2] for t in totals], '{:.0f}')}")
    print(f"      bus time at 100 kHz {_mmm(t100)} ms, at 400 kHz {_mmm(t400)} ms")
    shown = [sum(s["bits"] for s in sale[:-1]) for sale in sales]  # all but the idle screen
    print(f"      of which before the idle screen (to the result): at 100 kHz "
          f"{_mmm([ms(b, 100_000) for b in shown])} ms, at 400 kHz "
          f"{_mmm([ms(b, 400_000) for b in shown])} ms, {len(sales[0]) - 1} transactions")
    if goal:
        floor = statistics.median(t[4] for t in totals)
        screens_n = statistics.median(t[2] for t in totals)
        floor_bits = floor * CHAR_BITS + screens_n * OVERHEAD_BITS
        median = statistics.median(t100)
        print(f"    goal: <= {GOAL_MS:g} ms at 100 kHz: "
              f"{'met' if median <= GOAL_MS else 'not met'} ({median:.2f} ms)")
        print(f"    floor for these words: {floor:.0f} characters must change x 0.36 ms + "
              f"{screens_n:.0f} transactions = {ms(floor_bits, 100_000):.2f} ms at 100 kHz "
              f"({ms(floor_bits, 400_000):.2f} ms at 400 kHz)")
    return statistics.median(t100)


def _mmm(values: list[float], fmt: str = "{:.2f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                               max(values)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=30)
    parser.add_argument("--chip", action="store_true",
                        help="a chip sale too (pcscd and vpcd: root)")
    args, _ = parser.parse_known_args()  # ./run bench passes its arguments to every script
    with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp:
        rig = start_rig(pathlib.Path(tmp))
        try:
            one_sale(rig, 0)  # warm-up
            rig.hw.i2c_stats(reset=True)
            runs = [one_sale(rig, n + 1) for n in range(args.sales)]
            stats = {d["addr"]: d for d in rig.hw.i2c_stats()}
        finally:
            rig.stop()
    whole = [screens(w, before) for w, before, _ in runs]
    paid = [[s for s in sale if s["seq"] > swipe]
            for sale, (_, _, swipe) in zip(whole, runs, strict=True)]
    print("display bus benchmark (I2C to the PCF8574/HD44780 at 0x27, counted by hwsim)")
    print(f"  stripe sales: {args.sales} (host answering at once, printer in hwsim, battery "
          "gauge and modem configured)")
    report("swipe -> result -> idle", paid, goal=True)
    report("whole sale, first key -> idle", whole, goal=False)
    lcd = stats.get(LCD)
    if lcd:
        print(f"  hwsim's counters over {args.sales} sales: {lcd['transactions']} transactions, "
              f"{lcd['bytes']} bytes, {lcd['bits']} bits, {lcd['nacks']} refused")
    if args.chip:
        chip(max(3, args.sales // 5))
    return 0


def chip(sales: int) -> None:
    """Chip sales through pcscd and vpcd, set up as bench/chip.py's end-to-end part does."""
    import shutil

    from tests.chiprig import Pcscd, missing

    why_not = missing()
    if why_not:
        print(f"  chip sales: skipped ({why_not})")
        return
    pcsc_dir = pathlib.Path(tempfile.mkdtemp(prefix="pcsc-", dir="/tmp"))
    pcscd = Pcscd(pcsc_dir)
    try:
        pcscd.start()
        with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp:
            rig = Rig(pathlib.Path(tmp), pcsc=pcscd,
                      overrides={"operator": {"duplicate_minutes": 0}})
            try:
                rig.start()
                rig.wait_online()
                chip_sale(rig, 0, CHIP_PROFILE)  # warm-up
                runs = [chip_sale(rig, n + 1, CHIP_PROFILE) for n in range(sales)]
            finally:
                rig.stop()
    finally:
        pcscd.stop()
        shutil.rmtree(pcsc_dir, ignore_errors=True)
    whole = [screens(w, before) for w, before, _ in runs]
    paid = [[s for s in sale if s["seq"] > ins]
            for sale, (_, _, ins) in zip(whole, runs, strict=True)]
    print(f"  chip sales ({CHIP_PROFILE}, online, host answering at once): {sales}")
    report("card inserted -> result -> card out -> idle", paid, goal=True)


if __name__ == "__main__":
    sys.exit(main())
