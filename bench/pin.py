"""PIN block benchmark: an online PIN's fields 52 and 53, AES DUKPT and TDES DUKPT.

For each method it measures, over N blocks:

- the cryptography alone (firmware/dukpt.py): the PIN encryption key derived from the
  initial key for the counter (AES: up to 16 + 1 AES encipherments; TDES: up to 10
  non-reversible steps) and the PIN block made. The counters are spread over the whole
  range, so their one-bits (the derivation's steps) are as a terminal's life has them;
  the worst case (16, 10 one-bits) is measured apart. Goal: at most 1 ms.
- the whole `PinKeys.online_block` (firmware/runtime/pinkeys.py) on a real journal in a
  temporary directory: the counter written durably first, then the block. Its time is
  the disk's fsync more than the cryptography.
- the fsyncs that `online_block` adds, counted with strace (fsync and fdatasync of the
  process, a run of K blocks less a run of none). Goal: exactly one per PIN block.
- end to end (tests/rig.py: hwsim and posterm as two processes, [pin] on with hwsim's
  test AES DUKPT key, the host answering at once): N stripe sales whose service code
  asks for a PIN (6011000990139424, 120), the right PIN keyed; for each, the time from
  the OK key after the PIN (the midpoint of that control request) to the display
  transfer after which the first row reads APPROVED (hwsim's I2C log, so the
  benchmark's polling is not in it), and to the one that shows AUTHORIZING (the
  terminal's first screen after the OK). That span holds the key's way through evdev,
  the counter's durable write and the block, the sale's journal writes, the host's
  round trip with its own DUKPT derivation and PIN check, and the display's transfers.

    ./run bench   or   .venv/bin/python bench/pin.py [--count 2000] [--sales 20] [--no-e2e]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hw-sim"))

from firmware import dukpt  # noqa: E402

BDK_AES = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
BDK_TDES = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
IKID = bytes.fromhex("1234567890123456")
IKSN = bytes.fromhex("FFFF9876543210E00000")
PAN, FILL = "4111111111111111", bytes(8)


def _counters(method: str, count: int) -> list[int]:
    bits, _ = dukpt.counter_limits(method)
    out, c = [], 1
    step = max(1, (1 << bits) // (count + 1))
    while len(out) < count:
        c = (c + step) % (1 << bits) or 1
        while not dukpt.valid_counter(method, c):
            c = (c + (c & -c)) % (1 << bits) or 1
        out.append(c)
    return out


def _times(fn: Callable[[int], object], counters: list[int]) -> list[float]:
    out = []
    for c in counters:
        t0 = time.perf_counter()
        fn(c)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _line(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    return (f"  {name:<44} median {statistics.median(ms):7.3f} ms   p99 "
            f"{ms[int(len(ms) * 0.99) - 1]:7.3f} ms   max {ms[-1]:7.3f} ms")


def crypto(count: int) -> None:
    ik = dukpt.aes_initial_key(BDK_AES, IKID)
    ipek = dukpt.tdes_ipek(BDK_TDES, IKSN)

    def aes(c: int) -> object:
        return dukpt.format4_encipher(dukpt.aes_pin_key(ik, IKID, c), bytearray(b"1234"),
                                      PAN, FILL)

    def tdes(c: int) -> object:
        return dukpt.format0_encipher(dukpt.tdes_pin_key(ipek, dukpt.tdes_ksn(IKSN, c)),
                                      bytearray(b"1234"), PAN)

    print("cryptography (goal: at most 1 ms)")
    print(_line("AES DUKPT key + format 4, spread counters", _times(aes, _counters("aes",
                                                                                  count))))
    print(_line("AES, 16 one-bits (FFFF0000)", _times(aes, [0xFFFF0000] * count)))
    print(_line("TDES DUKPT key + format 0, spread counters",
                _times(tdes, _counters("tdes", count))))
    print(_line("TDES, 10 one-bits (1FF800)", _times(tdes, [0x1FF800] * count)))


def _store(tmp: pathlib.Path, method: str):  # type: ignore[no-untyped-def]
    from firmware.runtime.journal import Journal
    from firmware.runtime.pinkeys import PinKeys
    from firmware.runtime.vault import Vault
    from hwsim import fwconfig

    journal = Journal(tmp / "journal.sqlite3", Vault.open(tmp / "card.key", create=True))
    return journal, PinKeys.load(fwconfig.write_pin_key(tmp, method), journal, method)


def whole(count: int) -> None:
    print("PinKeys.online_block: counter on disk (one durable commit), then the block")
    for method in ("aes", "tdes"):
        with tempfile.TemporaryDirectory() as tmp:
            journal, keys = _store(pathlib.Path(tmp), method)
            ms = _times(lambda _, k=keys: k.online_block(bytearray(b"1234"), PAN),
                        list(range(count)))
            journal.close()
        print(_line(f"{method.upper()} online_block", ms))


def child(blocks: int, method: str) -> None:
    """Open the store, make `blocks` blocks, stop: strace counts this process's fsyncs."""
    with tempfile.TemporaryDirectory() as tmp:
        journal, keys = _store(pathlib.Path(tmp), method)
        for _ in range(blocks):
            keys.online_block(bytearray(b"1234"), PAN)
        journal.close()


