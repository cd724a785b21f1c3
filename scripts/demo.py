"""Show a sale happen: start hwsim and posterm, key an amount, swipe a card, print the receipt.

Run it with `./run demo`. Everything runs on this machine: hwsim simulates the
keypad, card reader, display, printer, GPIO and the acquirer host; posterm is the
real firmware, talking to them through the same wires as on a terminal.

Then, when it can, a chip sale: a test chip card inserted into the chip reader, read
by the firmware's EMV kernel through PC/SC, the host's answer given to the card, the
receipt, the card taken out. The chip reader is a private pcscd (in a mount namespace
of its own, as tests/chiprig.py starts it for the tests) with vpcd's virtual reader,
into which hwsim's chip slot plugs its cards: that needs root, pcscd, vpcd's driver
and pyscard (`./run demo` as root installs them). Without them the demo says why in
one line and shows the swipe sale only.

With --fleet, the terminal in its fleet (README "Fleet", docs/fleet.md): a Mosquitto on
a free loopback port (tests/fleetrig.py's broker: TLS with a CA and certificates made
for this run in the demo's directory, client certificates, the fleet's ACL), the fleet
console (`posterm-fleet serve`, its page on a free loopback port) and the firmware with
[fleet] pointing at the broker; after the sales the demo prints the console's `list`,
the terminal's events as the console holds them, and a `ping` sent from the console's
page with the terminal's reply. Without mosquitto it says why in one line and sells
without a fleet.

Options: --amount 12.50, --pan 4761739001010010, --chip-amount 20.00, --chip online-pin
(a profile of hw-sim/chipprofiles.py), --no-chip, --fleet, --keep (leave them running),
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
import urllib.request
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hwsim.client import HwsimClient, draw_display  # noqa: E402
from hwsim.fwconfig import TERMINAL_ID, FleetLink, render_config  # noqa: E402


def step(title: str, hw: HwsimClient) -> None:
    print(f"\n== {title}")
    print(draw_display(hw.display()))


PIDS = "demo.pids"  # the demo's process ids while it runs (--keep, --web): hwsim, posterm,
# pcscd, and with --fleet the broker and the console
PCSC_HOW = "run `./run demo` as root: it installs Debian's pcscd and vsmartcard-vpcd and pyscard"
SOCKET_MAX = 107  # a Unix socket's path: at most 107 bytes (sun_path)


def print_screen(rows: list[str]) -> None:
    print(draw_display(rows))


def print_receipt(receipt: str) -> None:
    print("+" + "-" * 34 + "+")
    for line in receipt.splitlines():
        print(f"| {line:<32} |")
    print("+" + "-" * 34 + "+")


def start_pcscd(where: pathlib.Path) -> tuple[Any, str]:
    """A private pcscd with vpcd's reader for the chip sale, or (None, why not).

    tests/chiprig.py's `Pcscd`, but one that outlives the demo when it is asked to
    (--keep): its pid goes into the demo's pid file like hwsim's and posterm's, and the
    next demo stops it."""
    try:
        from tests import chiprig
    except ImportError as exc:  # pytest: the test extras that ./run installs
        return None, f"the chip reader's rig cannot be loaded ({exc})"
    if os.geteuid() != 0:
        return None, "the demo starts its own pcscd and needs root"
    why = chiprig.missing()
    if why:
        return None, why
    if len(str(where / "sock" / "pcscd.comm").encode()) > SOCKET_MAX:
        return None, f"the path of pcscd's socket under {where} is too long (give a shorter --dir)"

    class DemoPcscd(chiprig.Pcscd):
        def _spawn(self) -> None:  # as chiprig's, without dying with the demo
            sock = self.dir / "sock"
            sock.mkdir(parents=True, exist_ok=True)
            for stale in sock.iterdir():
                stale.unlink()
            os.makedirs("/run/pcscd", exist_ok=True)
            script = f"mount --bind {sock} /run/pcscd && exec pcscd -f -c {self.dir / 'conf'}"
            with open(self.dir / "pcscd.log", "ab") as out:
                self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script],
                                             stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)

    where.mkdir(parents=True, exist_ok=True)
    pcscd = DemoPcscd(where)
    try:
        return pcscd.start(), ""
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pcscd.stop()
        return None, f"pcscd did not start ({str(exc).splitlines()[0]})"


class Fleet:
    """--fleet: the broker (tests/fleetrig.py's Mosquitto), the fleet's signing key, the
    console (`posterm-fleet serve`) and the terminal's [fleet] (`link`)."""

    def __init__(self, where: pathlib.Path, broker: Any) -> None:
        from fleet.commands import keygen

        self.dir, self.broker = where, broker
        self.private, self.public = keygen(where / "keys")
        cert, key = broker.cert(TERMINAL_ID)  # CN = the terminal id: its client id, its ACL
        self.link = FleetLink([f"127.0.0.1:{broker.port}"], broker.ca_cert, cert, key,
                              command_key=str(self.public))
        self.db = where / "fleet.db"
        self.log = where / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def serve(self, env: dict[str, str]) -> str:
        """Start the console and wait until it is subscribed and its page served: its
        address, or why not ("")."""
        cert, key = self.broker.cert("console")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet", "serve", "--broker",
                 f"127.0.0.1:{self.broker.port}", "--ca", self.broker.ca_cert, "--cert", cert,
                 "--cert-key", key, "--key", str(self.private), "--db", str(self.db),
                 "--web", "127.0.0.1:0"], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        for _ in range(400):
            text = self.log.read_text(errors="replace")
            if "page http" in text:
                self.url = text.split("page ", 1)[1].split(",", 1)[0]
                return self.url
            if self.proc.poll() is not None:
                return ""
            time.sleep(0.05)
        return ""

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        origin = self.url.rstrip("/")
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Origin": origin}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def terminal(self) -> dict[str, Any]:
        try:
            got: dict[str, Any] = self.get(f"api/terminals/{TERMINAL_ID}")
            return got
        except OSError:  # 404 until the console has heard of it
            return {}

    def show(self, sales: int, env: dict[str, str]) -> None:
        """Wait until the console holds the terminal's `sales` sale events, then print
        its list, the terminal's events, and a ping sent from its page."""
        view: dict[str, Any] = {}
        for _ in range(400):
            view = self.terminal()
            batch = (view.get("facts") or {}).get("batch") or {}
            if len([e for e in view.get("events", []) if e["kind"] == "sale"]) >= sales \
                    and batch.get("purchases", 0) >= sales:  # the telemetry after them
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the console did not get the terminal's {sales} sale "
                                 f"events within 20 s: {view}\n{self.log.read_text()}")
        listed = subprocess.run([sys.executable, "-m", "fleet", "list", "--db", str(self.db)],
                                env=env, capture_output=True, text=True, timeout=60)
        print(f"\n== the fleet console: posterm-fleet list\n{listed.stdout.rstrip()}"
              f"{listed.stderr.rstrip()}")
        print(f"\n== {TERMINAL_ID}'s events in the console (seq, kind, data)")
        for e in sorted(view["events"], key=lambda e: int(e["seq"])):
            print(f"  {e['seq']:>3}  {e['t']}  {e['kind']:<8} "
                  f"{json.dumps(e['data'], sort_keys=True)}")
        facts = view["facts"]
        print(f"   telemetry: link {facts.get('connectivity', {}).get('link')}, printer "
              f"{facts.get('printer')}, batch {json.dumps(facts.get('batch'))}")
        sent = self.post(f"api/terminals/{TERMINAL_ID}/commands", {"cmd": "ping"})
        print(f"\n== ping from the console's page: reply {json.dumps(sent['reply'])}")
        print(f"\nfleet console: {self.url}   (broker 127.0.0.1:{self.broker.port}, TLS; "
              f"database {self.db})")

    def pids(self) -> list[int]:
        procs = [self.broker.proc, self.proc]
        return [p.pid for p in procs if p is not None and p.poll() is None]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.broker.stop()


