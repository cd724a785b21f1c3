"""The configuration file: one TOML file, validated at start.

Every problem is reported as a ConfigError of one line naming the table and key, e.g.
"posterm.toml: [host] port: must be an integer from 1 to 65535, got 'abc'";
problems of the whole file (unreadable, not UTF-8, not TOML, empty) name the file.

Everything the host messages, the display and the receipt carry is checked here,
and every number has bounds that make sense for a payment terminal, so a
configuration that passes `check-config` cannot fail later because of a value.
Each key is declared once, with its default, bounds and help, on its table's
dataclass (`firmware.config_tables`, `firmware.config_devices`); `TABLES` lists the
tables, and `parse` reads each one with the generic loader (`firmware.config_schema`),
then runs its checks across keys (`TableDecl.check`) and assembles `Config`. An array
of tables ([[chip.aids]]) is a key of its table (`firmware.config_schema.entries`); it is
listed in `TABLES` too, as "chip.aids" read within [chip], for its documentation and tests.
"""

from __future__ import annotations

import os
import stat
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from firmware.config_chip import ChipTable, check_chip, terminal as chip_terminal
from firmware.config_fleet import FleetTable, check_fleet
from firmware.config_devices import (
    CardReaderOptions, DeviceConfig, DisplayOptions, GpioOptions, KeypadOptions, PrinterOptions,
)
from firmware.config_schema import backends, keys, limits, read_table
from firmware.config_tables import (
    BatteryConfig, HostConfig, LogTable, Maintenance, ModemConfig, OfflineTable, OperatorConfig,
    PinTable, PowerConfig, TerminalTable, TimeoutsTable, UpdatePolicy, parse_window,
)
from firmware.config_values import (
    ADDRESS_LINES, AMOUNT_MAX, BAUDRATES, BLOCKED_BINS_MAX, HOSTNAME_WHAT, MAX_FILE_BYTES,
    NAME_MAX_BYTES, PATH_MAX_BYTES, RECEIPT_WIDTH, SOCKET_MAX_BYTES, Table, key_name, short,
    why_no_directory, why_unreadable,
)
from firmware.core.iso import Identity
from firmware.core.link import LinkPolicy
from firmware.core.emv.params import Terminal
from firmware.core.model import CoreConfig
from firmware.core.risk import OfflineRules
from firmware.errors import ConfigError

__all__ = ["ADDRESS_LINES", "AMOUNT_MAX", "BAUDRATES", "BLOCKED_BINS_MAX", "DEVICE_TABLES",
           "HOSTNAME_WHAT", "LIMITS", "MAX_FILE_BYTES", "NAME_MAX_BYTES", "PATH_MAX_BYTES",
           "RECEIPT_WIDTH", "REQUIRED_TABLES", "SOCKET_MAX_BYTES", "TABLES", "BatteryConfig",
           "ChipTable", "Config", "DeviceConfig", "FleetTable", "HostConfig", "Maintenance",
           "ModemConfig", "OperatorConfig", "PinTable", "PowerConfig", "UpdatePolicy", "load",
           "parse", "parse_window"]


@dataclass(frozen=True, kw_only=True)
class Config:
    path: Path
    core: CoreConfig
    host: HostConfig
    state_dir: Path
    runtime_dir: Path  # the status socket (systemd RuntimeDirectory)
    card_reader: DeviceConfig
    keypad: DeviceConfig
    printer: DeviceConfig
    display: DeviceConfig
    gpio: DeviceConfig
    maintenance: Maintenance
    update: UpdatePolicy
    battery: BatteryConfig
    power: PowerConfig
    log_level: str
    link: LinkPolicy
    modem: ModemConfig
    operator: OperatorConfig
    chip: ChipTable  # the reader's name; the EMV parameters are core.chip (None: no chip)
    pin: PinTable  # the cardholder's PIN and the DUKPT key file
    fleet: FleetTable  # the fleet channel (docs/fleet.md); no brokers: none
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# -- the tables --------------------------------------------------------------------------
Check = Callable[[Table, Any, dict[str, Any]], None]


@dataclass(frozen=True)
class TableDecl:
    """One table of the file: its dataclass, whether the file must have it, and the checks
    across its keys (and the tables read before it)."""

    name: str
    schema: type
    missing: str | None = None  # the error's words when the table is absent; None: optional
    absent: dict[str, Any] = field(default_factory=dict)  # read in place of an absent table
    device: bool = False  # read as a DeviceConfig (backend, options, settings)
    check: Check | None = None
    within: str = ""  # an array of tables: the table whose key holds it ("chip")


def _with_entries(decls: tuple[TableDecl, ...]) -> tuple[TableDecl, ...]:
    """Each table followed by its arrays of tables, as "table.key", read within it (their
    `absent`: the least valid entry, what a test reads of the entry alone)."""
    out: list[TableDecl] = []
    for decl in decls:
        out.append(decl)
        out += [TableDecl(f"{decl.name}.{key}", spec.entry, absent=dict(spec.least),
                          within=decl.name)
                for _, key, spec in keys(decl.schema) if spec.entry is not None]
    return tuple(out)


