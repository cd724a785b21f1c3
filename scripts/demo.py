"""Show a sale happen: start hwsim and posterm, key an amount, swipe a card, print the receipt.

Run it with `./run demo`. Everything runs on this machine: hwsim simulates the
keypad, card reader, display, printer, GPIO and the acquirer host; posterm is the
real firmware, talking to them through the same wires as on a terminal.
Options: --amount 12.50, --pan 4761739001010010, --keep (leave both running),
--web [[HOST:]PORT] (serve the terminal as a web page, 127.0.0.1:8580 by default, and
keep running until Ctrl-C: open the address it prints).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwsim.client import HwsimClient, draw_display  # noqa: E402
from hwsim.fwconfig import render_config  # noqa: E402


def step(title: str, hw: HwsimClient) -> None:
    print(f"\n== {title}")
    print(draw_display(hw.display()))


PIDS = "demo.pids"  # hwsim's and posterm's process ids while a demo runs (--keep, --web)


def fresh_world(base: pathlib.Path, sim_dir: pathlib.Path, state_dir: pathlib.Path) -> None:
    """Every demo starts a new world: the firmware's journal and the host's ledger are
    both new, so that they always agree (hwsim's host keeps no ledger between runs; a
    journal kept from the last demo would hold sales this host never saw, and its
    duplicate guard would ask about the same card and amount). A demo left running
    (--keep, or --web in another terminal) is stopped first."""
    pids = base / PIDS
    if pids.exists():
        for text in pids.read_text().split():
            with contextlib.suppress(ValueError, OSError):
                pid = int(text)
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
                if str(base).encode() in cmdline:  # still ours, not a reused number
                    os.kill(pid, signal.SIGTERM)
                    print(f"stopped the demo left running (process {pid})")
                    for _ in range(100):
                        if not pathlib.Path(f"/proc/{pid}").exists():
                            break
                        time.sleep(0.1)
        pids.unlink(missing_ok=True)
    for old in (sim_dir, state_dir):
        shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amount", default="12.50")
    parser.add_argument("--pan", default="4761739001010010")
    parser.add_argument("--dir", default=str(ROOT / "run-state" / "demo"))
    parser.add_argument("--keep", action="store_true", help="leave hwsim and posterm running")
    parser.add_argument("--web", nargs="?", const="8580", metavar="[HOST:]PORT",
                        help="serve the simulated terminal as a web page (default "
                        "127.0.0.1:8580) and run until Ctrl-C")
    args = parser.parse_args()

    base = pathlib.Path(args.dir)
    sim_dir, state_dir = base / "hwsim", base / "state"
    base.mkdir(parents=True, exist_ok=True)
    fresh_world(base, sim_dir, state_dir)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    web = ["--web", args.web] if args.web else []
    sim = subprocess.Popen([sys.executable, "-m", "hwsim", "run", "--dir", str(sim_dir), *web],
                           env=env, stderr=open(base / "hwsim.log", "w"))
    fw = None
    pids = base / PIDS
    try:
        info_path = sim_dir / "hwsim.json"
        for _ in range(400):
            if info_path.exists() or sim.poll() is not None:
                break
            time.sleep(0.05)
        if not info_path.exists():
            print("hwsim did not start:\n" + (base / "hwsim.log").read_text(), file=sys.stderr)
            return 1
        info = json.loads(info_path.read_text())
        if "web" in info:
            print(f"\n   hwsim's web page: {info['web']}   (open it in a browser)\n")
        config = base / "posterm.toml"
        config.write_text(render_config(info, state_dir=str(state_dir)))
        print(f"hwsim running in {sim_dir}; firmware configuration {config}")
        log_path = base / "posterm.log"
        fw = subprocess.Popen([sys.executable, "-m", "firmware", "--config", str(config)],
                              env=env, stderr=open(log_path, "w"))
        pids.write_text(f"{sim.pid} {fw.pid}\n")
        hw = HwsimClient.from_dir(str(sim_dir))
        for _ in range(400):
            if "posterm ready" in log_path.read_text():
                break
            if fw.poll() is not None:
                print(log_path.read_text())
                return 1
            time.sleep(0.05)
        hw.wait_display("ENTER AMOUNT")
        step("terminal idle", hw)
        digits = args.amount.replace(".", "").lstrip("0")
        hw.press(digits)
        hw.wait_display(f"EUR {int(digits) // 100}.{int(digits) % 100:02d}")
        step(f"keyed {args.amount}", hw)
        hw.press("OK")
        hw.wait_display("SWIPE CARD")
        step("amount confirmed: waiting for the card", hw)
        hw.swipe(args.pan)
        print(f"\n(swiped test card {args.pan[:6]}...{args.pan[-4:]})")
        hw.wait_display("AUTH", timeout=40)
        step("host answered", hw)
        for _ in range(100):
            if hw.receipts():
                break
            time.sleep(0.1)
        print("\n== printed receipt")
        for receipt in hw.receipts()[-1:]:
            print("+" + "-" * 34 + "+")
            for line in receipt.splitlines():
                print(f"| {line:<32} |")
            print("+" + "-" * 34 + "+")
        entry = hw.ledger()[-1]
        print(f"\n== host ledger: stan {entry['stan']} amount {entry['amount']} "
              f"charged={entry['charged']} approval {entry['approval']}")
        print(f"\nlogs: {log_path}  {base / 'hwsim.log'}")
        if "web" in info:
            print(f"\nhwsim and posterm keep running: open {info['web']} to use the terminal "
                  "(keys, cards, faults); Ctrl-C stops them.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while sim.poll() is None and fw.poll() is None:
                    time.sleep(0.5)
            return 0
        if args.keep:
            print(f"left running; try: .venv/bin/hwsim ctl --dir {sim_dir} display")
            return 0
        return 0
    finally:
        if not args.keep:
            for proc in (fw, sim):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
            pids.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
