"""The configuration file: one TOML file, validated at start.

Every problem is reported as a ConfigError of one line naming the table and key, e.g.
"posterm.toml: [host] port: must be an integer from 1 to 65535, got 'abc'";
problems of the whole file (unreadable, not UTF-8, not TOML, empty) name the file.

Everything the host messages, the display and the receipt carry is checked here,
and every number has bounds that make sense for a payment terminal (`LIMITS`),
so a configuration that passes `check-config` cannot fail later because of a value.
This module knows the tables and keys; how one value is read and bounded is
`firmware.config_values`.
"""

from __future__ import annotations

import os
import re
import shlex
import ssl
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.config_values import (
    ADDRESS_LINES, AMOUNT_MAX, BAUDRATES, BLOCKED_BINS_MAX, HOSTNAME_WHAT, LIMITS, MAX_FILE_BYTES,
    MISSING, NAME_MAX_BYTES, PATH_MAX_BYTES, RECEIPT_WIDTH, SOCKET_MAX_BYTES, Table,
    ascii_printable, hostname, key_name, receipt_text, short, why_no_directory, why_unreadable,
)
from firmware.core.iso import Identity
from firmware.core.link import LinkPolicy
from firmware.core.model import CoreConfig
from firmware.core.risk import OfflineRules
from firmware.errors import ConfigError
from firmware.pinhash import FUNCTIONS as PIN_FUNCTIONS
from firmware.pinhash import parse_pin_hash

# The limits stay importable from here (they live in firmware.config_values).
__all__ = ["ADDRESS_LINES", "AMOUNT_MAX", "BACKENDS", "BAUDRATES", "BLOCKED_BINS_MAX",
           "DEVICE_DEFAULTS", "HOSTNAME_WHAT", "LIMITS", "MAX_FILE_BYTES", "NAME_MAX_BYTES",
           "PATH_MAX_BYTES", "RECEIPT_WIDTH", "REQUIRED_TABLES", "SOCKET_MAX_BYTES", "Config",
           "DeviceConfig", "HostConfig", "load", "parse"]


@dataclass(frozen=True)
class HostConfig:
    host: str
    port: int
    tls: bool = True
    ca_file: str = ""
    server_name: str = ""
    client_cert: str = ""
    client_key: str = ""
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    repeat_backoff_base: float = 5.0
    repeat_backoff_cap: float = 300.0
    echo_interval: float = 60.0
    # reversals and advices the forwarder keeps outstanding at once (host-interface.md 1.1:
    # pipelined store-and-forward); 1 sends them one at a time
    advice_window: int = 16


@dataclass(frozen=True)
class DeviceConfig:
    backend: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModemConfig:
    """[modem]: the 4G modem, the fallback path to the host (backend "none": no modem)."""

    backend: str = "none"
    port: str = ""
    baudrate: int = 115200
    apn: str = "internet"
    pwrkey_pin: int = 17
    status_pin: int = 27
    reset_pin: int = 22
    boot_timeout: float = 20.0  # from power-on to the first answer to AT
    command_timeout: float = 5.0
    poll_interval: float = 30.0  # registration and signal are read this often
    echo_interval: float = 300.0  # idle echo tests on the modem path (data is metered)
    failback_after: float = 60.0  # the primary must stay healthy this long before failback

    @property
    def enabled(self) -> bool:
        return self.backend != "none"


@dataclass(frozen=True)
class Maintenance:
    """The daily restart: a local-time window (minutes after midnight), None for never."""

    window: tuple[int, int] | None = (3 * 60, 5 * 60)
    notice: float = 60.0  # seconds the idle screen announces it first


def parse_window(text: str) -> tuple[int, int] | None:
    """"03:00-05:00" -> (180, 300); a window may run past midnight ("23:30-00:30")."""
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)", text)
    if not m:
        return None
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    return None if start == end else (start, end)


