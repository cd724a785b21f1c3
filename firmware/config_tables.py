"""The settings tables of posterm.toml, each key declared once (firmware.config_schema).

[terminal], [timeouts], [offline] and [log] feed the core's configuration and the
top of `Config`; [host], [maintenance], [update], [modem], [battery], [power] and
[operator] are the dataclasses the runtime reads. The device tables are in
`firmware.config_devices`; the checks across keys and tables in `firmware.config`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from firmware.config_schema import (
    REQUIRED, backend, boolean, command, custom, integer, number, path, text,
)
from firmware.config_values import (
    ADDRESS_LINES, AMOUNT_MAX, BAUDRATES, BLOCKED_BINS_MAX, HOSTNAME_WHAT, RECEIPT_WIDTH, Table,
    ascii_printable, hostname, receipt_text,
)
from firmware.errors import ConfigError
from firmware.pinhash import FUNCTIONS as PIN_FUNCTIONS
from firmware.pinhash import parse_pin_hash

MONEY = f"must be an amount in minor units from 0 to {AMOUNT_MAX}"
I2C_ADDRESS = "must be a 7-bit I2C address from 0x03 to 0x77"


def _printable(lo: int, hi: int) -> Any:
    return lambda v: lo <= len(v) <= hi and ascii_printable(v) and not v.isspace()


def parse_window(text: str) -> tuple[int, int] | None:
    """"03:00-05:00" -> (180, 300); a window may run past midnight ("23:30-00:30")."""
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", text)
    if not m:
        return None
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    return None if start == end else (start, end)


# -- readers of keys with a check of their own -------------------------------------------
ADDRESS_LINE = (f"at most {RECEIPT_WIDTH} printable single-width characters "
                f"(the receipt is {RECEIPT_WIDTH} columns)")


def _address(t: Table, key: str, value: Any) -> Any:
    if not isinstance(value, list) or len(value) > ADDRESS_LINES:
        raise t.error(key, f"must be a list of at most {ADDRESS_LINES} lines of "
                      + ADDRESS_LINE, value)
    for i, line in enumerate(value, 1):
        if not isinstance(line, str) or len(line) > RECEIPT_WIDTH or not receipt_text(line):
            raise t.error(key, f"line {i} must be a string of {ADDRESS_LINE}", line)
    return value


def _blocked_bins(t: Table, key: str, value: Any) -> Any:
    if not isinstance(value, list) or len(value) > BLOCKED_BINS_MAX:
        raise t.error(key, f"must be a list of at most {BLOCKED_BINS_MAX} 6-digit BIN strings",
                      value)
    for b in value:
        if not (isinstance(b, str) and re.fullmatch(r"[0-9]{6}", b)):
            raise t.error(key, "must be a list of 6-digit BIN strings, e.g. [\"541333\"]; one "
                          "entry is not", b)
    return value


def _pin_hash(t: Table, key: str, value: Any) -> Any:
    if not isinstance(value, str):
        raise t.error(key, 'must be the text `posterm pin-hash` prints, or "" for no PIN', value)
    if value:
        try:
            parse_pin_hash(value)
        except ValueError as exc:  # never echo the value: it is a secret's hash
            raise ConfigError(f"{t.source}: [{t.name}] {key}: {exc}") from None
    return value


PROTECT_WHAT = ("must be a list of the operator functions that ask for the supervisor PIN, "
                "from " + ", ".join(f'"{f}"' for f in PIN_FUNCTIONS) + " ([] for none)")


def _protect(t: Table, key: str, value: Any) -> Any:
    if not (isinstance(value, list) and all(isinstance(f, str) and f in PIN_FUNCTIONS
                                            for f in value)):
        raise t.error(key, PROTECT_WHAT, value)
    return value


SHUTDOWN_WHAT = ('must be a command line of at most 1024 printable characters, or "" to only '
                 "stop posterm")


def _command_line(t: Table, key: str, value: Any) -> Any:
    if not (isinstance(value, str) and len(value) <= 1024 and value.isprintable()):
        raise t.error(key, SHUTDOWN_WHAT, value)
    try:
        shlex.split(value)
    except ValueError as exc:
        raise t.error(key, f"is not a valid command line ({exc})", value) from None
    return value


# -- the tables --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TerminalTable:
    """[terminal]: who the terminal is, and where it keeps its state."""

    id: str = text(REQUIRED, check=_printable(1, 8), help="terminal id, field 41",
                   what="must be 1 to 8 printable ASCII characters, not blank (field 41)")
    merchant_id: str = text(
        REQUIRED, check=_printable(1, 15), help="merchant id, field 42",
        what="must be 1 to 15 printable ASCII characters, not blank (field 42)")
    merchant_name: str = text(
        REQUIRED, help="first receipt line",
        check=lambda v: 0 < len(v) <= RECEIPT_WIDTH and not v.isspace() and receipt_text(v),
        what=f"must be 1 to {RECEIPT_WIDTH} printable single-width characters, not blank "
             f"(the receipt is {RECEIPT_WIDTH} columns)")
    address: tuple[str, ...] = custom(
        [], read=_address, convert=tuple, help="further receipt header lines",
        what=f"must be a list of at most {ADDRESS_LINES} lines of {ADDRESS_LINE}")
    currency: str = text(REQUIRED, help="ISO 4217 numeric code, field 49",
                         check=lambda v: re.fullmatch(r"[0-9]{3}", v) is not None and v != "000",
                         what='must be the 3-digit ISO 4217 numeric code, e.g. "978"')
    currency_code: str = text(
        "EUR", help="shown on screen and receipt",
        check=lambda v: re.fullmatch(r"[A-Z]{3}", v) is not None,
        what='must be 3 ASCII capital letters, the ISO 4217 code, e.g. "EUR" (the display '
             "shows ASCII only)")
    max_amount: int = integer(500000, lo=1, hi=AMOUNT_MAX, help="largest sale in minor units",
                              what=f"must be an amount in minor units from 1 to {AMOUNT_MAX}")
    state_dir: str = path("/var/lib/posterm",
                          help="journal, key file, printer cache, lock (made private, mode 700)")
    runtime_dir: str = path("/run/posterm", help="the status socket (systemd RuntimeDirectory)")


@dataclass(frozen=True, kw_only=True)
class TimeoutsTable:
    """[timeouts]: how long the screens wait, and the retries on a busy host."""

    amount_entry: float = number(60, lo=5, hi=600, help="seconds before amount entry gives up")
    card: float = number(30, lo=5, hi=300, help="seconds to wait for a card")
    result: float = number(4, lo=1, hi=60, help="seconds the result stays on screen")
    busy_retries: int = integer(2, lo=0, hi=10,
                                help="new attempts after a busy host (91/96, refused)")
    busy_backoff: float = number(0.5, lo=0.1, hi=30, help="first backoff ceiling, doubled each "
                                 "retry (full jitter)")
    sale_budget: float = number(60, lo=5, hi=600,
                                help="seconds one sale may spend on busy retries")


@dataclass(frozen=True)
class HostConfig:
    """[host]: the acquirer host and the link to it."""

    host: str = text(REQUIRED, check=hostname, what=HOSTNAME_WHAT, help="acquirer host address")
    port: int = integer(REQUIRED, lo=1, hi=65535, help="acquirer host port")
    tls: bool = boolean(True, help="TLS 1.2+; `false` only for a simulator")
    ca_file: str = path("", optional=True, help="CA bundle (PEM) the host certificate is "
                        "verified against; required with TLS")
    server_name: str = text("", check=lambda v: v == "" or hostname(v),
                            what=HOSTNAME_WHAT.replace("must be", "must be empty or", 1),
                            help='name checked in the host certificate ("": host)')
    client_cert: str = path("", optional=True, help="mutual TLS: the client certificate (PEM)")
    client_key: str = path("", optional=True,
                           help="mutual TLS: its key (PEM), only with client_cert")
    connect_timeout: float = number(5, lo=1, hi=60, help="seconds to connect")
    response_timeout: float = number(30, lo=1, hi=300, help="seconds to wait for an answer")
    repeat_backoff_base: float = number(5, lo=0.1, hi=600,
                                        help="reversal/advice repeats (full jitter): first pause")
    repeat_backoff_cap: float = number(300, lo=1, hi=3600,
                                       help="longest pause, at least repeat_backoff_base")
    echo_interval: float = number(60, lo=10, hi=3600,
                                  help="echo test after this many idle seconds")
    # host-interface.md 1.1: pipelined store-and-forward
    advice_window: int = integer(16, lo=1, hi=64, help="reversals, offline sales and a batch "
                                 "upload's 0320s sent without waiting for their answers (1: "
                                 "one at a time)")


@dataclass(frozen=True, kw_only=True)
class OfflineTable:
    """[offline]: the offline rules (core/risk.py) and the link's health (core/link.py)."""

    enabled: bool = boolean(True, help="approve offline within the limits when the bank is down")
    floor_limit: int = integer(5000, lo=0, hi=AMOUNT_MAX, what=MONEY, help="largest sale "
                               "approved offline, at most total_limit and max_amount")
    total_limit: int = integer(50000, lo=0, hi=AMOUNT_MAX, what=MONEY,
                               help="unsent offline sales plus this one")
    max_count: int = integer(20, lo=0, hi=1000, help="unsent offline sales must stay below")
    max_age_hours: float = number(24, lo=1, hi=168, unit="hours",
                                  help="age of the oldest unsent offline sale")
    blocked_bins: tuple[str, ...] = custom(
        [], read=_blocked_bins, convert=tuple, help="BINs never approved offline",
        what=f"must be a list of at most {BLOCKED_BINS_MAX} 6-digit BIN strings")
    down_after: int = integer(3, lo=1, hi=100, help="failures in a row before the link is down")
    probe_base: float = number(5, lo=0.1, hi=600, help="first pause between probes while down")
    probe_cap: float = number(120, lo=1, hi=3600,
                              help="longest pause between probes, at least probe_base")


