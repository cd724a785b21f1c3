"""The `hwsim` command: run the simulator, or control a running one.

    hwsim run --dir DIR [--tls] [--host-port N] [--external-host HOST:PORT] [--seed N]
              [--web [HOST:]PORT]
    hwsim ctl --dir DIR OP ...      (swipe, press, display, receipts, fault, ...)

`run` serves until SIGINT or SIGTERM and logs to stderr. `ctl` sends one
request over DIR/control.sock and prints the answer for a person, or as JSON
with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hwsim.client import HwsimClient, HwsimError, HwsimUnavailable, draw_display

log = logging.getLogger("hwsim")

KEYS_HELP = "keys: 0-9 (or digit strings such as 1250), OK, CLEAR, CANCEL, F1-F4"
BAD_KINDS = "track2_error, both_error, noise, partial, overlong"
FAULT_KINDS = ("delay, late, swallow, drop_after_post, drop_before_read, busy, malformed, "
               "decline, refuse, blackhole")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwsim",
        description="posterm's hardware and acquirer-host simulator. `hwsim run` starts it; "
        "`hwsim ctl` drives a running one (swipe cards, press keys, read the display, "
        "inject faults).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the simulator until SIGINT/SIGTERM",
        description="Start the card reader (a pty), printer and acquirer host (TCP on "
        "127.0.0.1), display, keypad and GPIO models and the control socket DIR/control.sock; "
        "write DIR/hwsim.json and the firmware configuration DIR/posterm.toml.",
    )  # fmt: skip
    run.add_argument("--dir", required=True, help="state directory (created if missing)")
    run.add_argument("--tls", action="store_true",
                     help="serve the host over TLS with a test CA made in DIR/tls/")
    run.add_argument("--host-port", type=int, default=0, metavar="N",
                     help="TCP port of the simulated host (default: any free port)")
    run.add_argument("--external-host", metavar="HOST:PORT",
                     help="do not simulate the host: point the firmware at this one")
    run.add_argument("--seed", type=int, metavar="N",
                     help="seed the host's random choices (approval codes, references)")
    run.add_argument("--web", metavar="[HOST:]PORT", nargs="?", const=str(8580),
                     help="serve the simulated terminal as a web page (live display, keypad, "
                     "card slot, receipts, faults) on PORT of HOST, 127.0.0.1 unless given; "
                     "--web alone: 127.0.0.1:8580, 0: any free port")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug detail")

    ctl = commands.add_parser(
        "ctl", help="control a running simulator",
        description="Send one request to the simulator running in DIR.",
    )  # fmt: skip
    ctl.add_argument("--dir", required=True, help="the directory given to `hwsim run`")
    ctl.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    ops = ctl.add_subparsers(dest="op", required=True, metavar="OP")

    swipe = ops.add_parser("swipe", help="swipe a card (or send raw or bad reader output)")
    swipe.add_argument("pan", nargs="?", help="card number, e.g. 4761739001010010")
    swipe.add_argument("--expiry", metavar="YYMM", help="expiry date (default 3012)")
    swipe.add_argument("--service-code", metavar="SVC", help="3-digit service code")
    swipe.add_argument("--raw", metavar="TEXT", help="send TEXT as the reader's output")
    swipe.add_argument("--no-cr", action="store_true",
                       help="with --raw: do not end the text with a carriage return")
    swipe.add_argument("--bad", metavar="KIND", help=f"a bad read: {BAD_KINDS}")

    press = ops.add_parser("press", help="press keys", description=KEYS_HELP)
    press.add_argument("keys", nargs="+", metavar="KEY", help=KEYS_HELP)

    ops.add_parser("display", help="show the 20x4 display")
    receipts = ops.add_parser("receipts", help="print the receipts printed so far")
    receipts.add_argument("--last", action="store_true", help="only the last receipt")
    receipts.add_argument("--png", metavar="OUTDIR",
                          help="draw each cut receipt as OUTDIR/receipt-N.png (N from 1; "
                          "created if missing) instead of printing its text")
    ops.add_parser("ledger", help="the host's ledger of processed messages")
    ops.add_parser("messages", help="every message the host received")
    ops.add_parser("batches", help="the batch closes (0500) and uploads (0320) the host has "
                   "seen: totals sent, the host's totals, the answers")
    oob = ops.add_parser("out-of-balance", help="answer batch closes 95 (out of balance)",
                         description="Answer the next N batch closes (0500, 920000 or 960000) "
                         "95, whatever the totals; --count 0: every one until --clear or "
                         "`hwsim ctl clear`.")  # fmt: skip
    oob.add_argument("--count", type=int, default=1, metavar="N",
                     help="how many 0500 answers (0: all until cleared; default 1)")
    oob.add_argument("--clear", action="store_true", help="stop forcing: compare totals again")

    fault = ops.add_parser("fault", help="inject a host fault", description=f"kinds: {FAULT_KINDS}")
    fault.add_argument("kind", help=f"one of: {FAULT_KINDS}")
    fault.add_argument("--count", type=int, default=1,
                       help="how many messages or connections (0: until cleared; default 1)")
    fault.add_argument("--mti", default="0200",
                       help="message class: 0200, 0220, 0320, 0400 (reversals and voids), "
                       "0500, 0800 or * (default 0200)")
    fault.add_argument("--seconds", type=float, help="for delay and late")
    fault.add_argument("--code", help="response code, for busy and decline")
    ops.add_parser("clear", help="clear all host faults (and forced out-of-balance answers)")
    ops.add_parser("down", help="take the host down (refuse and drop connections)")
    ops.add_parser("up", help="bring the host back")
    latency = ops.add_parser("host-latency", help="set or show the host's network latency",
                             description="Add a network round trip to every answer of the "
                             "simulated host (all of it on the answer; answers keep their "
                             "order), e.g. --seconds 0.1 for a 4G link; 0 removes it. Without "
                             "--seconds: show it.")  # fmt: skip
    latency.add_argument("--seconds", type=float, metavar="S",
                         help="round trip in seconds, 0 to 60")

    pfault = ops.add_parser("printer-fault", help="inject printer faults")
    pfault.add_argument("--paper-out", action="store_true", help="paper runs out")
    pfault.add_argument("--cover-open", action="store_true", help="cover is open")
    pfault.add_argument("--near-end", action="store_true", help="paper is nearly used up")
    pfault.add_argument("--offline", action="store_true", help="printer reports offline")
    pfault.add_argument("--mute", action="store_true", help="no answers to status requests")
    pfault.add_argument("--slow", type=float, metavar="S", help="take S seconds per job")
    ops.add_parser("printer-clear", help="clear all printer faults")
    ops.add_parser("paper-load", help="put a fresh roll in the printer (ends paper out and "
                   "near end)")
    ops.add_parser("printer-state", help="show the printer's faults and what it threw away "
                   "while stopped")

    reader = ops.add_parser("reader", help="unplug or plug back the card reader",
                            description="unplug: the reader's port reads EIO and its path "
                            "(DIR/card-reader) disappears, as when a USB reader is pulled "
                            "out; plug: a reader appears again at the same path; state: "
                            "show it.")  # fmt: skip
    reader.add_argument("action", choices=("unplug", "plug", "state"))
    dfault = ops.add_parser("display-fault", help="I2C errors on the display",
                            description="Transfers to the display fail as an unanswered "
                            "I2C address does (EREMOTEIO), until display-clear or for "
                            "--count transfers.")  # fmt: skip
    dfault.add_argument("--count", type=int, default=0, metavar="N",
                        help="fail only the next N transfers (default 0: until cleared)")
    dfault.add_argument("--power-loss", action="store_true",
                        help="the module lost power: it comes back blank and uninitialised")
    ops.add_parser("display-clear", help="the display answers again")

    gpio = ops.add_parser("gpio", help="pin levels and the output history")
    gpio.add_argument("--set", nargs=2, type=int, metavar=("PIN", "LEVEL"),
                      help="drive an input pin, e.g. --set 25 0 for a mains failure")
    battery = ops.add_parser(
        "battery", help="set or show the battery (the MAX17048 gauge's readings)",
        description="Without options: show the battery. --percent alone also moves the "
        "voltage along a typical Li-ion curve.")  # fmt: skip
    battery.add_argument("--percent", type=float, metavar="P", help="state of charge, 0-100")
    battery.add_argument("--rate", type=float, metavar="R",
                         help="charge rate in %%/h: positive charging, negative discharging")
    battery.add_argument("--voltage", type=float, metavar="V", help="cell voltage in volts")
    battery.add_argument("--fail", action="store_const", const=True, dest="failing",
                         help="the gauge stops answering on I2C")
    battery.add_argument("--answer", action="store_const", const=False, dest="failing",
                         help="the gauge answers again")
    power = ops.add_parser("power", help="mains power: the UPS board's power-fail line (GPIO 25)")
    power.add_argument("state", nargs="?", choices=("fail", "restore"),
                       help="fail: mains lost (line low); restore: mains back (line high); "
                       "none: show it")
    modem = ops.add_parser(
        "modem", help="set or show the 4G modem (SIM, network, signal, faults)",
        description="Without options: show the modem's state and counters.")  # fmt: skip
    modem.add_argument("--sim", choices=("present", "absent"), help="the SIM card")
    modem.add_argument("--registration", choices=tuple(MODEM_REGISTRATION),
                       help="what AT+CREG? answers")
    modem.add_argument("--rssi", type=int, metavar="N", help="signal 0-31, 99 unknown")
    modem.add_argument("--netopen-error", type=int, metavar="N",
                       help="AT+NETOPEN fails with +NETOPEN: N (0: works)")
    modem.add_argument("--cipopen-error", type=int, metavar="N",
                       help="AT+CIPOPEN fails with +CIPOPEN: 0,N (0: works)")
    modem.add_argument("--latency", type=float, metavar="S",
                       help="one-way network delay for data, seconds")
    modem.add_argument("--boot-time", type=float, metavar="S",
                       help="seconds from power-on to the first answer")
    modem.add_argument("--power", choices=("on", "off"), help="switch it (as PWRKEY would)")
    modem.add_argument("--drop", action="store_true", help="the peer closes the open socket")
    modem.add_argument("--hang", action="store_true",
                       help="the module stops answering until power-cycled or reset")
    primary = ops.add_parser(
        "primary", help="cut or restore the primary (Ethernet) path to the host",
        description="down: refuse (port closed, connections reset) or blackhole "
        "(connections stay open, nothing flows); up: restore; state: show it.")  # fmt: skip
    primary.add_argument("action", choices=("down", "up", "state"))
    primary.add_argument("--mode", choices=("refuse", "blackhole"), default="refuse",
                         help="with down (default refuse)")
    ops.add_parser("info", help="where the simulator's parts are (hwsim.json)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _ctl(args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    from hwsim.control import StartError
    from hwsim.sim import Simulator

    async def serve() -> None:
        web = None
        if args.web is not None:
            from hwsim.web import parse_web_address

            web = parse_web_address(args.web)
        sim = Simulator(args.dir, tls=args.tls, host_port=args.host_port,
                        external_host=args.external_host, seed=args.seed, web=web)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await sim.start()
        try:
            await stop.wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(serve())
    except (StartError, OSError, ValueError) as exc:
        log.error("hwsim cannot run: %s", exc)
        return 1
    except ModuleNotFoundError as exc:
        if args.web is None or exc.name not in ("aiohttp", "PIL"):
            raise
        log.error("hwsim cannot run: the web page needs the Python package %s, which is not "
                  "installed (pip install 'posterm[web]', or ./run sets it up)", exc.name)
        return 1
    return 0


def _ctl(args: argparse.Namespace) -> int:
    client = HwsimClient.from_dir(args.dir)
    try:
        op, params, show = _request_for(args)
        reply = client.request(op, **params)
    except HwsimUnavailable:
        print(f"hwsim is not running in {args.dir}: start it with `hwsim run --dir {args.dir}`",
              file=sys.stderr)  # fmt: skip
        return 2
    except (HwsimError, ValueError) as exc:
        print(f"hwsim: {exc}", file=sys.stderr)
        return 1
    text = ""
    if not args.json or getattr(args, "png", None) is not None:  # --png writes even with --json
        try:
            text = show(reply)
        except OSError as exc:  # receipts --png: OUTDIR cannot be written
            print(f"hwsim: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    elif text:
        print(text)
    return 0


Show = Callable[[dict[str, Any]], str]


def _request_for(args: argparse.Namespace) -> tuple[str, dict[str, Any], Show]:
    """The op, its parameters and how to show the answer, for a `ctl` command line."""
    op = args.op
    if op == "swipe":
        if sum(x is not None for x in (args.pan, args.raw, args.bad)) != 1:
            raise ValueError("swipe needs exactly one of PAN, --raw TEXT or --bad KIND")
        if args.raw is not None:
            params: dict[str, Any] = {"raw": args.raw if args.no_cr else args.raw + "\r"}
        elif args.bad is not None:
            params = {"bad": args.bad}
        else:
            params = {"pan": args.pan, "expiry": args.expiry, "service_code": args.service_code}
        return "swipe", _given(params), lambda r: f"swiped ({r.get('bytes', 0)} bytes)"
    if op == "press":
        return "press", {"keys": args.keys}, lambda r: f"pressed ({r['listeners']} listener(s))"
    if op == "display":
        return "display", {}, lambda r: draw_display(r["rows"])
    if op == "receipts" and args.png is not None:
        return "receipts", {"styled": True}, lambda r: _write_receipt_pngs(
            r, args.png, last=args.last)
    if op == "receipts":
        return "receipts", {}, lambda r: _show_receipts(r, last=args.last)
    if op == "fault":
        params = {"kind": args.kind, "count": args.count, "mti": args.mti,
                  "seconds": args.seconds, "code": args.code}  # fmt: skip
        return "host_fault", _given(params), lambda r: f"fault {args.kind} set"
    if op == "host-latency":
        return "host_latency", _given({"seconds": args.seconds}), lambda r: (
            f"host latency {r['seconds']:g} s on every answer")
    if op == "printer-fault":
        params = {"paper_out": args.paper_out or None, "cover_open": args.cover_open or None,
                  "paper_near_end": args.near_end or None, "offline": args.offline or None,
                  "mute": args.mute or None,
                  "slow_seconds": args.slow}  # fmt: skip
        return "printer_fault", _given(params), lambda r: "printer fault set"
    if op == "reader":
        return f"reader_{args.action}", {}, _show_reader
    if op == "display-fault":
        params = {"count": args.count, "power_loss": args.power_loss}
        return "display_fault", params, lambda r: "display fault set"
    if op == "modem":
        params = {"sim_present": None if args.sim is None else args.sim == "present",
                  "registration": MODEM_REGISTRATION.get(args.registration),
                  "rssi": args.rssi, "netopen_error": args.netopen_error,
                  "cipopen_error": args.cipopen_error, "latency": args.latency,
                  "boot_time": args.boot_time,
                  "power": None if args.power is None else args.power == "on",
                  "drop": args.drop or None, "hang": args.hang or None}  # fmt: skip
        return "modem", _given(params), _show_modem
    if op == "primary":
        params = {"action": args.action, "mode": args.mode if args.action == "down" else None}
        return "primary", _given(params), lambda r: (
            f"primary path {'up' if r['up'] else 'DOWN (' + r['mode'] + ')'}, port {r['port']}"
            f" -> {r['target']}, {r['open']} connection(s) open")
    if op == "gpio" and args.set:
        pin, level = args.set
        return "gpio_set_input", {"pin": pin, "level": level}, lambda r: f"pin {pin} = {level}"
    if op == "battery":
        params = {"percent": args.percent, "rate": args.rate, "voltage": args.voltage,
                  "failing": args.failing}  # fmt: skip
        return "battery", _given(params), _show_battery
    if op == "power":
        return "power", _given({"state": args.state}), lambda r: (
            f"mains {'present' if r['mains'] else 'LOST'} (pin {r['pin']} "
            f"{'high' if r['mains'] else 'low'})")
    if op == "out-of-balance":
        params = {"clear": True} if args.clear else {"count": args.count}
        return "host_out_of_balance", params, lambda r: (
            "batch closes answered by their totals" if args.clear else
            "every batch close answered 95 until cleared" if r["pending"] is None else
            f"next {r['pending']} batch close(s) answered 95")
    simple: dict[str, tuple[str, Show]] = {
        "ledger": ("ledger", lambda r: _show_records(r["entries"], "the ledger is empty")),
        "messages": ("messages", lambda r: _show_records(r["messages"], "no messages yet")),
        "batches": ("batches", _show_batches),
        "clear": ("host_clear", lambda r: "host faults cleared"),
        "down": ("host_down", lambda r: "host is down"),
        "up": ("host_up", lambda r: "host is up"),
        "printer-clear": ("printer_clear", lambda r: "printer faults cleared"),
        "paper-load": ("printer_load_paper", lambda r: "paper loaded"),
        "printer-state": ("printer_state",
                          lambda r: "\n".join(f"{k}: {v}" for k, v in r.items())),
        "display-clear": ("display_clear",
                          lambda r: f"display answers again ({r['refused']} transfers refused)"),
        "gpio": ("gpio_state", _show_gpio),
        "info": ("info", lambda r: "\n".join(f"{k}: {v}" for k, v in r.items())),
    }
    name, show = simple[op]
    return name, {}, show


MODEM_REGISTRATION = {"registered": 1, "searching": 2, "denied": 3, "roaming": 5}


def _show_modem(r: dict[str, Any]) -> str:
    power = "hung" if r["hung"] else "on" if r["booted"] else "booting" if r["powered"] else "off"
    link = f"link 0 open to {r['link_peer']}" if r["link_open"] else "no link"
    return "\n".join([
        f"modem {power} on {r['path']}; SIM {'present' if r['sim_present'] else 'ABSENT'}, "
        f"{r['registration_word']}, rssi {r['rssi']}",
        f"data session {'open' if r['net_open'] else 'closed'} (apn {r['apn'] or '-'}), {link}",
        f"faults: netopen_error {r['netopen_error']}, cipopen_error {r['cipopen_error']}, "
        f"latency {r['latency']:g} s, boot time {r['boot_time']:g} s",
        f"counters: {r['commands']} commands, {r['bytes_sent']} bytes sent, "
        f"{r['bytes_received']} received, {r['connections']} connections, "
        f"{r['power_cycles']} power-ons, {r['resets']} resets",
    ])  # fmt: skip


def _given(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _show_receipts(reply: dict[str, Any], *, last: bool) -> str:
    receipts: list[str] = reply["receipts"][-1:] if last else reply["receipts"]
    parts = [f"--- receipt {i} ---\n{text}" for i, text in enumerate(receipts, 1)]
    if reply.get("partial"):
        parts.append(f"--- not cut yet ---\n{reply['partial']}")
    return "\n".join(parts) if parts else "no receipts printed"


def _write_receipt_pngs(reply: dict[str, Any], outdir: str, *, last: bool) -> str:
    """Draw each cut receipt of a styled `receipts` answer as OUTDIR/receipt-<n>.png (only
    the last one, keeping its number, with `last`); say which files were written."""
    import pathlib

    from hwsim.receipt_image import receipt_png  # Pillow only when images are asked for

    receipts: list[list[dict[str, Any]]] = reply["lines"]
    numbered = list(enumerate(receipts, 1))[-1:] if last else list(enumerate(receipts, 1))
    folder = pathlib.Path(outdir)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n, lines in numbered:
            path = folder / f"receipt-{n}.png"
            path.write_bytes(receipt_png(lines, cut=True))
            written.append(f"wrote {path}")
    except OSError as exc:
        raise OSError(f"cannot write the receipt images to {outdir}: "
                      f"{exc.strerror or exc}") from exc
    if reply.get("partial_lines"):
        written.append(f"not cut yet: {len(reply['partial_lines'])} line(s) above the cutter, "
                       "no image")
    return "\n".join(written) if written else "no receipts printed"


def _show_reader(reply: dict[str, Any]) -> str:
    if reply["plugged"]:
        return f"card reader plugged in at {reply['path']} ({reply['pty']})"
    return f"card reader unplugged ({reply['path']} is gone)"


def _show_batches(reply: dict[str, Any]) -> str:
    if not reply["batches"]:
        return "no batch close or upload yet"

    def totals(t: dict[str, int] | None) -> str:
        if t is None:
            return "-"
        return (f"{t['purchases']} purchases {t['purchase_amount']}, "
                f"{t['refunds']} refunds {t['refund_amount']}")

    lines = []
    for b in reply["batches"]:
        lines.append(f"terminal {b['tid']!r} batch {b['batch']}: "
                     f"{'CLOSED' if b['closed'] else 'open'}; host now: {totals(b['host_now'])}")
        for c in b["closes"]:
            lines.append(f"  0500 {c['processing_code']} stan={c['stan']}: answered {c['code']}"
                         f"{' (forced)' if c['forced'] else ''}")
            lines.append(f"    terminal: {totals(c['terminal'])}")
            lines.append(f"    host:     {totals(c['host'])}")
            if c["upload"] is not None:
                lines.append(f"    uploaded: {totals(c['upload'])}")
            lines += [f"    differs: {d}" for d in c["differences"]]
        for u in b["uploads"]:
            lines.append(f"  0320 stan={u['stan']} of {u['original'][:4]} "
                         f"stan={u['original'][4:10]}: {u['kind']} {u['amount']} "
                         f"invoice {u['invoice']}: {u['status']}")
    return "\n".join(lines)


def _show_records(records: list[dict[str, Any]], empty: str) -> str:
    if not records:
        return empty
    return "\n".join(" ".join(f"{k}={v}" for k, v in rec.items()) for rec in records)


def _show_battery(reply: dict[str, Any]) -> str:
    rate = reply["rate"]
    trend = "charging" if rate > 0 else "discharging" if rate < 0 else "steady"
    gauge = "NOT ANSWERING" if reply["failing"] else f"answering ({reply['reads']} reads)"
    return (f"battery {reply['percent']:g} %, {reply['voltage']:.3f} V, {rate:+g} %/h "
            f"({trend}); gauge {gauge}")


def _show_gpio(reply: dict[str, Any]) -> str:
    lines = []
    for pin, p in reply["pins"].items():
        pull = f", pull {p['pull']}" if p["pull"] != "off" else ""
        lines.append(f"pin {pin}: {p['direction']}, level {p['level']}{pull}")
    lines.append(f"online LED {'on' if reply['led_online'] else 'off'}, "
                 f"mains {'present' if reply['power_ok'] else 'LOST'}")  # fmt: skip
    recent = reply["history"][-10:]
    if recent:
        lines.append("recent output changes:")
        lines += [f"  {h['t']:.3f} pin {h['pin']} -> {h['level']}" for h in recent]
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
