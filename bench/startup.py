"""Start-to-READY: how long posterm takes from exec to systemd's READY=1.

Starts hwsim once, then posterm N times as its own process with NOTIFY_SOCKET
pointing at a socket this script owns, and measures the time from spawning the
process to the READY=1 datagram: with an empty state directory (new journal, new
key; the escpos capabilities pickle copied from the one built at install, here
.cache/escpos), with the state kept, and with the state of 10,000 past sales
(filled once through the journal as the firmware writes a sale). Also reports
the time to the first sign-on with the host. Prints min / median / max.

A terminal runs from byte code (the package's postinst runs compileall), so this
script compiles the project's byte code first, as `./run bench` does, and that is
the terminal's figure. `--from-source` measures the other way: no byte code of the
project's own modules (nothing written), each start
compiling them, as on a machine with PYTHONDONTWRITEBYTECODE and no compileall
(their __pycache__ folders are removed; the standard library's and site-packages'
byte code stays).

    .venv/bin/python bench/startup.py [--runs N] [--from-source]
"""

from __future__ import annotations

import argparse
import compileall
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rig import Rig, _env  # noqa: E402


SOURCE_ENV: dict[str, str] = {}  # --from-source: no byte code for the project's modules
PROJECT = ("firmware", "drivers", "fleet", "hw-sim")


def one_start(rig: Rig, notify: socket.socket, fresh: bool) -> tuple[float, float]:
    if fresh:
        shutil.rmtree(rig.state_dir, ignore_errors=True)
    if SOURCE_ENV:
        for folder in PROJECT:
            for cache in (ROOT / folder).rglob("__pycache__"):
                shutil.rmtree(cache, ignore_errors=True)
    env = _env({"NOTIFY_SOCKET": notify.getsockname(), **SOURCE_ENV})
    log = open(rig.log_path, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "--config", str(rig.config_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    ready = signed = 0.0
    deadline = t0 + 30
    while not ready and time.monotonic() < deadline:
        try:
            data = notify.recv(4096).decode()
        except TimeoutError:
            continue
        if "READY=1" in data:
            ready = time.monotonic() - t0
    while not signed and time.monotonic() < deadline:
        if rig.log().count("signed on to host") > rig._signed:
            signed = time.monotonic() - t0
        time.sleep(0.005)
    rig._signed = rig.log().count("signed on to host")
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    return ready, signed


def fill_past_sales(rig: Rig, count: int) -> None:
    """`count` approved sales in the rig's journal, each written as the firmware writes
    one (attempt, answer, shown, printed), in a state directory posterm made."""
    from firmware.core import iso
    from firmware.core.card import CardData
    from firmware.runtime.journal import Journal
    from firmware.runtime.vault import Vault

    ident = iso.Identity("TERM0001", "MERCHANT0000001", "978")
    card = CardData(pan="4761739001010010", expiry="3012", service_code="101", track2="")
    journal = Journal(rig.state_dir / "journal.sqlite3", Vault.open(rig.state_dir / "card.key",
                                                                    create=False))
    local = datetime(2026, 11, 23, 12, 0, 0)
    for n in range(count):
        fields = iso.sale_fields(ident, card=card, amount=100 + n, processing_code=iso.PURCHASE,
                                 local=local, batch=0, invoice=0)
        attempt, _ = journal.start_attempt(None, fields=fields, card=card, kind="purchase",
                                           amount=100 + n, currency="978", local=local,
                                           f7="1123120000")
        journal.record_answer(attempt, code="00", approval="123456", rrn=f"{n:012d}")
        journal.print_done("sale", attempt.sale_id)
        journal.mark_shown(attempt.sale_id)
    journal.checkpoint()
    journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--past-sales", type=int, default=10_000)
    parser.add_argument("--from-source", action="store_true",
                        help="no byte code for the project's modules (not a terminal's case)")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="posterm-bench-startup-"))
    if args.from_source:
        SOURCE_ENV.update(PYTHONDONTWRITEBYTECODE="1")
    else:  # as the package's postinst does on a terminal
        for folder in PROJECT:
            compileall.compile_dir(str(ROOT / folder), quiet=1)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(0.01)
    rig = Rig(tmp)
    rig._signed = 0  # type: ignore[attr-defined]
    try:
        rig.start_sim()
        rig.write_config()
        results = {}
        for label, fresh in (("empty state directory", True), ("state kept", False)):
            runs = [one_start(rig, notify, fresh) for _ in range(args.runs)]
            results[label] = runs
        fill_past_sales(rig, args.past_sales)
        results[f"{args.past_sales} past sales"] = [one_start(rig, notify, False)
                                                    for _ in range(args.runs)]
        how = "from source, no byte code" if args.from_source else "from byte code, as a terminal"
        print(f"start to READY=1 over {args.runs} runs each ({how}; this machine, hwsim on "
              "loopback; goals: empty <= 300 ms, 10000 past sales <= 500 ms):")
        for label, runs in results.items():
            ready = [r * 1000 for r, _ in runs]
            signed = [s * 1000 for _, s in runs]
            print(f"  {label:22s} READY ms min {min(ready):4.0f} / median "
                  f"{statistics.median(ready):4.0f} / max {max(ready):4.0f}; signed on median "
                  f"{statistics.median(signed):4.0f} ms")
    finally:
        rig.stop()
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