@dataclass(frozen=True, kw_only=True)
class LogTable:
    """[log]."""

    level: str = text("INFO", convert=str.upper, what="must be DEBUG, INFO, WARNING or ERROR",
                      check=lambda v: v.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"}
                      and v.isascii(),
                      help="DEBUG adds the wire logs (`posterm.wire.*`, PANs masked)")


@dataclass(frozen=True, kw_only=True)
class Maintenance:
    """[maintenance]: the daily restart, a local-time window (minutes after midnight)."""

    window: tuple[int, int] | None = text(
        "03:00-05:00", toml="restart_window", convert=lambda v: parse_window(v) if v else None,
        check=lambda v: v == "" or parse_window(v) is not None,
        what='must be a local-time window "HH:MM-HH:MM" (e.g. "03:00-05:00"), or "" for no '
             "daily restart",
        help="daily restart, local time, when the terminal is idle")
    notice: float = number(60, lo=2, hi=600, toml="restart_notice",
                           help="seconds the idle screen announces the restart first")


@dataclass(frozen=True, kw_only=True)
class UpdatePolicy:
    """[update]: `posterm update`: the key bundles must be signed with, and how to install."""

    public_key: str = path("/usr/share/posterm/update-key.pub",
                           help="the key update bundles must be signed with")
    keep_dir: str = path("/var/lib/posterm-update",
                         help="snapshots and the packages to roll back to")
    install_command: tuple[str, ...] = command(["dpkg", "-i"], help="+ the package's path")
    restart_command: tuple[str, ...] = command(["systemctl", "restart", "posterm.service"],
                                               help="starts the new version")
    stop_command: tuple[str, ...] = command(["systemctl", "stop", "posterm.service"],
                                            help="stops posterm before installing")
    repack_command: tuple[str, ...] = command(["dpkg-repack", "posterm"],
                                              help="rebuilds the running version's package")
    ready_timeout: float = number(120, lo=10, hi=900,
                                  help="the new version must be READY and signed on by then")
    idle_wait: float = number(300, lo=0, hi=3600,
                              help="how long to wait for an idle terminal before giving up")


