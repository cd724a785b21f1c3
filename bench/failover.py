"""Failover to the 4G modem: how long from a cut primary to the first approved sale, and
what a sale costs on each path.

Starts hwsim (with its modem model at a configured one-way network latency) and
posterm as two processes, then:

1. N sales on the primary path: time from the swipe to APPROVED on the display.
2. The primary is cut ("refuse": the port closes and the connection is reset, as
   when a router or cable goes away) and a sale is keyed at once: the time from
   the cut to APPROVED over the modem is the failover time.
3. N sales on the modem path: the extra cost per sale over the primary.
4. Failback, then the primary is cut as a "blackhole" (the connection stays up,
   nothing flows; the worst case): sales are keyed back to back until one is
   approved. That time is bounded by the response timeout plus the connection
   check (an echo test) that finds the connection dead.

    .venv/bin/python bench/failover.py [--sales N] [--latency SECONDS] [--tls]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rig import Rig  # noqa: E402

PAN = "4761739001010010"


def wait_rows(rig: Rig, starts: tuple[str, ...], timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r.rstrip() for r in rig.hw.display()]
        if rows[0].startswith(starts):
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {starts} on the display: {rows}")
        time.sleep(0.002)


def one_sale(rig: Rig, amount: int) -> tuple[float, list[str]]:
    """Key the amount, swipe, and time the swipe to the result screen."""
    rig.hw.press("CANCEL")
    rig.hw.wait_display("ENTER AMOUNT", timeout=30)
    rig.key_amount(str(amount))
    t0 = time.monotonic()
    rig.hw.swipe(PAN)
    rows = wait_rows(rig, ("APPROVED", "NO RESPONSE", "NOT COMPLETED", "DECLINED"))
    return time.monotonic() - t0, rows


def wait_log(rig: Rig, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in rig.log():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in the log")
        time.sleep(0.01)


def sales(rig: Rig, n: int, amount: int) -> list[float]:
    times = []
    for i in range(n):
        took, rows = one_sale(rig, amount + 100 * i)
        if rows[0] != "APPROVED":
            raise RuntimeError(f"sale not approved: {rows}")
        times.append(took)
    return times


def until_approved(rig: Rig, t_cut: float, amount: int) -> tuple[float, int]:
    """Sales back to back from the cut until one is approved online."""
    tries = 0
    while True:
        tries += 1
        _took, rows = one_sale(rig, amount + 100 * tries)
        if rows[0] == "APPROVED":
            return time.monotonic() - t_cut, tries
        if tries > 10:
            raise RuntimeError(f"no approval after {tries} sales: {rows}")


def ms(values: list[float]) -> str:
    return (f"p50 {statistics.median(values) * 1000:.1f} ms, mean "
            f"{statistics.fmean(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sales", type=int, default=10)
    ap.add_argument("--latency", type=float, default=0.05,
                    help="the modem network's one-way latency in seconds (default 0.05)")
    ap.add_argument("--tls", action="store_true", help="TLS on both paths")
    args = ap.parse_args()
    overrides: dict[str, dict[str, Any]] = {
        "modem": {"poll_interval": 5.0, "failback_after": 2.0, "command_timeout": 2.0},
        "host": {"response_timeout": 5.0, "connect_timeout": 3.0},
        "offline": {"enabled": False},
        "timeouts": {"busy_retries": 0},
    }
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(pathlib.Path(tmp), tls=args.tls, overrides=overrides)
        try:
            rig.start_sim()
            rig.hw.modem(latency=args.latency)
            rig.start_fw()
            wait_log(rig, "4G modem ready")
            sales(rig, 2, 100)  # warm up
            primary = sales(rig, args.sales, 1000)

            rig.hw.press("CANCEL")
            rig.hw.wait_display("ENTER AMOUNT")
            t_cut = time.monotonic()
            rig.hw.primary_down("refuse")
            refuse_time, refuse_tries = until_approved(rig, t_cut, 2000)
            modem = sales(rig, args.sales, 3000)

            rig.hw.primary_up()
            wait_log(rig, "failing back")
            deadline = time.monotonic() + 30
            while rig.log().count("host path: primary network (ETH)") < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("no failback")
                time.sleep(0.05)
            sales(rig, 1, 4000)
            t_cut = time.monotonic()
            rig.hw.primary_down("blackhole")
            hole_time, hole_tries = until_approved(rig, t_cut, 5000)
            rig.hw.primary_up()
        finally:
            rig.stop()

    rtt = 2 * args.latency * 1000
    print(f"failover (modem network round trip {rtt:.0f} ms, {'TLS' if args.tls else 'no TLS'}, "
          f"{args.sales} sales per path)")
    print(f"  sale on the primary path: {ms(primary)}")
    print(f"  sale on the 4G path:      {ms(modem)}")
    extra = statistics.median(modem) - statistics.median(primary)
    print(f"  extra per sale on 4G:     {extra * 1000:.1f} ms at p50 "
          f"({extra * 1000 - rtt:+.1f} ms beyond one round trip)")
    print(f"  primary refused/reset -> first approved sale over 4G: {refuse_time:.2f} s "
          f"({refuse_tries} sale(s) keyed, keying included)")
    print(f"  primary black-holed   -> first approved sale over 4G: {hole_time:.2f} s "
          f"({hole_tries} sale(s) keyed; response timeout 5 s + connection check)")


if __name__ == "__main__":
    main()