def _check_terminal(t: Table, terminal: TerminalTable, _: dict[str, Any]) -> None:
    why = why_no_directory(Path(terminal.state_dir))
    if why:
        raise t.error("state_dir", why, terminal.state_dir)


def _check_host(h: Table, host: HostConfig, _: dict[str, Any]) -> None:
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


def _check_offline(o: Table, offline: OfflineTable, tables: dict[str, Any]) -> None:
    if offline.floor_limit > offline.total_limit:
        raise o.error("floor_limit", f"must not exceed total_limit ({offline.total_limit})")
    max_amount = tables["terminal"].max_amount
    if offline.floor_limit > max_amount:
        raise o.error("floor_limit", f"must not exceed [terminal] max_amount ({max_amount})")
    if offline.probe_cap < offline.probe_base:
        raise o.error("probe_cap", f"must be at least probe_base ({offline.probe_base:g})")


def _check_modem(m: Table, modem: ModemConfig, _: dict[str, Any]) -> None:
    if len({modem.pwrkey_pin, modem.status_pin, modem.reset_pin}) != 3:
        raise m.error("reset_pin", "pwrkey_pin, status_pin and reset_pin must be three "
                                   "different pins")


def _check_power(t: Table, power: PowerConfig, _: dict[str, Any]) -> None:
    if power.fail_pin in (23, 24):
        raise t.error("fail_pin", "must not be the buzzer (23) or the online LED (24) pin",
                      power.fail_pin)


def _check_pin(t: Table, pin: PinTable, _: dict[str, Any]) -> None:
    if pin.max_length < pin.min_length:
        raise t.error("max_length", f"must be at least min_length ({pin.min_length})")


_DEVICE = "missing table (the device's backend and path)"
TABLES: tuple[TableDecl, ...] = _with_entries((  # in the order they are read
    TableDecl("terminal", TerminalTable, "missing table", check=_check_terminal),
    TableDecl("timeouts", TimeoutsTable),
    TableDecl("host", HostConfig, "missing table", check=_check_host),
    TableDecl("maintenance", Maintenance),
    TableDecl("update", UpdatePolicy),
    TableDecl("log", LogTable),
    TableDecl("offline", OfflineTable, check=_check_offline),
    TableDecl("card_reader", CardReaderOptions, _DEVICE, device=True),
    TableDecl("keypad", KeypadOptions, _DEVICE, device=True),
    TableDecl("printer", PrinterOptions, _DEVICE, device=True),
    TableDecl("display", DisplayOptions, _DEVICE, device=True),
    TableDecl("gpio", GpioOptions, absent={"backend": "none"}, device=True),
    TableDecl("modem", ModemConfig, check=_check_modem),
    TableDecl("operator", OperatorConfig),
    TableDecl("battery", BatteryConfig),
    TableDecl("power", PowerConfig, check=_check_power),
    TableDecl("chip", ChipTable, absent={"enabled": False}, check=check_chip),
    TableDecl("pin", PinTable, check=_check_pin),
    TableDecl("fleet", FleetTable, check=check_fleet),
))
SCHEMAS = {decl.name: decl.schema for decl in TABLES if not decl.within}
REQUIRED_TABLES = tuple(decl.name for decl in TABLES if decl.missing)
# The tables with a backend, each backend a factory the runtime registers.
DEVICE_TABLES: dict[str, tuple[str, ...]] = {
    decl.name: backends(decl.schema) for decl in TABLES if backends(decl.schema)}
# (table, key) -> (lowest, highest), both included, of every bounded number.
LIMITS: dict[tuple[str, str], tuple[float, float]] = {
    (decl.name, key): bounds for decl in TABLES if not decl.within
    for key, bounds in limits(decl.schema).items()}


def parse(data: dict[str, Any], *, source: str = "posterm.toml",
          path: Path = Path("posterm.toml")) -> Config:
    known = tuple(SCHEMAS)
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
    tables: dict[str, Any] = {}
    for decl in TABLES:
        if not decl.within:  # an array of tables is read as a key of its table
            tables[decl.name] = _read_table(source, decl, data, tables)
    return _assemble(tables, path=path, raw=data)


def _read_table(source: str, decl: TableDecl, data: dict[str, Any],
                tables: dict[str, Any]) -> Any:
    """One table read from its declarations, then checked across its keys."""
    if decl.name not in data and decl.missing:
        raise ConfigError(f"{source}: [{decl.name}]: {decl.missing}")
    t = Table(source, decl.name, data.get(decl.name, decl.absent))
    values: Any
    values, options = read_table(t, decl.schema)
    if decl.check:
        decl.check(t, values, tables)
    return DeviceConfig(values.backend, options, values) if decl.device else values


