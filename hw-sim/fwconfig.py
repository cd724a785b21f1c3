"""The firmware's configuration file (posterm.toml) that points at a running hwsim.

`render_config` builds it from the simulator's info (the content of hwsim.json)
with a tiny TOML writer: strings, integers, floats, booleans, lists of strings
and one level of tables are all the configuration needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

TomlValue = str | int | float | bool | list[str]

# Write a [modem] table pointing at hwsim's modem (the firmware accepts [modem]).
WRITE_MODEM_TABLE = True
# The simulated terminal's supervisor PIN is 1234 (made with `posterm pin-hash`; a real
# terminal's PIN is the merchant's own, and never a published one).
DEMO_PIN = "1234"
DEMO_PIN_HASH = ("scrypt$16384$8$1$5TUAGsn0EyyegWfu8Yv65Q==$"
                 "v8Hh8NRKISDx3uLrXmohuWPH4TCkx/Szz2e/TIkrAd0=")


def base_config(info: Mapping[str, Any], *, state_dir: str) -> dict[str, dict[str, TomlValue]]:
    """The tables and keys of the configuration, before overrides."""
    socket = str(info["control_socket"])
    tables: dict[str, dict[str, TomlValue]] = {
        "terminal": {
            "id": "TERM0001",
            "merchant_id": "MERCHANT0000001",
            "merchant_name": "POSTERM DEMO SHOP",
            "address": ["1 MARKET STREET", "SPRINGFIELD"],
            "currency": "978",
            "currency_code": "EUR",
            "max_amount": 500000,
            "state_dir": state_dir,
        },
        "host": {
            # the primary path goes through hwsim's proxy, which a test can cut
            "host": str(info.get("primary_host", info.get("host", "127.0.0.1"))),
            "port": int(info.get("primary_port", info["host_port"])),
            "tls": bool(info.get("tls", False)),
            "ca_file": str(info.get("ca_file", "")),
            "server_name": str(info.get("server_name", "")),
            "connect_timeout": 5.0,
            "response_timeout": 30.0,
        },
        "card_reader": {
            "backend": "serial",
            "port": str(info["card_reader"]),
            "baudrate": 9600,
        },
        "keypad": {"backend": "hwsim", "socket": socket},
        "printer": {
            "backend": "network",
            "host": str(info.get("printer_host", "127.0.0.1")),
            "port": int(info["printer_port"]),
        },
        "display": {"backend": "hwsim", "socket": socket, "bus": 1, "address": 0x27},
        "gpio": {"backend": "hwsim", "socket": socket},
        "battery": {"backend": "hwsim", "socket": socket, "bus": 1, "address": 0x36},
        # no machine to power off: when the grace on battery is over, posterm only stops
        "power": {"shutdown_command": ""},
        "operator": {"pin_hash": DEMO_PIN_HASH},
    }
    if WRITE_MODEM_TABLE and info.get("modem"):
        tables["modem"] = {"backend": "serial", "port": str(info["modem"]), "apn": "internet"}
    return tables


def render_config(
    info: Mapping[str, Any],
    *,
    state_dir: str,
    overrides: Mapping[str, Mapping[str, TomlValue]] | None = None,
) -> str:
    """TOML text of the firmware configuration; `overrides` replace keys per table."""
    tables = base_config(info, state_dir=state_dir)
    for name, keys in (overrides or {}).items():
        tables.setdefault(name, {}).update(keys)
    return dumps(tables)


def dumps(tables: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """TOML text for a mapping of table name -> keys."""
    parts = []
    for name, keys in tables.items():
        lines = [f"[{_key(name)}]"]
        lines += [f"{_key(k)} = {_value(v)}" for k, v in keys.items()]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _key(name: str) -> str:
    if name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        return name
    return _string(name)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to the configuration")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(_string(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} to the configuration: {value!r}")


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