@dataclass(frozen=True)
class UpdatePolicy:
    """`posterm update`: the key bundles must be signed with, and how to install."""

    public_key: str = "/usr/share/posterm/update-key.pub"
    keep_dir: str = "/var/lib/posterm-update"  # snapshots and the packages to roll back to
    install_command: tuple[str, ...] = ("dpkg", "-i")  # + the package path
    restart_command: tuple[str, ...] = ("systemctl", "restart", "posterm.service")
    stop_command: tuple[str, ...] = ("systemctl", "stop", "posterm.service")
    repack_command: tuple[str, ...] = ("dpkg-repack", "posterm")  # rebuilds the running one
    ready_timeout: float = 120.0  # the new version must be READY and signed on by then
    idle_wait: float = 300.0  # how long to wait for an idle terminal before giving up


@dataclass(frozen=True)
class BatteryConfig:
    """The battery gauge (MAX17048): where it is, how often to read it, when it is low."""

    backend: str = "none"  # "none", "i2c" (smbus2 on /dev/i2c-<bus>) or "hwsim"
    bus: int = 1
    address: int = 0x36
    socket: str = ""  # hwsim's control socket
    interval: float = 60.0  # seconds between reads
    low_percent: int = 10  # below this (and not charging) no new sale starts; 0: never


@dataclass(frozen=True)
class PowerConfig:
    """The power-fail input from the UPS board and what to do when mains power is lost."""

    enabled: bool = True
    fail_pin: int = 25  # BCM; low means mains power is lost
    grace: float = 60.0  # seconds on battery before posterm stops and the shutdown runs
    shutdown_command: tuple[str, ...] = ("systemctl", "poweroff")  # () only stops posterm


@dataclass(frozen=True)
class OperatorConfig:
    """[operator]: the supervisor PIN, what it protects, the duplicate guard, the daily close."""

    pin_hash: str = ""  # "scrypt$N$r$p$salt$hash" from `posterm pin-hash`; "": no PIN
    protect: frozenset[str] = frozenset({"refund", "void", "close", "x_report"})
    lockout_attempts: int = 3  # wrong PINs in a row before the operator functions lock
    lockout_minutes: float = 15.0
    duplicate_minutes: float = 10.0  # 0: no duplicate guard
    close_time: str = ""  # "HH:MM" local time of the daily batch close; "": never


@dataclass(frozen=True)
class Config:
    path: Path
    core: CoreConfig
    host: HostConfig
    state_dir: Path
    card_reader: DeviceConfig
    keypad: DeviceConfig
    printer: DeviceConfig
    display: DeviceConfig
    gpio: DeviceConfig
    runtime_dir: Path = Path("/run/posterm")  # the status socket (systemd RuntimeDirectory)
    maintenance: Maintenance = Maintenance()
    update: UpdatePolicy = UpdatePolicy()
    battery: BatteryConfig = BatteryConfig()
    power: PowerConfig = PowerConfig()
    log_level: str = "INFO"
    link: LinkPolicy = LinkPolicy()
    modem: ModemConfig = ModemConfig()
    operator: OperatorConfig = OperatorConfig()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# -- the file -----------------------------------------------------------------------------
def load(path: str | Path) -> Config:
    path = Path(path)
    src = path.name if path.name.isprintable() and path.name else short(path.name)
    shown = str(path) if str(path).isprintable() else short(str(path))
    raw = _read(path, shown)
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(f"{src}: starts with a UTF-8 byte order mark (BOM); "
                          "save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{src}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} on line "
                          f"{line}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        why = " ".join(str(exc).split())
        raise ConfigError(f"{src}: not valid TOML: {why}") from None
    except RecursionError:
        raise ConfigError(f"{src}: not valid TOML: arrays or tables nested too deeply") from None
    return parse(data, source=src, path=path)


def _read(path: Path, shown: str) -> bytes:
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"configuration file {shown} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"configuration file {shown} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"configuration file {shown} is too large ({info.st_size} bytes, "
                              f"at most {MAX_FILE_BYTES})")
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"configuration file {shown} does not exist") from None
    except PermissionError:
        raise ConfigError(f"cannot read configuration file {shown}: permission denied "
                          "(run as the posterm user, or fix the file's mode)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {shown}: "
                          f"{exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the path
        raise ConfigError(f"configuration file {shown}: not a valid path") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"configuration file {shown} is too large (at most "
                          f"{MAX_FILE_BYTES} bytes)")
    return raw