def _with_pin(chip: Terminal | None, pin: PinTable) -> Terminal | None:
    """The chip's PIN pad is [pin]'s: no PIN method without it; bypass as it says."""
    if chip is None:
        return None
    return replace(chip, pin_pad=chip.pin_pad and pin.enabled, pin_bypass=pin.bypass)


def _assemble(tables: dict[str, Any], *, path: Path, raw: dict[str, Any]) -> Config:
    terminal: TerminalTable = tables["terminal"]
    timeouts: TimeoutsTable = tables["timeouts"]
    o: OfflineTable = tables["offline"]
    operator: OperatorConfig = tables["operator"]
    offline = OfflineRules(enabled=o.enabled, floor_limit=o.floor_limit,
                           total_limit=o.total_limit, max_count=o.max_count,
                           max_age_hours=o.max_age_hours, blocked_bins=o.blocked_bins)
    core = CoreConfig(
        identity=Identity(terminal.id, terminal.merchant_id, terminal.currency),
        merchant_name=terminal.merchant_name, address=terminal.address,
        currency_code=terminal.currency_code, max_amount=terminal.max_amount,
        amount_timeout=timeouts.amount_entry, card_timeout=timeouts.card,
        result_timeout=timeouts.result, busy_retries=timeouts.busy_retries,
        busy_backoff=timeouts.busy_backoff, sale_budget=timeouts.sale_budget, offline=offline,
        protect=operator.protect, pin_set=bool(operator.pin_hash),
        duplicate_minutes=operator.duplicate_minutes,
        chip=_with_pin(chip_terminal(tables["chip"], terminal.id, terminal.currency),
                       tables["pin"]),
        pin_entry=tables["pin"].enabled)
    return Config(
        path=path, core=core, host=tables["host"], state_dir=Path(terminal.state_dir),
        runtime_dir=Path(terminal.runtime_dir), card_reader=tables["card_reader"],
        keypad=tables["keypad"], printer=tables["printer"], display=tables["display"],
        gpio=tables["gpio"], maintenance=tables["maintenance"], update=tables["update"],
        battery=tables["battery"], power=tables["power"], log_level=tables["log"].level,
        link=LinkPolicy(down_after=o.down_after, probe_base=o.probe_base,
                        probe_cap=o.probe_cap),
        modem=tables["modem"], operator=operator, chip=tables["chip"], pin=tables["pin"],
        fleet=tables["fleet"], raw=raw)


# -- the file -----------------------------------------------------------------------------
def load(path: str | Path, *, overlay: bool = True) -> Config:
    """The file, and over it the fleet's parameters from its state_dir unless `overlay` is
    False: root's `posterm update --fleet-request` reads the file alone, never a file the
    service user can write (docs/fleet.md)."""
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
    # the file first, checked on its own: its state_dir (where the fleet's parameters
    # lie) is then a valid path, and any error is the file's
    cfg = parse(data, source=src, path=path)
    over = _overlay(cfg.state_dir / OVERLAY) if overlay else None
    if over is not None:  # the fleet's parameters, on top of the file
        return parse(merge(data, over[1]), source=f"{src} + {over[0]}", path=path)
    return cfg


# -- the fleet's parameters: `state_dir/fleet-params.toml` ------------------------------------
OVERLAY = "fleet-params.toml"  # written by firmware/runtime/fleet_params.py, docs/fleet.md


def overlay_path(data: dict[str, Any]) -> Path:
    """Where the fleet's parameters lie: in the state_dir the file names (or its default)."""
    terminal = data.get("terminal")
    state_dir = terminal.get("state_dir") if isinstance(terminal, dict) else None
    if not isinstance(state_dir, str) or not state_dir:
        state_dir = next(str(spec.default) for name, _, spec in keys(TerminalTable)
                         if name == "state_dir")
    return Path(state_dir) / OVERLAY


def merge(data: dict[str, Any], tables: dict[str, Any]) -> dict[str, Any]:
    """The file's data with each table's keys of `tables` put over its own."""
    out = dict(data)
    for name, values in tables.items():
        base = out.get(name)
        out[name] = {**(base if isinstance(base, dict) else {}), **values}
    return out


def _overlay(path: Path) -> tuple[str, dict[str, Any]] | None:
    """The fleet's parameters if the state directory holds them: (its name, its tables)."""
    try:
        text = path.read_bytes().decode("utf-8")
        over = tomllib.loads(text)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: the fleet's parameters cannot be read "
                          f"({' '.join(str(exc).split())[:80]}); delete the file to start "
                          "with the configuration file alone") from None
    if not all(isinstance(v, dict) for v in over.values()):
        raise ConfigError(f"{path}: the fleet's parameters must be tables only; delete the "
                          "file to start with the configuration file alone")
    return OVERLAY, over


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
