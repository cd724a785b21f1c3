"""hwsim's control ops, each declared once: name, arguments, help, handler.

`OPS` is the one registry (`hwsim.opspec`). Each op below is a plain function of
the running `Simulator` and its checked arguments, turned by `@OPS.op(...)` into
an `Op`; this module's attribute of that name is the op itself, so the client
and the command line name ops as `ops.press`, never as a string. From `OPS` come
the control server's dispatch (`hwsim.control`), the `hwsim ctl` subcommands
(`hwsim.__main__`), `HwsimClient`'s calls (`hwsim.client`) and the web page's
catalogue (`page=True` ops, `hwsim.web`). How `hwsim ctl` prints an answer is
in `hwsim.ctlview`.

A handler raises ValueError (RequestError) with a specific message for a
request it cannot carry out; the server sends that back as the error answer.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any, Final

from hwsim import ctlview
from hwsim.cards import BAD_SWIPE_KINDS, bad_swipe, swipe_line
from hwsim.chipslot import profiles as chip_profiles
from hwsim.hostchip import SCRIPT_COMMANDS, SCRIPT_TEMPLATES
from hwsim.gpio import PIN_POWER_FAIL
from hwsim.hostfaults import KINDS, PARAM_TYPES, REQUEST_CLASSES
from hwsim.opspec import Arg, CliOption, Registry, Reply, RequestError

if TYPE_CHECKING:
    from hwsim.chipslot import ChipSlot
    from hwsim.host import AcquirerHost
    from hwsim.sim import Simulator

log = logging.getLogger("hwsim.control")

OPS: Final = Registry()
op = OPS.op

# A swipe is at most about 120 bytes (tracks 1 and 2 with sentinels); this leaves room
# for overlong and noisy reads and keeps one request from filling the reader's port.
MAX_RAW_SWIPE: Final = 512
KEYS_HELP: Final = "keys: 0-9 (or digit strings such as 1250), OK, CLEAR, CANCEL, F1-F4"
MODEM_REGISTRATION: Final = {"registered": 1, "searching": 2, "denied": 3, "roaming": 5}
ON_OFF: Final = {"on": True, "off": False}
DEFAULT_SCRIPT: Final = "unblock"


def _host(sim: Simulator) -> AcquirerHost:
    if sim.host is None:
        where = "{}:{}".format(*sim.external) if sim.external else "none"
        raise RequestError(f"no simulated host: the firmware uses an external host ({where})")
    return sim.host


def _done(text: str) -> Any:
    """A show function that prints `text` whatever the answer."""
    return lambda reply, args=None: text


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- the firmware's own buses: I2C and GPIO ----------------------------------------------

BUS = Arg("bus", int, 1, "I2C bus number")
ADDR = Arg("addr", int, help="7-bit device address, e.g. 39 (0x27) for the display")
PIN = Arg("pin", int, help="pin number (BCM unless --mode BOARD)")
MODE = Arg("mode", str, "BCM", "pin numbering", choices=("BCM", "BOARD"))


@op(BUS, ADDR, Arg("data", bytes, help="the bytes to write, 0..255", nargs="+"),
    help="write bytes to an I2C device (as the firmware's display driver does)")
def i2c_write(sim: Simulator, bus: int, addr: int, data: list[int]) -> Reply:
    sim.i2c.write(bus, addr, data)
    return {}


@op(BUS, ADDR, Arg("reg", int, help="register"), Arg("n", int, help="bytes to read, 1 to 32"),
    help="read bytes from an I2C device's register", show=ctlview.fields)
def i2c_read(sim: Simulator, bus: int, addr: int, reg: int, n: int) -> Reply:
    device = sim.i2c.device(bus, addr)
    if not 0 < n <= 32 or not hasattr(device, "read"):
        raise RequestError(f"i2c_read: cannot read {n} bytes from the device at 0x{addr:02x}")
    return {"data": sim.i2c.read(bus, addr, reg, n)}


@op(Arg("reset", bool, False, "start counting afresh after reading"),
    help="I2C traffic per device since the last reset: transactions, bytes, bits",
    show=ctlview.records("no I2C traffic", "devices"))
def i2c_stats(sim: Simulator, reset: bool) -> Reply:
    return {"devices": sim.i2c.stats(reset=reset)}


@op(Arg("since", int, 0, "sequence number: only transfers after it"),
    Arg("clear", bool, False, "forget the transfers logged so far"),
    help="the I2C transfers logged after sequence number `since`", show=ctlview.fields)
def i2c_log(sim: Simulator, since: int, clear: bool) -> Reply:
    return sim.i2c.log(since=since, clear=clear)


@op(PIN, Arg("direction", str, help="in or out"), Arg("pull", str, "off", "pull up, down or off"),
    Arg("initial", int, None, "the output's first level"), MODE,
    help="set a pin up as the firmware does (RPi.GPIO setup)")
def gpio_setup(sim: Simulator, pin: int, direction: str, pull: str, initial: int | None,
               mode: str) -> Reply:
    sim.gpio.setup(pin, direction, pull=pull, initial=initial, mode=mode)
    return {}


@op(PIN, Arg("level", int, help="0 or 1"), MODE, help="drive an output pin (RPi.GPIO output)")
def gpio_output(sim: Simulator, pin: int, level: int, mode: str) -> Reply:
    sim.gpio.output(pin, level, mode=mode)
    return {}


@op(PIN, MODE, help="read a pin's level (RPi.GPIO input)", show=ctlview.fields)
def gpio_input(sim: Simulator, pin: int, mode: str) -> Reply:
    return {"level": sim.gpio.input(pin, mode=mode)}


@op(Arg("pin", int, None, "one pin (default every pin)"), MODE,
    help="release pins (RPi.GPIO cleanup)")
def gpio_cleanup(sim: Simulator, pin: int | None, mode: str) -> Reply:
    sim.gpio.cleanup(pin, mode=mode)
    return {}


@op(Arg("pin", int, help="input pin (BCM)", flag="--set", metavar="PIN"),
    Arg("level", int, help="0 or 1", flag="--set", metavar="LEVEL"),
    help="drive an input pin, e.g. --set 25 0 for a mains failure", command="gpio",
    show=lambda reply, args: f"pin {args.pin} = {args.level}")
def gpio_set_input(sim: Simulator, pin: int, level: int) -> Reply:
    sim.gpio.set_input(pin, level)
    return {}


@op(help="pin levels and the output history", command="gpio", show=ctlview.gpio)
def gpio_state(sim: Simulator) -> Reply:
    return sim.gpio.state()


OPS.stream("keypad_listen", help="stream the keypad's evdev events on this connection")
OPS.stream("gpio_listen", PIN, MODE, help="stream an input pin's edges on this connection")


@op(help="requests the control socket has served since hwsim started, by op",
    show=lambda reply, args: ctlview.fields(reply["served"]))
def control_stats(sim: Simulator) -> Reply:
    assert sim.control is not None
    return {"served": dict(sim.control.served)}


# -- power --------------------------------------------------------------------------------

@op(Arg("percent", float, None, "state of charge, 0-100", metavar="P"),
    Arg("voltage", float, None, "cell voltage in volts", metavar="V"),
    Arg("rate", float, None, "charge rate in %/h: positive charging, negative discharging",
        metavar="R"),
    Arg("failing", bool, None, "--fail: the gauge stops answering on I2C; --answer: it "
        "answers again", consts={"--fail": True, "--answer": False}),
    help="set or show the battery (the MAX17048 gauge's readings)", page=True,
    about="Without options: show the battery. --percent alone also moves the voltage along "
    "a typical Li-ion curve.", show=ctlview.battery)
def battery(sim: Simulator, percent: float | None, voltage: float | None, rate: float | None,
            failing: bool | None) -> Reply:
    return sim.gauge.set(percent=percent, voltage=voltage, rate=rate, failing=failing)


@op(Arg("state", str, None, "fail: mains lost (line low); restore: mains back (line high); "
        "none: show it", choices=("fail", "restore"), flag="", nargs="?"),
    help="mains power: the UPS board's power-fail line (GPIO 25)", page=True,
    show=lambda r, args: (f"mains {'present' if r['mains'] else 'LOST'} (pin {r['pin']} "
                          f"{'high' if r['mains'] else 'low'})"))
def power(sim: Simulator, state: str | None) -> Reply:
    if state is not None:
        sim.gpio.set_input(PIN_POWER_FAIL, 0 if state == "fail" else 1)
    return {"mains": bool(sim.gpio.level(PIN_POWER_FAIL)), "pin": PIN_POWER_FAIL}


# -- cards, keys, screen ------------------------------------------------------------------

def _swipe_request(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """`hwsim ctl swipe`: exactly one of PAN, --raw, --bad; --raw ends with a CR unless
    --no-cr."""
    if sum(params.get(k) is not None for k in ("pan", "raw", "bad")) != 1:
        raise ValueError("swipe needs exactly one of PAN, --raw TEXT or --bad KIND")
    if params.get("raw") is not None and not args.no_cr:
        params["raw"] += "\r"
    return params


@op(Arg("pan", str, None, "card number, e.g. 4761739001010010", secret=True, flag="",
        nargs="?"),
    Arg("expiry", str, "3012", "expiry date", metavar="YYMM", secret=True),
    Arg("service_code", str, None, "3-digit service code", metavar="SVC"),
    Arg("name", str, "CARDHOLDER/TEST", "cardholder name on track 1", secret=True),
    Arg("raw", str, None, "send TEXT as the reader's output", metavar="TEXT", secret=True),
    Arg("bad", str, None, f"a bad read: {', '.join(BAD_SWIPE_KINDS)}", metavar="KIND",
        secret=True),
    help="swipe a card (or send raw or bad reader output)", page=True,
    cli_options=(CliOption(("--no-cr",), {"action": "store_true", "help": "with --raw: do "
                                          "not end the text with a carriage return"}),),
    cli_prepare=_swipe_request,
    show=lambda r, args: f"swiped ({r.get('bytes', 0)} bytes)")
def swipe(sim: Simulator, pan: str | None, expiry: str, service_code: str | None, name: str,
          raw: str | None, bad: str | None) -> Reply:
    if raw is not None:
        if len(raw) > MAX_RAW_SWIPE:
            raise RequestError(f"swipe: raw reader output is {len(raw)} characters; a "
                               f"reader line is at most {MAX_RAW_SWIPE}")
        try:
            data = raw.encode("latin-1")
        except UnicodeEncodeError:
            raise RequestError("swipe: raw text must be Latin-1 (bytes 0..255)") from None
    elif bad is not None:
        data = bad_swipe(bad)
    elif pan is not None:
        data = swipe_line(pan, expiry=expiry, service_code=service_code, name=name)
    else:
        raise RequestError("swipe: missing 'pan' (or 'raw' or 'bad')")
    if not sim.card_reader.plugged:
        raise RequestError("swipe: the card reader is unplugged (plug it back in with "
                           "`hwsim ctl reader plug`)")
    sim.card_reader.write(data)
    log.info("swipe: %d bytes to the card reader", len(data))  # never the track itself
    return {"bytes": len(data)}


@op(Arg("keys", list, help=KEYS_HELP, flag="", nargs="+", metavar="KEY"),
    help="press keys", page=True,
    show=lambda r, args: f"pressed ({r['listeners']} listener(s))")
def press(sim: Simulator, keys: list[str]) -> Reply:
    return {"listeners": sim.keypad.press(keys)}


@op(help="show the 20x4 display", show=ctlview.display)
def display(sim: Simulator) -> Reply:
    return {"rows": sim.lcd.rows()}


def _reader_state(sim: Simulator) -> Reply:
    reader = sim.card_reader
    return {"plugged": reader.plugged, "path": reader.path, "pty": reader.pty}


@op(help="pull the card reader out: its port reads EIO and its path disappears", page=True,
    command="reader", action="unplug", show=ctlview.reader)
def reader_unplug(sim: Simulator) -> Reply:
    if not sim.card_reader.plugged:
        raise RequestError("reader_unplug: the card reader is already unplugged")
    sim.card_reader.unplug()
    return _reader_state(sim)


@op(help="plug the card reader back in, at the same path (a new pseudo-terminal)", page=True,
    command="reader", action="plug", show=ctlview.reader)
def reader_plug(sim: Simulator) -> Reply:
    if sim.card_reader.plugged:
        raise RequestError("reader_plug: the card reader is already plugged in")
    sim.card_reader.plug()
    return _reader_state(sim)


@op(help="the card reader: plugged, its stable path, the pseudo-terminal behind it",
    command="reader", action="state", show=ctlview.reader)
def reader_state(sim: Simulator) -> Reply:
    return _reader_state(sim)


@op(Arg("count", int, 0, "fail only the next N transfers (0: until cleared)",
        metavar="N"),
    Arg("power_loss", bool, False, "the module lost power: it comes back blank and "
        "uninitialised"),
    help="I2C errors on the display", page=True,
    about="Transfers to the display fail as an unanswered I2C address does (EREMOTEIO), "
    "until display-clear or for --count transfers.",
    show=_done("display fault set"))
def display_fault(sim: Simulator, count: int, power_loss: bool) -> Reply:
    sim.expander.fault.set(count=count, power_loss=power_loss)
    return {}


@op(help="the display answers again", page=True,
    show=lambda r, args: f"display answers again ({r['refused']} transfers refused)")
def display_clear(sim: Simulator) -> Reply:
    return {"refused": sim.expander.fault.clear()}


@op(help="the display's I2C fault: active, transfers refused since it was set",
    show=ctlview.fields)
def display_fault_state(sim: Simulator) -> Reply:
    return {"active": sim.expander.fault.active, "refused": sim.expander.fault.refused}


# -- the printer --------------------------------------------------------------------------

def _receipts_request(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """`hwsim ctl receipts --png` asks for the styled lines the images are drawn from."""
    return {**params, "styled": True} if args.png is not None else params


@op(Arg("styled", bool, False, "also each line with its style (lines, partial_lines), as "
        "the receipt images are drawn"),
    help="the receipts printed so far and the text above the cutter",
    cli_options=(CliOption(("--last",), {"action": "store_true",
                                         "help": "only the last receipt"}),
                 CliOption(("--png",), {"metavar": "OUTDIR", "help": "draw each cut receipt "
                                        "as OUTDIR/receipt-N.png (N from 1; created if "
                                        "missing) instead of printing its text"})),
    cli_prepare=_receipts_request, show=ctlview.receipts)
def receipts(sim: Simulator, styled: bool) -> Reply:
    reply: Reply = {"receipts": sim.printer.receipts(), "partial": sim.printer.partial()}
    if styled:
        reply["lines"] = [[line.as_dict() for line in receipt]
                          for receipt in sim.printer.receipt_lines()]
        reply["partial_lines"] = [line.as_dict() for line in sim.printer.partial_lines()]
    return reply


@op(Arg("paper_out", bool, None, "paper runs out"),
    Arg("cover_open", bool, None, "cover is open"),
    Arg("offline", bool, None, "printer reports offline"),
    Arg("mute", bool, None, "no answers to status requests"),
    Arg("slow_seconds", float, None, "take S seconds per line", aliases=("--slow",),
        metavar="S"),
    Arg("paper_near_end", bool, None, "paper is nearly used up", aliases=("--near-end",)),
    help="inject printer faults (the others stay as they are)", page=True,
    show=_done("printer fault set"))
def printer_fault(sim: Simulator, paper_out: bool | None, cover_open: bool | None,
                  offline: bool | None, mute: bool | None, slow_seconds: float | None,
                  paper_near_end: bool | None) -> Reply:
    sim.printer.set_fault(**_given({
        "paper_out": paper_out, "cover_open": cover_open, "offline": offline, "mute": mute,
        "slow_seconds": slow_seconds, "paper_near_end": paper_near_end}))  # fmt: skip
    return {}


@op(help="clear all printer faults", page=True, show=_done("printer faults cleared"))
def printer_clear(sim: Simulator) -> Reply:
    return sim.printer.clear_faults() or {}


@op(help="put a fresh roll in the printer (ends paper out and near end)", page=True,
    command="paper-load", show=_done("paper loaded"))
def printer_load_paper(sim: Simulator) -> Reply:
    return sim.printer.load_paper() or {}


@op(help="show the printer's faults and what it threw away while stopped",
    show=ctlview.fields)
def printer_state(sim: Simulator) -> Reply:
    return sim.printer.state()


# -- the acquirer host --------------------------------------------------------------------

@op(help="the host's ledger of processed messages",
    show=ctlview.records("the ledger is empty", "entries"))
def ledger(sim: Simulator) -> Reply:
    return {"entries": _host(sim).ledger()}


@op(help="every message the host received",
    show=ctlview.records("no messages yet", "messages"))
def messages(sim: Simulator) -> Reply:
    return {"messages": _host(sim).messages()}


@op(help="the batch closes (0500) and uploads (0320) the host has seen: totals sent, the "
    "host's totals, the answers", show=ctlview.batches)
def batches(sim: Simulator) -> Reply:
    return {"batches": _host(sim).batches()}


def _out_of_balance_said(reply: Reply, args: argparse.Namespace) -> str:
    if args.clear:
        return "batch closes answered by their totals"
    if reply["pending"] is None:
        return "every batch close answered 95 until cleared"
    return f"next {reply['pending']} batch close(s) answered 95"


@op(Arg("count", int, 1, "how many 0500 answers (0: all until cleared)",
        metavar="N"),
    Arg("clear", bool, False, "stop forcing: compare totals again"),
    help="answer batch closes 95 (out of balance)", page=True,
    about="Answer the next N batch closes (0500, 920000 or 960000) 95, whatever the totals; "
    "--count 0: every one until --clear or `hwsim ctl clear`.", command="out-of-balance",
    show=_out_of_balance_said)
def host_out_of_balance(sim: Simulator, count: int, clear: bool) -> Reply:
    if clear:
        _host(sim).clear_out_of_balance()
    else:
        _host(sim).force_out_of_balance(count)
    return {"pending": _host(sim).out_of_balance_pending()}


FAULT_HELP: Final = "; ".join(f"{k.kind}: {k.help}" for k in KINDS)


@op(Arg("kind", str, help="one of: " + ", ".join(k.kind for k in KINDS), flag=""),
    Arg("count", int, 1, "how many messages or connections (0: until cleared)"),
    Arg("mti", str, "0200", f"message class: {', '.join(REQUEST_CLASSES)} (0400: reversals "
        "and voids) or *"),
    *(Arg(name, kind, None, "for " + " and ".join(k.kind for k in KINDS if name in k.params),
          secret=True) for name, kind in PARAM_TYPES.items()),
    help="inject a host fault", about=f"Kinds: {FAULT_HELP}.", page=True, command="fault",
    show=lambda r, args: f"fault {args.kind} set")
def host_fault(sim: Simulator, kind: str, count: int, mti: str, seconds: float | None,
               code: str | None) -> Reply:
    _host(sim).add_fault(kind, count=count, mti=mti, **_given({"seconds": seconds,
                                                               "code": code}))
    return {}


@op(Arg("mti", str, help="message class, e.g. 0200"),
    Arg("code", str, help="the response code to answer with, e.g. 05"),
    help="answer every request of a class with a code (00: decide as usual)",
    show=_done("default answer set"))
def host_default(sim: Simulator, mti: str, code: str) -> Reply:
    _host(sim).set_default_answer(mti, code)
    return {}


@op(Arg("seconds", float, None, "round trip in seconds, 0 to 60", metavar="S"),
    help="set or show the host's network latency", page=True,
    about="Add a network round trip to every answer of the simulated host (all of it on the "
    "answer; answers keep their order), e.g. --seconds 0.1 for a 4G link; 0 removes it. "
    "Without --seconds: show it.",
    show=lambda r, args: f"host latency {r['seconds']:g} s on every answer")
def host_latency(sim: Simulator, seconds: float | None) -> Reply:
    if seconds is not None:
        _host(sim).set_latency(seconds)
    return {"seconds": _host(sim).latency}


@op(help="clear all host faults (and forced out-of-balance answers)", page=True,
    command="clear", show=_done("host faults cleared"))
def host_clear(sim: Simulator) -> Reply:
    return _host(sim).clear_faults() or {}


@op(help="the host faults still pending", show=ctlview.records("no host faults", "faults"))
def host_faults(sim: Simulator) -> Reply:
    return {"faults": _host(sim).faults()}


async def _host_updown(sim: Simulator, down: bool) -> Reply:
    await _host(sim).set_down(down)
    if sim.primary is not None:  # the proxy refuses while the host does
        await sim.primary.set_upstream_down(down)
    return {}


@op(help="take the host down (refuse and drop connections)", page=True, command="down",
    show=_done("host is down"))
async def host_down(sim: Simulator) -> Reply:
    return await _host_updown(sim, True)


@op(help="bring the host back", page=True, command="up", show=_done("host is up"))
async def host_up(sim: Simulator) -> Reply:
    return await _host_updown(sim, False)


@op(help="drop every open host connection and go on accepting new ones", command="drop",
    show=lambda r, args: f"{r['dropped']} host connection(s) dropped")
def host_drop(sim: Simulator) -> Reply:
    return {"dropped": _host(sim).drop_connections()}


def _pin_reset_said(reply: Reply, args: argparse.Namespace) -> str:
    whom = "that card" if args.pan else "every card"
    return f"PIN tries reset for {whom} ({reply['reset']} card(s) had wrong PINs counted)"


@op(Arg("pan", str, None, "only this card (default every card)", secret=True),
    help="forget the host's count of wrong PINs in a row, so that a card answered 75 (PIN "
    "tries exceeded) is checked again", page=True, command="pin-reset",
    about="The simulated host counts wrong online PINs in a row per card, across terminals: "
    "the first two are answered 55, the third and every later PIN 75 until this reset "
    "(host-interface 9.2).", show=_pin_reset_said)
def pin_reset(sim: Simulator, pan: str | None) -> Reply:
    return {"reset": _host(sim).pin_reset(pan or None)}


# -- chip cards: the host's controls and the card slot (vpcd) --------------------------------

@op(Arg("count", int, 1, "how many 0210s", metavar="N"),
    help="the next 0210s built with tag 91 carry a wrong ARPC (the ARC stays right)",
    page=True, command="chip-wrong-arpc",
    show=lambda r, args: f"next {args.count or 1} 0210(s) with tag 91: wrong ARPC")
def chip_wrong_arpc(sim: Simulator, count: int) -> Reply:
    _host(sim).chip_wrong_arpc(count)
    return {}


@op(Arg("commands", list, None, "script commands, each CLA 84 with a 4-byte MAC: "
        + ", ".join(SCRIPT_COMMANDS) + f" (default {DEFAULT_SCRIPT})", flag="", nargs="*",
        metavar="COMMAND"),
    Arg("templates", str, "72", "71 (before the second GENERATE AC), 72 (after it) or both",
        choices=tuple(SCRIPT_TEMPLATES)),
    help="the next 0210 built with tag 91 carries issuer scripts (at most 128 bytes)",
    page=True, command="chip-scripts",
    show=lambda r, args: f"next 0210 with tag 91: {r['bytes']} bytes of issuer scripts")
def chip_scripts(sim: Simulator, commands: list[str] | None, templates: str) -> Reply:
    return {"bytes": _host(sim).chip_scripts(templates, tuple(commands or (DEFAULT_SCRIPT,)))}


def _slot(sim: Simulator) -> ChipSlot:
    if sim.chip_slot is None:
        raise RequestError("no chip slot: hwsim runs with --vpcd-port 0")
    return sim.chip_slot


@op(Arg("profile", str, help="a chip card profile (`hwsim ctl cards` lists them)", flag=""),
    help="insert a test chip card into the chip reader (vpcd)", page=True, command="insert",
    show=lambda r, args: ctlview.chip_slot(r))
async def chip_insert(sim: Simulator, profile: str) -> Reply:
    return await _slot(sim).insert(profile)


@op(help="take the chip card out of the chip reader", page=True, command="remove",
    show=lambda r, args: ctlview.chip_slot(r))
async def chip_remove(sim: Simulator) -> Reply:
    return await _slot(sim).remove()


@op(help="the test chip card profiles, and the card in the chip reader", page=True,
    command="cards", show=ctlview.chip_cards)
def chip_cards(sim: Simulator) -> Reply:
    slot = sim.chip_slot
    return {"profiles": chip_profiles(), "slot": slot.state() if slot is not None else None}


# -- the 4G modem and the primary path ----------------------------------------------------

@op(Arg("sim_present", bool, None, "the SIM card", flag="--sim",
        words={"present": True, "absent": False}),
    Arg("registration", int, None, "what AT+CREG? answers (1 registered, 2 searching, "
        "3 denied, 5 roaming)", words=MODEM_REGISTRATION),
    Arg("rssi", int, None, "signal 0-31, 99 unknown", metavar="N"),
    Arg("netopen_error", int, None, "AT+NETOPEN fails with +NETOPEN: N (0: works)",
        metavar="N"),
    Arg("cipopen_error", int, None, "AT+CIPOPEN fails with +CIPOPEN: 0,N (0: works)",
        metavar="N"),
    Arg("latency", float, None, "one-way network delay for data, seconds", metavar="S"),
    Arg("boot_time", float, None, "seconds from power-on to the first answer", metavar="S"),
    Arg("power", bool, None, "switch it (as PWRKEY would)", words=ON_OFF),
    Arg("drop", bool, None, "the peer closes the open socket"),
    Arg("hang", bool, None, "the module stops answering until power-cycled or reset"),
    help="set or show the 4G modem (SIM, network, signal, faults)", page=True,
    about="Without options: show the modem's state and counters.", noun="setting",
    show=ctlview.modem)
def modem(sim: Simulator, sim_present: bool | None, registration: int | None,
          rssi: int | None, netopen_error: int | None, cipopen_error: int | None,
          latency: float | None, boot_time: float | None, power: bool | None,
          drop: bool | None, hang: bool | None) -> Reply:
    sim.modem.set(**_given({
        "sim_present": sim_present, "registration": registration, "rssi": rssi,
        "netopen_error": netopen_error, "cipopen_error": cipopen_error, "latency": latency,
        "boot_time": boot_time, "power": power, "drop": drop, "hang": hang}))  # fmt: skip
    return sim.modem.state()


@op(help="the modem's settings, power, session, link and counters", show=ctlview.modem)
def modem_state(sim: Simulator) -> Reply:
    return sim.modem.state()


def _primary_said(r: Reply, args: argparse.Namespace) -> str:
    return (f"primary path {'up' if r['up'] else 'DOWN (' + r['mode'] + ')'}, port "
            f"{r['port']} -> {r['target']}, {r['open']} connection(s) open")


@op(Arg("action", str, "state", "down, up or state", choices=("down", "up", "state"),
        flag=""),
    Arg("mode", str, "refuse", "with down: refuse (port closed, connections reset) or "
        "blackhole (connections stay open, nothing flows)", choices=("refuse", "blackhole")),
    help="cut or restore the primary (Ethernet) path to the host", page=True,
    about="down: refuse (port closed, connections reset) or blackhole (connections stay "
    "open, nothing flows); up: restore; state: show it.",
    show=_primary_said)
async def primary(sim: Simulator, action: str, mode: str) -> Reply:
    proxy = sim.primary
    if proxy is None:
        raise RequestError("primary: the simulator has not started its primary path")
    if action == "down":
        await proxy.set_down(mode)
    elif action == "up":
        await proxy.set_up()
    return proxy.state()


@op(help="where the simulator's parts are (hwsim.json)", show=ctlview.fields)
def info(sim: Simulator) -> Reply:
    return dict(sim.info)