def start_fleet(where: pathlib.Path, env: dict[str, str]) -> tuple[Fleet | None, str]:
    """The broker and the console for --fleet, or (None, why not)."""
    try:
        from tests import fleetrig
    except ImportError as exc:  # pytest, paho-mqtt: what ./run installs
        return None, f"the fleet's broker rig cannot be loaded ({exc})"
    if fleetrig.MOSQUITTO is None:
        return None, ("mosquitto is not installed (Debian: apt-get install mosquitto); the "
                      "fleet demo starts its own on loopback")
    where.mkdir(parents=True, exist_ok=True)
    broker = fleetrig.Broker(where)
    try:
        broker.start()
    except (RuntimeError, AssertionError, OSError) as exc:
        broker.stop()
        return None, f"mosquitto did not start ({str(exc).splitlines()[0]})"
    fleet = Fleet(where, broker)
    if not fleet.serve(env):
        fleet.stop()
        return None, f"the fleet console did not start: {fleet.log.read_text()[-400:]}"
    return fleet, ""


def follow(hw: HwsimClient, done: Any, timeout: float) -> list[str]:
    """Print each screen the display shows until `done(rows)`; the last rows."""
    shown: list[str] | None = None
    deadline = time.monotonic() + timeout
    while True:
        rows = hw.display()
        if rows != shown:
            print_screen(rows)
            shown = rows
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError("the display did not get there within "
                                 f"{timeout:g} s:\n" + draw_display(rows))
        time.sleep(0.02)