BACKENDS: dict[str, dict[str, dict[str, type]]] = {
    "card_reader": {"serial": {"port": str, "baudrate": int}},
    "keypad": {"evdev": {"path": str}, "hwsim": {"socket": str}},
    "printer": {"network": {"host": str, "port": int, "confirm_print": bool,
                            **dict.fromkeys(("status_interval", "retry_max", "job_timeout"),
                                            float)},
                "serial": {"device": str, "baudrate": int, "confirm_print": bool,
                           **dict.fromkeys(("status_interval", "retry_max", "job_timeout"),
                                           float)}},
    "display": {"smbus2": {"bus": int, "address": int},
                "hwsim": {"socket": str, "bus": int, "address": int}},
    "gpio": {"rpi": {}, "hwsim": {"socket": str}, "none": {}},
}
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "card_reader": {"baudrate": 9600},
    # the print queue's seconds (firmware/runtime/printqueue.py): status check while all
    # is well; longest pause between checks while a fault lasts or receipts wait; longest
    # a print may take before its receipt is queued and the sale goes on
    "printer": {"port": 9100, "baudrate": 19200, "confirm_print": True,
                "status_interval": 30.0, "retry_max": 10.0, "job_timeout": 20.0},
    "display": {"bus": 1, "address": 0x27},
}
REQUIRED_TABLES = ("terminal", "host", "card_reader", "keypad", "printer", "display")