@dataclass(frozen=True, kw_only=True)
class ModemConfig:
    """[modem]: the 4G modem, the fallback path to the host (backend "none": no modem)."""

    backend: str = backend(("none", "serial"), default="none", help="the 4G modem's driver",
                           what='must be "none" (no modem) or "serial"')
    port: str = path("", optional=True, backends=("serial",), needed="/dev/ttyUSB2",
                     help="the modem's serial port")
    baudrate: int = integer(115200, lo=1200, hi=230400, choices=BAUDRATES, help="baud rate")
    apn: str = text("internet", check=lambda v: 0 < len(v) <= 63 and ascii_printable(v)
                    and '"' not in v and not v.isspace(), help="the mobile network's APN",
                    what="must be 1 to 63 printable ASCII characters without a double quote")
    pwrkey_pin: int = integer(17, lo=0, hi=27, help="BCM pin of the module's PWRKEY")
    status_pin: int = integer(27, lo=0, hi=27, help="BCM pin of its STATUS output")
    reset_pin: int = integer(22, lo=0, hi=27, help="BCM pin of its RESET (three different pins)")
    boot_timeout: float = number(20, lo=1, hi=120,
                                 help="from power-on to the first answer to AT")
    command_timeout: float = number(5, lo=0.5, hi=60, help="seconds for one AT command")
    poll_interval: float = number(30, lo=1, hi=3600,
                                  help="registration and signal are read this often")
    echo_interval: float = number(300, lo=10, hi=3600,
                                  help="idle echo tests on the modem path (data is metered)")
    failback_after: float = number(60, lo=1, hi=3600,
                                   help="the primary must stay healthy this long before failback")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