def chip_sale(hw: HwsimClient, amount: str, profile: str) -> None:
    """Key the amount, insert the chip card, show the screens, the receipt and the host's
    ledger entry, take the card out."""
    hw.wait_display("ENTER AMOUNT", timeout=40)
    digits = amount.replace(".", "").lstrip("0")
    hw.press(digits)
    hw.wait_display(f"EUR {int(digits) // 100}.{int(digits) % 100:02d}")
    hw.press("OK")
    hw.wait_display("SWIPE OR INSERT CARD")
    step(f"chip sale: keyed {amount}, waiting for the card", hw)
    receipts = len(hw.receipts())
    hw.chip_insert(profile)
    print(f"\n(inserted test chip card {profile!r})\n")
    follow(hw, lambda rows: any(r.startswith("REMOVE CARD") for r in rows), timeout=60)
    for _ in range(100):
        if len(hw.receipts()) > receipts:
            break
        time.sleep(0.1)
    print("\n== printed receipt (chip)")
    for receipt in hw.receipts()[receipts:]:
        print_receipt(receipt)
    entry = hw.ledger()[-1]
    print(f"\n== host ledger: stan {entry['stan']} amount {entry['amount']} "
          f"charged={entry['charged']} approval {entry['approval']} "
          f"entry mode {entry.get('entry_mode', '?')}")
    hw.chip_remove()
    print("\n(card taken out)")
    hw.wait_display("ENTER AMOUNT", timeout=20)
    step("card removed: the terminal is idle", hw)