def parse(data: dict[str, Any], *, source: str = "posterm.toml",
          path: Path = Path("posterm.toml")) -> Config:
    known = ("terminal", "timeouts", "host", "offline", *BACKENDS, "log", "maintenance",
             "update", "modem", "battery", "power", "operator")
    if not data:
        raise ConfigError(f"{source}: no settings (empty file); it needs at least the tables "
                          + ", ".join(f"[{t}]" for t in REQUIRED_TABLES))
    for name, value in data.items():
        if name not in known:
            if isinstance(value, dict) or (  # [name] or [[name]]
                    isinstance(value, list) and value and
                    all(isinstance(x, dict) for x in value)):
                raise ConfigError(f"{source}: [{key_name(name)}]: unknown table "
                                  f"(known tables: {', '.join(known)})")
            raise ConfigError(f"{source}: {key_name(name)}: a setting outside any table, "
                              f"got {short(value)} (settings belong to a table such as "
                              "[terminal])")
    for name in known:  # the file's shape first: each table a table
        if name in data:
            Table(source, name, data[name])
    t = Table(source, "terminal", _required(source, data, "terminal"))
    tid = t.text("id", check=lambda v: 1 <= len(v) <= 8 and ascii_printable(v)
                 and not v.isspace(),
                 what="must be 1 to 8 printable ASCII characters, not blank (field 41)")
    mid = t.text("merchant_id", check=lambda v: 1 <= len(v) <= 15 and ascii_printable(v)
                 and not v.isspace(),
                 what="must be 1 to 15 printable ASCII characters, not blank (field 42)")
    name = t.text("merchant_name", check=lambda v: 0 < len(v) <= RECEIPT_WIDTH
                  and not v.isspace() and receipt_text(v),
                  what=f"must be 1 to {RECEIPT_WIDTH} printable single-width characters, "
                       f"not blank (the receipt is {RECEIPT_WIDTH} columns)")
    address = _address(t)
    currency = t.text("currency", check=lambda v: re.fullmatch(r"[0-9]{3}", v) is not None
                      and v != "000",
                      what="must be the 3-digit ISO 4217 numeric code, e.g. \"978\"")
    currency_code = t.text("currency_code", "EUR",
                           check=lambda v: re.fullmatch(r"[A-Z]{3}", v) is not None,
                           what="must be 3 ASCII capital letters, the ISO 4217 code, "
                                "e.g. \"EUR\" (the display shows ASCII only)")
    max_amount = t.integer("max_amount", 500000,
                           what=f"must be an amount in minor units from 1 to {AMOUNT_MAX}")
    state_dir = t.path("state_dir", "/var/lib/posterm")
    runtime_dir = t.path("runtime_dir", "/run/posterm")
    t.finish()
    why = why_no_directory(Path(state_dir))
    if why:
        raise t.error("state_dir", why, state_dir)

    tm = Table(source, "timeouts", data.get("timeouts", {}))
    amount_to = tm.number("amount_entry", 60.0)
    card_to = tm.number("card", 30.0)
    result_to = tm.number("result", 4.0)
    busy_retries = tm.integer("busy_retries", 2)
    busy_backoff = tm.number("busy_backoff", 0.5)
    sale_budget = tm.number("sale_budget", 60.0)
    tm.finish()

    host = _host(Table(source, "host", _required(source, data, "host")))

    mt = Table(source, "maintenance", data.get("maintenance", {}))
    window = mt.text("restart_window", "03:00-05:00", check=lambda v: v == "" or
                     parse_window(v) is not None,
                     what='must be a local-time window "HH:MM-HH:MM" (e.g. "03:00-05:00"), '
                          'or "" for no daily restart')
    maintenance = Maintenance(window=parse_window(window) if window else None,
                              notice=mt.number("restart_notice", 60.0))
    mt.finish()

    up = Table(source, "update", data.get("update", {}))
    update = UpdatePolicy(
        public_key=up.path("public_key", "/usr/share/posterm/update-key.pub"),
        keep_dir=up.path("keep_dir", "/var/lib/posterm-update"),
        install_command=tuple(up.command("install_command", ["dpkg", "-i"])),
        restart_command=tuple(up.command("restart_command",
                                         ["systemctl", "restart", "posterm.service"])),
        stop_command=tuple(up.command("stop_command", ["systemctl", "stop", "posterm.service"])),
        repack_command=tuple(up.command("repack_command", ["dpkg-repack", "posterm"])),
        ready_timeout=up.number("ready_timeout", 120.0),
        idle_wait=up.number("idle_wait", 300.0),
    )
    up.finish()

    lg = Table(source, "log", data.get("log", {}))
    level = lg.text("level", "INFO", check=lambda v: v.upper() in
                    {"DEBUG", "INFO", "WARNING", "ERROR"} and v.isascii(),
                    what="must be DEBUG, INFO, WARNING or ERROR")
    lg.finish()

    o = Table(source, "offline", data.get("offline", {}))
    money = f"must be an amount in minor units from 0 to {AMOUNT_MAX}"
    floor_limit = o.integer("floor_limit", 5000, what=money)
    total_limit = o.integer("total_limit", 50000, what=money)
    offline = OfflineRules(
        enabled=o.boolean("enabled", True),
        floor_limit=floor_limit,
        total_limit=total_limit,
        max_count=o.integer("max_count", 20),
        max_age_hours=o.number("max_age_hours", 24.0, unit="hours"),
        blocked_bins=tuple(_blocked_bins(o)),
    )
    link = LinkPolicy(
        down_after=o.integer("down_after", 3),
        probe_base=o.number("probe_base", 5.0),
        probe_cap=o.number("probe_cap", 120.0),
    )
    o.finish()
    if floor_limit > total_limit:
        raise o.error("floor_limit", f"must not exceed total_limit ({total_limit})")
    if floor_limit > max_amount:
        raise o.error("floor_limit", f"must not exceed [terminal] max_amount ({max_amount})")
    if link.probe_cap < link.probe_base:
        raise o.error("probe_cap", f"must be at least probe_base ({link.probe_base:g})")

    devices = {dev: _device(source, dev, data.get(dev)) for dev in BACKENDS}
    modem = _modem(Table(source, "modem", data.get("modem", {})))
    operator = _operator(Table(source, "operator", data.get("operator", {})))
    core = CoreConfig(
        identity=Identity(tid, mid, currency), merchant_name=name, address=tuple(address),
        currency_code=currency_code, max_amount=max_amount, amount_timeout=amount_to,
        card_timeout=card_to, result_timeout=result_to, busy_retries=busy_retries,
        busy_backoff=busy_backoff, sale_budget=sale_budget, offline=offline,
        protect=operator.protect, pin_set=bool(operator.pin_hash),
        duplicate_minutes=operator.duplicate_minutes,
    )
    return Config(path=path, core=core, host=host, state_dir=Path(state_dir),
                  runtime_dir=Path(runtime_dir), maintenance=maintenance, update=update,
                  log_level=level.upper(), link=link, modem=modem, operator=operator, raw=data,
                  battery=_battery(Table(source, "battery", data.get("battery", {}))),
                  power=_power(Table(source, "power", data.get("power", {}))), **devices)


