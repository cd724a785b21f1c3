"""Display bus traffic: the I2C bytes and transactions of the screens of one sale.

Starts hwsim and posterm as two real processes (tests/rig.py) and runs sales as a
person would (amount, OK, swipe, result, OK back to idle). hwsim counts every
I2C transfer to the display's PCF8574 (address 0x27) with the text it shows
after it, so each screen's cost is read from the simulator, not estimated. The
bus time is what those transfers take on a real wire: per transaction the
address byte and the data bytes, 9 bits each with the ACK, plus START and STOP,
at 100 kHz and 400 kHz. Printed: per sale (swipe -> result -> back to idle, and
the whole sale from the first key) and per screen, min / median / max over the
sales.

    ./run bench        or     .venv/bin/python bench/display.py [--sales 30]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from sale import LCD, PAN, lcd_bits, start_rig, wait_rows  # noqa: E402
from tests.rig import Rig  # noqa: E402

GOAL_MS = 10.0  # bus time at 100 kHz for the screens from the swipe to the result


def one_sale(rig: Rig, n: int) -> tuple[list[dict[str, Any]], int]:
    """The display transfers of one sale from idle back to idle, and where the swipe came."""
    start = int(rig.hw.i2c_log(since=1 << 62)["next"])
    rig.hw.press(f"{10 + n % 900}00", "OK")
    wait_rows(rig, lambda r: r[1].strip() == "SWIPE CARD", "SWIPE CARD")
    time.sleep(0.02)
    swipe = int(rig.hw.i2c_log(since=1 << 62)["next"])
    rig.hw.swipe(PAN)
    wait_rows(rig, lambda r: r[0].startswith("APPROVED") and r[2].strip() == "", "the result")
    rig.hw.press("OK")
    wait_rows(rig, lambda r: "ENTER AMOUNT" in r[2], "the idle screen")
    time.sleep(0.02)
    log = rig.hw.i2c_log(since=start)
    if log["dropped"]:
        raise RuntimeError("hwsim's I2C log overflowed during a sale")
    return [e for e in log["entries"] if e["addr"] == LCD and e["kind"] == "write"], swipe


def bus_ms(bits: float, hz: int) -> float:
    return bits / hz * 1000


def row(label: str, values: list[float], fmt: str = "{:8.1f}") -> str:
    return (f"  {label:34s}" + fmt.format(min(values)) + fmt.format(statistics.median(values))
            + fmt.format(max(values)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp:
        rig = start_rig(pathlib.Path(tmp))
        try:
            one_sale(rig, 0)  # warm-up
            rig.hw.i2c_stats(reset=True)
            sales = [one_sale(rig, n + 1) for n in range(args.sales)]
            stats = {d["addr"]: d for d in rig.hw.i2c_stats()}
        finally:
            rig.stop()
    whole = [(len(e), sum(lcd_bits(x["bytes"]) for x in e), sum(x["bytes"] for x in e))
             for e, _ in sales]
    paid = [[x for x in e if x["seq"] > swipe] for e, swipe in sales]
    from_swipe = [(len(e), sum(lcd_bits(x["bytes"]) for x in e), sum(x["bytes"] for x in e))
                  for e in paid]
    print("display bus benchmark (I2C to the PCF8574/HD44780 at 0x27, counted by hwsim)")
    print(f"  sales                             {args.sales}")
    print("                                         min  median     max")
    for title, data in (("swipe -> result -> idle", from_swipe),
                        ("whole sale, first key -> idle", whole)):
        print(f"  {title}:")
        print(row("  transactions", [float(t) for t, _, _ in data]))
        print(row("  data bytes", [float(b) for _, _, b in data]))
        print(row("  bus time at 100 kHz, ms", [bus_ms(bits, 100_000) for _, bits, _ in data],
                  "{:8.2f}"))
        print(row("  bus time at 400 kHz, ms", [bus_ms(bits, 400_000) for _, bits, _ in data],
                  "{:8.2f}"))
    print("  per transaction, swipe -> idle (first sale), with the rows it leaves on the glass:")
    for entry in paid[0]:
        bits = lcd_bits(entry["bytes"])
        text = " | ".join(r.rstrip() for r in entry.get("rows", []))
        print(f"    {entry['bytes']:4d} bytes {bus_ms(bits, 100_000):6.2f} ms @100k "
              f"{bus_ms(bits, 400_000):5.2f} ms @400k  {text}")
    lcd = stats.get(LCD)
    if lcd:
        print(f"  hwsim's counters over {args.sales} sales: {lcd['transactions']} transactions, "
              f"{lcd['bytes']} bytes, {lcd['bits']} bits, {lcd['nacks']} refused")
    median_swipe = statistics.median(bus_ms(bits, 100_000) for _, bits, _ in from_swipe)
    print(f"  goal: swipe -> idle under {GOAL_MS:g} ms at 100 kHz: "
          f"{'met' if median_swipe < GOAL_MS else 'not met'} ({median_swipe:.2f} ms; each "
          "changed character costs 4 PCF8574 bytes = 0.36 ms at 100 kHz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