def fsyncs(blocks: int) -> None:
    strace = shutil.which("strace")
    if strace is None:
        print("fsyncs per PIN block: strace is not installed; not counted")
        return
    for method in ("aes", "tdes"):
        counts = []
        for n in (0, blocks):
            with tempfile.NamedTemporaryFile() as out:
                subprocess.run([strace, "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o",
                                out.name, sys.executable, __file__, "--child", str(n),
                                "--method", method], check=True, cwd=ROOT)
                counts.append(sum(1 for line in open(out.name) if "sync(" in line))
        extra = (counts[1] - counts[0]) / blocks
        verdict = "OK" if extra == 1 else "MORE THAN ONE"
        print(f"fsyncs per PIN block ({method.upper()}, strace, {blocks} blocks): "
              f"{extra:g} ({verdict}; goal: exactly 1)")


# -- end to end ---------------------------------------------------------------------------

PIN_PAN, PIN = "6011000990139424", "1234"  # service code 120: PIN required; host: 1234
LCD = 0x27  # the display's I2C address
POLL = 0.005


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _wait(test: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the display never showed {what}")
        time.sleep(POLL)


def _e2e_sale(rig: Any, amount: str) -> tuple[float, float]:
    """(OK -> APPROVED, OK -> AUTHORIZING), seconds, from hwsim's I2C log."""
    rig.hw.wait_display("ENTER AMOUNT", timeout=30)
    rig.sale(amount, PIN_PAN, service_code="120")
    rig.hw.wait_display("ENTER PIN", timeout=20)
    rig.hw.press(PIN)
    rig.hw.wait_display("*" * len(PIN))
    time.sleep(0.05)  # the stars' transfer done: the log's next entry is the OK's
    mark = int(rig.hw.i2c_log(since=1 << 62)["next"])
    t0 = time.time()
    rig.hw.press("OK")
    t1 = time.time()
    _wait(lambda: rig.hw.display()[0].startswith("APPROVED"), 30, "APPROVED")
    log = rig.hw.i2c_log(since=mark)
    if log["dropped"]:
        raise RuntimeError("hwsim's I2C log overflowed during a sale")
    screens = [e for e in log["entries"] if e["addr"] == LCD and "rows" in e]
    shown = next((e for e in screens if e["rows"][0].startswith("APPROVED")), None)
    asked = next((e for e in screens if any("AUTHORIZING" in r for r in e["rows"])), None)
    if shown is None or asked is None:
        raise RuntimeError(f"the I2C log has no AUTHORIZING or no APPROVED screen: {screens}")
    rig.wait_idle(timeout=30)
    ok = (t0 + t1) / 2
    return float(shown["t"]) - ok, float(asked["t"]) - ok


def e2e(sales: int) -> None:
    from tests.rig import Rig

    with tempfile.TemporaryDirectory(prefix="posterm-bench-") as tmp:
        rig = Rig(pathlib.Path(tmp), pin=True, overrides={"operator": {"duplicate_minutes": 0}})
        try:
            rig.start()
            rig.wait_online()
            times = []
            for n in range(sales + 2):
                t = _e2e_sale(rig, str(1000 + n * 10))
                if n >= 2:  # two warm-up sales
                    times.append(t)
            counter = rig.log().count("online PIN entered")
            approved = sum(1 for e in rig.hw.ledger() if e["charged"] and e.get("pin"))
        finally:
            rig.stop()
    print(f"end to end: stripe PIN sale, OK after the PIN -> APPROVED on the display, {sales} "
          "sales (+2 warm-up), AES DUKPT, host answering at once; ms")
    for name, part in (("OK -> APPROVED", 0), ("of which OK -> AUTHORIZING", 1)):
        ms = [t[part] * 1000 for t in times]
        print(f"  {name:<44} median {statistics.median(ms):7.1f} ms   p90 "
              f"{_pct(ms, 90):7.1f} ms   max {max(ms):7.1f} ms")
    print(f"  PIN blocks made {counter}, PIN sales charged by the host {approved}")


def main() -> int:
    import logging

    logging.getLogger("posterm.vault").setLevel(logging.ERROR)  # each run's new card key
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default="aes", help=argparse.SUPPRESS)
    ap.add_argument("--sales", type=int, default=20, help="end-to-end PIN sales (default 20)")
    ap.add_argument("--no-e2e", action="store_true", help="no end-to-end part")
    args, _ = ap.parse_known_args()
    if args.child is not None:
        child(args.child, args.method)
        return 0
    crypto(args.count)
    whole(max(50, args.count // 10))
    fsyncs(20)
    if not args.no_e2e:
        e2e(args.sales)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