def fresh_world(base: pathlib.Path, *dirs: pathlib.Path) -> None:
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
    for old in dirs:
        shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amount", default="12.50")
    parser.add_argument("--pan", default="4761739001010010")
    parser.add_argument("--chip-amount", default="20.00", help="the chip sale's amount")
    parser.add_argument("--chip", default="online-pin", metavar="PROFILE",
                        help="the test chip card of the chip sale (hw-sim/chipprofiles.py)")
    parser.add_argument("--no-chip", action="store_true", help="the swipe sale only")
    parser.add_argument("--dir", default=str(ROOT / "run-state" / "demo"))
    parser.add_argument("--fleet", action="store_true", help="a broker, the fleet console and "
                        "the terminal's fleet channel (mosquitto needed)")
    parser.add_argument("--keep", action="store_true", help="leave hwsim and posterm running")
    parser.add_argument("--web", nargs="?", const="8580", metavar="[HOST:]PORT",
                        help="serve the simulated terminal as a web page (default "
                        "127.0.0.1:8580) and run until Ctrl-C")
    args = parser.parse_args()

    base = pathlib.Path(args.dir)
    sim_dir, state_dir, pcsc_dir = base / "hwsim", base / "state", base / "pcscd"
    fleet_dir = base / "fleet"
    base.mkdir(parents=True, exist_ok=True)
    fresh_world(base, sim_dir, state_dir, pcsc_dir, fleet_dir)
    pids = base / PIDS
    pcscd: Any = None
    fleet: Fleet | None = None
    if args.no_chip:
        print("chip sale skipped: --no-chip")
    else:
        pcscd, why = start_pcscd(pcsc_dir)
        if pcscd is None:
            print(f"chip sale skipped: {why}; to see one, {PCSC_HOW}")
        else:
            print(f"chip reader: pcscd with vpcd's virtual reader on port {pcscd.port} "
                  f"(socket {pcscd.socket})")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.fleet:
        fleet, why = start_fleet(fleet_dir, env)
        if fleet is None:
            print(f"fleet skipped: {why}")
        else:
            print(f"fleet: mosquitto on 127.0.0.1:{fleet.broker.port} (TLS, client "
                  f"certificates, the fleet's ACL; {fleet_dir / 'broker'})\n"
                  f"fleet console: {fleet.url}")
    web = ["--web", args.web] if args.web else []
    # hwsim's chip slot plugs its cards into vpcd's reader; no slot without one
    vpcd = ["--vpcd-port", str(pcscd.port if pcscd is not None else 0)]
    sim = subprocess.Popen([sys.executable, "-m", "hwsim", "run", "--dir", str(sim_dir), *web,
                            *vpcd], env=env, stderr=open(base / "hwsim.log", "w"))
    fw = None
    try:
        pids.write_text(" ".join(str(p) for p in own_pids(pcscd, fleet, sim, fw)) + "\n")
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
        config.write_text(render_config(info, state_dir=str(state_dir), chip=pcscd is not None,
                                        fleet=fleet.link if fleet is not None else None))
        print(f"hwsim running in {sim_dir}; firmware configuration {config}")
        log_path = base / "posterm.log"
        fw_env = dict(env, PCSCLITE_CSOCK_NAME=pcscd.socket) if pcscd is not None else env
        fw = subprocess.Popen([sys.executable, "-m", "firmware", "--config", str(config)],
                              env=fw_env, stderr=open(log_path, "w"))
        pids.write_text(" ".join(str(p) for p in own_pids(pcscd, fleet, sim, fw)) + "\n")
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
        hw.wait_display("SWIPE")  # SWIPE CARD, or SWIPE OR INSERT CARD with a chip reader
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
            print_receipt(receipt)
        entry = hw.ledger()[-1]
        print(f"\n== host ledger: stan {entry['stan']} amount {entry['amount']} "
              f"charged={entry['charged']} approval {entry['approval']}")
        if pcscd is not None:
            print("\n\n==== a chip sale: the card in the reader, read by the EMV kernel")
            chip_sale(hw, args.chip_amount, args.chip)
        if fleet is not None:
            print("\n\n==== the terminal in its fleet: what the console saw")
            fleet.show(1 if pcscd is None else 2, env)
        print(f"\nlogs: {log_path}  {base / 'hwsim.log'}"
              + (f"  {fleet.log}" if fleet is not None else ""))
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
            if pcscd is not None:
                pcscd.stop()
            if fleet is not None:
                fleet.stop()
            pids.unlink(missing_ok=True)


def own_pids(pcscd: Any, fleet: Fleet | None,
             *procs: subprocess.Popen[bytes] | None) -> list[int]:
    """The process ids the next demo stops if this one is left running."""
    out = [p.pid for p in procs if p is not None]
    if pcscd is not None and pcscd.proc is not None:
        out.append(pcscd.proc.pid)
    if fleet is not None:
        out += fleet.pids()
    return out


if __name__ == "__main__":
    sys.exit(main())