@dataclass(frozen=True, kw_only=True)
class BatteryConfig:
    """[battery]: the battery gauge (MAX17048): where it is, how often to read it."""

    backend: str = backend(("none", "i2c", "hwsim"), default="none",
                           what='must be "none" (no gauge), "i2c" or "hwsim"',
                           help="the battery gauge (MAX17048); i2c: smbus2 on /dev/i2c-<bus>")
    bus: int = integer(1, lo=0, hi=63, help="I2C bus number")
    address: int = integer(0x36, lo=0x03, hi=0x77, hex=True, help="the gauge's I2C address",
                           what=I2C_ADDRESS + ", e.g. 0x36")
    socket: str = path(REQUIRED, socket=True, backends=("hwsim",),
                       help="hwsim's control socket")
    interval: float = number(60, lo=0.5, hi=3600, help="seconds between reads")
    low_percent: int = integer(10, lo=0, hi=50, help="below this (and not charging) no new "
                               "sale starts; 0: never",
                               what="must be a whole percent from 0 (never block sales) to 50")


@dataclass(frozen=True, kw_only=True)
class PowerConfig:
    """[power]: the power-fail input from the UPS board, and what to do on mains loss."""

    enabled: bool = boolean(True, help="watch the power-fail input")
    fail_pin: int = integer(25, lo=0, hi=27, what="must be a BCM GPIO number from 0 to 27",
                            help="BCM pin, low when mains power is lost; not 23 or 24")
    grace: float = number(60, lo=0, hi=3600,
                          help="seconds on battery before posterm stops and the shutdown runs")
    shutdown_command: tuple[str, ...] = custom(
        "systemctl poweroff", read=_command_line, what=SHUTDOWN_WHAT,
        convert=lambda v: tuple(shlex.split(v)),
        help='run when the grace is over; "" only stops posterm')


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """[operator]: the supervisor PIN, what it protects, the duplicate guard, the close."""

    pin_hash: str = custom("", read=_pin_hash, help="from `posterm pin-hash`; \"\": no PIN",
                           what='must be the text `posterm pin-hash` prints, or "" for no PIN')
    protect: frozenset[str] = custom(
        ["refund", "void", "close", "x_report"], read=_protect, convert=frozenset,
        what=PROTECT_WHAT, help="the operator functions that ask for the supervisor PIN")
    lockout_attempts: int = integer(3, lo=1, hi=10,
                                    help="wrong PINs in a row before the functions lock")
    lockout_minutes: float = number(15, lo=1, hi=1440, unit="minutes", help="how long they lock")
    duplicate_minutes: float = number(10, lo=0, hi=1440, unit="minutes",
                                      help="same card and amount within this asks first; 0: off")
    close_time: str = text("", check=lambda v: v == "" or re.fullmatch(
        r"([01]\d|2[0-3]):[0-5]\d", v) is not None, help='daily batch close, local time; "": none',
        what='must be a local time "HH:MM" (e.g. "23:30") for the daily batch close, or "" for '
             "none")



@dataclass(frozen=True, kw_only=True)
class PinTable:
    """[pin]: the cardholder's PIN: its entry, and the DUKPT key online PINs are
    enciphered under (host-interface 9; the key is loaded with `posterm key-load`)."""

    enabled: bool = boolean(False, help="take cardholders' PINs (online and offline)")
    method: str = text("aes", check=lambda v: v in ("aes", "tdes"),
                       what='must be "aes" (AES DUKPT, X9.24-3) or "tdes" (TDES DUKPT, '
                            "X9.24-1)",
                       help="the online PIN's DUKPT: AES (format 4) or TDES (format 0)")
    key_file: str = path("", optional=True, help='the DUKPT key file `posterm key-load` '
                         'writes (mode 600); "": pin.key in state_dir')
    min_length: int = integer(4, lo=4, hi=12, help="fewest PIN digits OK accepts")
    max_length: int = integer(12, lo=4, hi=12, help="most PIN digits, at least min_length")
    entry_timeout: float = number(30, lo=5, hi=120, help="seconds the PIN screen waits")
    bypass: bool = boolean(False, help="the cardholder may bypass PIN entry where the card's "
                           "CVM list allows it")
