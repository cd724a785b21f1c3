"""The configuration file: one TOML file, validated at start.

Every problem is reported as a ConfigError naming the table and key, e.g.
"posterm.toml: [host] port: must be an integer from 1 to 65535, got 'abc'".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware.core.iso import Identity
from firmware.core.link import LinkPolicy
from firmware.core.model import CoreConfig
from firmware.core.risk import OfflineRules
from firmware.errors import ConfigError


@dataclass(frozen=True)
class HostConfig:
    host: str
    port: int
    tls: bool = False
    ca_file: str = ""
    server_name: str = ""
    client_cert: str = ""
    client_key: str = ""
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    repeat_backoff_base: float = 5.0
    repeat_backoff_cap: float = 300.0
    echo_interval: float = 60.0


@dataclass(frozen=True)
class DeviceConfig:
    backend: str
    options: dict[str, Any] = field(default_factory=dict)


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
    log_level: str = "INFO"
    link: LinkPolicy = LinkPolicy()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


BACKENDS: dict[str, dict[str, dict[str, type]]] = {
    "card_reader": {"serial": {"port": str, "baudrate": int}},
    "keypad": {"evdev": {"path": str}, "hwsim": {"socket": str}},
    "printer": {"network": {"host": str, "port": int, "confirm_print": bool},
                "serial": {"device": str, "baudrate": int, "confirm_print": bool}},
    "display": {"smbus2": {"bus": int, "address": int},
                "hwsim": {"socket": str, "bus": int, "address": int}},
    "gpio": {"rpi": {}, "hwsim": {"socket": str}, "none": {}},
}
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "card_reader": {"baudrate": 9600},
    "printer": {"port": 9100, "baudrate": 19200, "confirm_print": True},
    "display": {"bus": 1, "address": 0x27},
}


class _Table:
    """Typed access to one TOML table, naming the key in every error."""

    def __init__(self, source: str, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.source, self.name, self.data = source, name, data
        self.used: set[str] = set()

    def _err(self, key: str, what: str) -> ConfigError:
        got = self.data.get(key, None)
        return ConfigError(f"{self.source}: [{self.name}] {key}: {what}, got {got!r}")

    def get(self, key: str, kind: type, default: Any = ..., *, check: Any = None,
            what: str = "") -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.source}: [{self.name}] {key}: missing (required)")
            return default
        value = self.data[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self._err(key, what or f"must be {_kind_name(kind)}")
        if check is not None and not check(value):
            raise self._err(key, what)
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.source}: [{self.name}] {unknown[0]}: unknown key")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list"}.get(kind, kind.__name__)


def load(path: str | Path) -> Config:
    path = Path(path)
    src = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML: {exc}") from None
    return parse(data, source=src, path=path)


def parse(data: dict[str, Any], *, source: str = "posterm.toml",
          path: Path = Path("posterm.toml")) -> Config:
    known = {"terminal", "timeouts", "host", "log", "offline", *BACKENDS}
    for name in data:
        if name not in known:
            raise ConfigError(f"{source}: [{name}]: unknown table")
    t = _Table(source, "terminal", data.get("terminal", {}))
    tid = t.get("id", str, check=lambda v: 1 <= len(v) <= 8 and v.isprintable(),
                what="must be 1 to 8 printable characters")
    mid = t.get("merchant_id", str, check=lambda v: 1 <= len(v) <= 15 and v.isprintable(),
                what="must be 1 to 15 printable characters")
    name = t.get("merchant_name", str, check=lambda v: 0 < len(v) <= 32,
                 what="must be 1 to 32 characters")
    address = t.get("address", list, [], check=lambda v: all(isinstance(x, str) for x in v),
                    what="must be a list of strings")
    currency = t.get("currency", str, check=lambda v: len(v) == 3 and v.isdigit(),
                     what="must be the 3-digit ISO 4217 numeric code, e.g. \"978\"")
    currency_code = t.get("currency_code", str, "EUR", check=lambda v: len(v) == 3,
                          what="must be a 3-letter code")
    max_amount = t.get("max_amount", int, 500000, check=lambda v: 0 < v < 10**12,
                       what="must be a positive amount in minor units")
    state_dir = t.get("state_dir", str, "/var/lib/posterm")
    t.finish()

    tm = _Table(source, "timeouts", data.get("timeouts", {}))
    pos: dict[str, Any] = {"check": lambda v: v > 0,
                           "what": "must be a positive number of seconds"}
    amount_to = tm.get("amount_entry", float, 60.0, **pos)
    card_to = tm.get("card", float, 30.0, **pos)
    result_to = tm.get("result", float, 4.0, **pos)
    busy_retries = tm.get("busy_retries", int, 2, check=lambda v: 0 <= v <= 10,
                          what="must be from 0 to 10")
    busy_backoff = tm.get("busy_backoff", float, 0.5, **pos)
    sale_budget = tm.get("sale_budget", float, 60.0, **pos)
    tm.finish()

    h = _Table(source, "host", data.get("host", {}))
    host = HostConfig(
        host=h.get("host", str, check=bool, what="must not be empty"),
        port=h.get("port", int, check=lambda v: 1 <= v <= 65535,
                   what="must be an integer from 1 to 65535"),
        tls=h.get("tls", bool, True),
        ca_file=h.get("ca_file", str, ""),
        server_name=h.get("server_name", str, ""),
        client_cert=h.get("client_cert", str, ""),
        client_key=h.get("client_key", str, ""),
        connect_timeout=h.get("connect_timeout", float, 5.0, **pos),
        response_timeout=h.get("response_timeout", float, 30.0, **pos),
        repeat_backoff_base=h.get("repeat_backoff_base", float, 5.0, **pos),
        repeat_backoff_cap=h.get("repeat_backoff_cap", float, 300.0, **pos),
        echo_interval=h.get("echo_interval", float, 60.0, **pos),
    )
    if host.tls and not host.ca_file:
        raise ConfigError(f"{source}: [host] ca_file: required when tls = true "
                          "(the host certificate is verified against it)")
    if host.tls and not Path(host.ca_file).is_file():
        raise ConfigError(f"{source}: [host] ca_file: {host.ca_file} does not exist")
    h.finish()

    lg = _Table(source, "log", data.get("log", {}))
    level = lg.get("level", str, "INFO", check=lambda v: v.upper() in
                   {"DEBUG", "INFO", "WARNING", "ERROR"},
                   what="must be DEBUG, INFO, WARNING or ERROR")
    lg.finish()

    o = _Table(source, "offline", data.get("offline", {}))
    money_ok: dict[str, Any] = {"check": lambda v: v >= 0,
                                "what": "must be an amount in minor units, 0 or more"}
    offline = OfflineRules(
        enabled=o.get("enabled", bool, True),
        floor_limit=o.get("floor_limit", int, 5000, **money_ok),
        total_limit=o.get("total_limit", int, 50000, **money_ok),
        max_count=o.get("max_count", int, 20, check=lambda v: v >= 0,
                        what="must be 0 or more"),
        max_age_hours=o.get("max_age_hours", float, 24.0, **pos),
        blocked_bins=tuple(o.get("blocked_bins", list, [], check=lambda v: all(
            isinstance(b, str) and len(b) == 6 and b.isdigit() for b in v),
            what="must be a list of 6-digit BIN strings")),
    )
    link = LinkPolicy(
        down_after=o.get("down_after", int, 3, check=lambda v: v >= 1, what="must be 1 or more"),
        probe_base=o.get("probe_base", float, 5.0, **pos),
        probe_cap=o.get("probe_cap", float, 120.0, **pos),
    )
    o.finish()

    devices = {dev: _device(source, dev, data.get(dev)) for dev in BACKENDS}
    core = CoreConfig(
        identity=Identity(tid, mid, currency), merchant_name=name, address=tuple(address),
        currency_code=currency_code, max_amount=max_amount, amount_timeout=amount_to,
        card_timeout=card_to, result_timeout=result_to, busy_retries=busy_retries,
        busy_backoff=busy_backoff, sale_budget=sale_budget, offline=offline,
    )
    return Config(path=path, core=core, host=host, state_dir=Path(state_dir),
                  log_level=level.upper(), link=link, raw=data, **devices)


def _device(source: str, name: str, data: Any) -> DeviceConfig:
    if data is None:
        if name == "gpio":
            return DeviceConfig("none")
        raise ConfigError(f"{source}: [{name}]: missing table (the device's backend and path)")
    t = _Table(source, name, data)
    choices: dict[str, dict[str, type]] = BACKENDS[name]
    backend = t.get("backend", str, check=lambda v: v in choices,
                    what="must be one of " + ", ".join(sorted(choices)))
    options: dict[str, Any] = {}
    for key, kind in choices[backend].items():
        default = DEVICE_DEFAULTS.get(name, {}).get(key, ...)
        options[key] = t.get(key, kind, default)
    for key in DEVICE_DEFAULTS.get(name, {}):
        t.used.add(key)
    t.finish()
    return DeviceConfig(backend, options)