def _modem(m: Table) -> ModemConfig:
    backend = m.text("backend", "none", check=lambda v: v in ("none", "serial"),
                     what='must be "none" (no modem) or "serial"')
    port = m.path("port", "", optional=True)
    if backend == "serial" and not port:
        raise m.error("port", 'is needed with backend = "serial" (e.g. "/dev/ttyUSB2")')
    apn = m.text("apn", "internet", check=lambda v: 0 < len(v) <= 63 and ascii_printable(v)
                 and '"' not in v and not v.isspace(),
                 what="must be 1 to 63 printable ASCII characters without a double quote")
    baudrate = m.integer("baudrate", 115200)
    if baudrate not in BAUDRATES:
        raise m.error("baudrate", "must be one of " + ", ".join(map(str, BAUDRATES)), baudrate)
    pins = [m.integer(k, d) for k, d in (("pwrkey_pin", 17), ("status_pin", 27),
                                         ("reset_pin", 22))]
    if len(set(pins)) != 3:
        raise m.error("reset_pin", "pwrkey_pin, status_pin and reset_pin must be three "
                                   "different pins")
    cfg = ModemConfig(
        backend=backend, port=port,
        baudrate=baudrate, apn=apn, pwrkey_pin=pins[0], status_pin=pins[1], reset_pin=pins[2],
        boot_timeout=m.number("boot_timeout", 20.0),
        command_timeout=m.number("command_timeout", 5.0),
        poll_interval=m.number("poll_interval", 30.0),
        echo_interval=m.number("echo_interval", 300.0),
        failback_after=m.number("failback_after", 60.0))
    m.finish()
    return cfg


def _operator(t: Table) -> OperatorConfig:
    pin_hash = t.lookup("pin_hash", "")
    if not isinstance(pin_hash, str):
        raise t.error("pin_hash", 'must be the text `posterm pin-hash` prints, or "" for no '
                      "PIN", pin_hash)
    if pin_hash:
        try:
            parse_pin_hash(pin_hash)
        except ValueError as exc:  # never echo the value: it is a secret's hash
            raise ConfigError(f"{t.source}: [operator] pin_hash: {exc}") from None
    protect = t.lookup("protect", list(OperatorConfig.protect))
    if not (isinstance(protect, list) and all(isinstance(f, str) and f in PIN_FUNCTIONS
                                              for f in protect)):
        raise t.error("protect", "must be a list of the operator functions that ask for the "
                      "supervisor PIN, from " + ", ".join(f'"{f}"' for f in PIN_FUNCTIONS)
                      + " ([] for none)", protect)
    close_time = t.text("close_time", "", check=lambda v: v == "" or re.fullmatch(
        r"([01]\d|2[0-3]):[0-5]\d", v) is not None,
        what='must be a local time "HH:MM" (e.g. "23:30") for the daily batch close, or "" '
             "for none")
    cfg = OperatorConfig(
        pin_hash=pin_hash, protect=frozenset(protect), close_time=close_time,
        lockout_attempts=t.integer("lockout_attempts", 3),
        lockout_minutes=t.number("lockout_minutes", 15.0, unit="minutes"),
        duplicate_minutes=t.number("duplicate_minutes", 10.0, unit="minutes"))
    t.finish()
    return cfg


