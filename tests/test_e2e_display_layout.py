"""The screens of a sale keep their text in place, as the display shows it (hwsim's I2C log).

The display rewrites only the characters that change (drivers/lcd.py), so what a sale
costs on the bus is set by the layout: the amount keeps one row and its columns from its
entry to the result, the idle screen's top row (the path and link flag) and the battery
level stay through the sale, and the idle screen comes back byte for byte. Each screen
here is the glass after one I2C transfer, decoded by hwsim's HD44780 model.
"""

from __future__ import annotations

import time
from typing import Any

from tests.rig import Rig

PAN = "4761739001010010"
LCD = 0x27
AMOUNT = "SALE       EUR 12.00"


def _glass(rig: Rig, since: int) -> list[list[str]]:
    log = rig.hw.i2c_log(since=since)
    assert not log["dropped"]
    return [e["rows"] for e in log["entries"] if e["addr"] == LCD and e["kind"] == "write"]


def _wait(rig: Rig, test: Any, what: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = rig.hw.display()
        if test(rows):
            return rows
        assert time.monotonic() < deadline, f"never {what}: {rows}"
        time.sleep(0.02)


def test_a_sale_keeps_the_amount_and_the_idle_rows_in_place(rig: Rig) -> None:
    idle = rig.wait_idle()
    time.sleep(0.1)
    idle = rig.hw.display()
    assert idle[0].startswith("POSTERM") and idle[2].startswith("ENTER AMOUNT"), idle
    mark = rig.hw.i2c_log(since=1 << 62)["next"]
    rig.hw.press("1200")
    rig.hw.press("OK")
    _wait(rig, lambda r: r[2].strip() == "SWIPE CARD", "SWIPE CARD")
    time.sleep(0.05)
    swipe = rig.hw.i2c_log(since=1 << 62)["next"]
    rig.hw.swipe(PAN)
    _wait(rig, lambda r: r[0].startswith("APPROVED") and "PRINTING" not in r[3], "the result")
    rig.hw.press("OK")
    _wait(rig, lambda r: r == idle, "the idle screen as it was")
    time.sleep(0.1)
    screens = _glass(rig, mark)
    sale = [s for s in screens if s != idle]
    words = [" | ".join(r.rstrip() for r in s) for s in screens]

    # the amount: one row, the same columns, from its entry (the last digit keyed) to the
    # result; its word (SALE) stays beside it
    keyed = next(i for i, s in enumerate(sale) if s[1] == AMOUNT)
    assert all(s[1] == AMOUNT for s in sale[keyed:]), words
    phases = [next((w for w in ("SWIPE CARD", "AUTHORIZING", "APPROVED") if w in " ".join(s)),
                   "") for s in sale[keyed:]]
    assert {"SWIPE CARD", "AUTHORIZING", "APPROVED"} <= set(phases), words
    # the idle screen's top row (title, path) stays until the outcome takes it, and the
    # battery level keeps its cells on every screen of the sale
    assert all(s[0] == idle[0] for s in sale if "APPROVED" not in s[0]), words
    assert idle[3].rstrip().endswith("%")
    assert all(s[3][13:] == idle[3][13:] for s in sale), words
    # back at idle: every row as it was before the sale, byte for byte
    assert screens[-1] == idle and rig.hw.display() == idle, words

    # so from the swipe to idle only the words change: well under the old layout's 568 bytes
    paid = [e for e in rig.hw.i2c_log(since=swipe)["entries"] if e["addr"] == LCD]
    cost = sum(e["bytes"] for e in paid)
    assert len(paid) == 4 and cost <= 480, [(e["bytes"], e["rows"]) for e in paid]