def _required(source: str, data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise ConfigError(f"{source}: [{name}]: missing table")
    return data[name]


def _address(t: Table) -> list[str]:
    value = t.lookup("address", [])
    line_what = (f"at most {RECEIPT_WIDTH} printable single-width characters "
                 f"(the receipt is {RECEIPT_WIDTH} columns)")
    if not isinstance(value, list) or len(value) > ADDRESS_LINES:
        raise t.error("address", f"must be a list of at most {ADDRESS_LINES} lines of "
                      + line_what, value)
    for i, line in enumerate(value, 1):
        if not isinstance(line, str) or len(line) > RECEIPT_WIDTH or not receipt_text(line):
            raise t.error("address", f"line {i} must be a string of {line_what}", line)
    return value


def _blocked_bins(o: Table) -> list[str]:
    value = o.lookup("blocked_bins", [])
    if not isinstance(value, list) or len(value) > BLOCKED_BINS_MAX:
        raise o.error("blocked_bins", f"must be a list of at most {BLOCKED_BINS_MAX} "
                      "6-digit BIN strings", value)
    for b in value:
        if not (isinstance(b, str) and re.fullmatch(r"[0-9]{6}", b)):
            raise o.error("blocked_bins", "must be a list of 6-digit BIN strings, e.g. "
                          "[\"541333\"]; one entry is not", b)
    return value


def _battery(t: Table) -> BatteryConfig:
    backend = t.text("backend", "none", check=lambda v: v in ("none", "i2c", "hwsim"),
                     what='must be "none" (no gauge), "i2c" or "hwsim"')
    cfg = BatteryConfig(
        backend=backend,
        bus=t.integer("bus", 1),
        address=t.integer("address", 0x36, what="must be a 7-bit I2C address from 0x03 to "
                          "0x77, e.g. 0x36"),
        socket=t.path("socket", socket=True) if backend == "hwsim" else "",
        interval=t.number("interval", 60.0),
        low_percent=t.integer("low_percent", 10, what="must be a whole percent from 0 (never "
                              "block sales) to 50"),
    )
    t.finish()
    return cfg


def _power(t: Table) -> PowerConfig:
    pin = t.integer("fail_pin", 25, what="must be a BCM GPIO number from 0 to 27")
    if pin in (23, 24):
        raise t.error("fail_pin", "must not be the buzzer (23) or the online LED (24) pin", pin)
    text = t.text("shutdown_command", "systemctl poweroff",
                  check=lambda v: len(v) <= 1024 and v.isprintable(),
                  what='must be a command line of at most 1024 printable characters, or "" '
                       "to only stop posterm")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise t.error("shutdown_command", f"is not a valid command line ({exc})",
                      text) from None
    cfg = PowerConfig(enabled=t.boolean("enabled", True), fail_pin=pin,
                      grace=t.number("grace", 60.0), shutdown_command=tuple(words))
    t.finish()
    return cfg


def _host(h: Table) -> HostConfig:
    host = HostConfig(
        host=h.text("host", check=hostname, what=HOSTNAME_WHAT),
        port=h.integer("port"),
        tls=h.boolean("tls", True),
        ca_file=h.path("ca_file", "", optional=True),
        server_name=h.text("server_name", "", check=lambda v: v == "" or hostname(v),
                           what=HOSTNAME_WHAT.replace("must be", "must be empty or", 1)),
        client_cert=h.path("client_cert", "", optional=True),
        client_key=h.path("client_key", "", optional=True),
        connect_timeout=h.number("connect_timeout", 5.0),
        response_timeout=h.number("response_timeout", 30.0),
        repeat_backoff_base=h.number("repeat_backoff_base", 5.0),
        repeat_backoff_cap=h.number("repeat_backoff_cap", 300.0),
        echo_interval=h.number("echo_interval", 60.0),
        advice_window=h.integer("advice_window", 16),
    )
    h.finish()
    if host.repeat_backoff_cap < host.repeat_backoff_base:
        raise h.error("repeat_backoff_cap",
                      f"must be at least repeat_backoff_base ({host.repeat_backoff_base:g})")
    if host.client_key and not host.client_cert:
        raise h.error("client_key", "given without client_cert (mutual TLS needs the "
                      "client certificate too)")
    if host.tls:
        if not host.ca_file:
            raise ConfigError(f"{h.source}: [host] ca_file: required when tls = true "
                              "(the host certificate is verified against it)")
        for key in ("ca_file", "client_cert", "client_key"):
            value = getattr(host, key)
            why = why_unreadable(Path(value)) if value else ""
            if why:
                raise h.error(key, why, value)
        _load_tls(h, host)
    return host


def _load_tls(h: Table, host: HostConfig) -> None:
    """Load the TLS files as the host link will, so a bad file shows now, by its key."""
    def no_password() -> bytes:
        raise h.error("client_key" if host.client_key else "client_cert",
                      "holds a private key encrypted with a pass phrase, which posterm "
                      "cannot enter", host.client_key or host.client_cert)

    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=host.ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise h.error("ca_file", f"is not a CA bundle in PEM format ({_reason(exc)})",
                      host.ca_file) from None
    if not host.client_cert:
        return
    if not _file_holds(host.client_cert, b"-----BEGIN CERTIFICATE-----"):
        raise h.error("client_cert", "is not a certificate in PEM format", host.client_cert)
    if host.client_key and not _file_holds(host.client_key, b"PRIVATE KEY-----"):
        raise h.error("client_key", "is not a private key in PEM format", host.client_key)
    try:
        ctx.load_cert_chain(host.client_cert, host.client_key or None, password=no_password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        if host.client_key:
            raise h.error("client_key", f"does not fit client_cert ({_reason(exc)})",
                          host.client_key) from None
        raise h.error("client_cert", "must hold the private key too when client_key is not "
                      f"given ({_reason(exc)})", host.client_cert) from None


def _file_holds(path: str, marker: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return marker in f.read(MAX_FILE_BYTES)
    except OSError:
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split())[:80] or type(exc).__name__


def _device(source: str, name: str, data: Any) -> DeviceConfig:
    if data is None:
        if name == "gpio":
            return DeviceConfig("none")
        raise ConfigError(f"{source}: [{name}]: missing table (the device's backend and path)")
    t = Table(source, name, data)
    choices = BACKENDS[name]
    backend = t.text("backend", check=lambda v: v in choices,
                     what="must be one of " + ", ".join(sorted(choices)))
    options: dict[str, Any] = {}
    defaults = DEVICE_DEFAULTS.get(name, {})
    # Keys with a default are accepted (and checked) under every backend of the device.
    for key in [*choices[backend], *(k for k in defaults if k not in choices[backend])]:
        value = _option(t, key, defaults.get(key, MISSING))
        if key in choices[backend]:
            options[key] = value
    t.finish()
    return DeviceConfig(backend, options)


def _option(t: Table, key: str, default: Any) -> Any:
    if key == "address":
        return t.integer(key, default, what="must be a 7-bit I2C address from 0x03 to 0x77, "
                         "e.g. 0x27")
    if key in ("port", "bus") and (t.name, key) in LIMITS:
        return t.integer(key, default)
    if key == "baudrate":
        return t.one_of(key, default, BAUDRATES, "must be a standard baud rate")
    if key == "confirm_print":
        return t.boolean(key, default)
    if key in ("status_interval", "retry_max", "job_timeout"):
        return t.number(key, default)
    if key == "host":
        return t.text(key, default, check=hostname, what=HOSTNAME_WHAT)
    # the card reader's port (a device path or a pyserial URL), path, device, socket
    return t.path(key, default, socket=key == "socket")
