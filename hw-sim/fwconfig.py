"""The firmware's configuration file (posterm.toml) that points at a running hwsim.

`render_config` builds it from the simulator's info (the content of hwsim.json)
with a tiny TOML writer: strings, integers, floats, booleans, lists of strings,
one level of tables and arrays of tables within them ([[chip.aids]]) are all the
configuration needs.

With a chip slot (`chip=True`) it writes [chip]: the virtual reader vpcd offers
("Virtual PCD"), the test scheme's two AIDs with its action codes (hardware.md,
"Test chip cards") and the test certification authority's public keys
(`hwsim.emvca.TEST_CA_KEYS`), which belong in no production configuration.

With `pin=True` it writes [pin] (PIN entry on, AES DUKPT, the key file `pin.key` in the
state directory), and `write_pin_key` writes that key file: the initial key derived from
host-interface 9.2's test BDK for the initial key ID 1234567890123456, as a key
injection facility would (firmware/dukpt.py's text, mode 600). The caller that writes
the configuration writes the key file too; the test BDK stays in hwsim's host.

With `fleet=FleetLink(...)` it writes [fleet] (docs/fleet.md): the terminal's management
channel to the given MQTT brokers over TLS, verified against the given CA, with the
terminal's client certificate (its CN is the terminal id, `TERMINAL_ID`) and, when given,
the fleet's public command key. The certificates are the caller's (a test's or the
demo's, made for that run): nothing here makes or holds one.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware import dukpt, pinkeyfile
from firmware.core.emv.params import CaKey

Scalar = str | int | float | bool | list[str]
TomlValue = Scalar | list[dict[str, Scalar]]  # a list of tables: an array of tables

# The simulated terminal's id (field 41), also the CN of its fleet client certificate.
TERMINAL_ID = "TERM0001"
# Write a [modem] table pointing at hwsim's modem (the firmware accepts [modem]).
WRITE_MODEM_TABLE = True
# The simulated terminal's supervisor PIN is 1234 (made with `posterm pin-hash`; a real
# terminal's PIN is the merchant's own, and never a published one).
DEMO_PIN = "1234"
DEMO_PIN_HASH = ("scrypt$16384$8$1$5TUAGsn0EyyegWfu8Yv65Q==$"
                 "v8Hh8NRKISDx3uLrXmohuWPH4TCkx/Szz2e/TIkrAd0=")

# The test scheme (RID F000000001): its AIDs and the terminal's action codes for it.
TEST_AIDS = (("F0000000011010", "TEST CREDIT"), ("F0000000012010", "TEST DEBIT"))
TEST_TACS = {"tac_denial": "0010000000", "tac_online": "DC4004F800",
             "tac_default": "DC40002800"}
CHIP_FLOOR_LIMIT = 5000
# Random selection off (targets 0, Book 3 10.6.2): a test card's offline approval under the
# floor limit is certain, never a draw; a test of the selection gives its own [[chip.aids]].
RANDOM_SELECTION = {"random_threshold": 0, "random_target": 0, "random_max_target": 0}
EXPONENT_BYTES = {3: b"\x03", 65537: b"\x01\x00\x01"}
# The ANSI test base derivation keys (host-interface 9.2): tests and hwsim only, never
# production; the simulated terminal's initial key ID (AES) and initial KSN (TDES).
TEST_AES_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
TEST_TDES_BDK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PIN_KEY_ID = bytes.fromhex("1234567890123456")
PIN_INITIAL_KSN = bytes.fromhex("FFFF9876543210E00000")
PIN_KEY_NAME = "pin.key"


def emvca_keys() -> tuple[CaKey, ...]:
    """The test CA's public keys, `hwsim.emvca.TEST_CA_KEYS`; () while hwsim has none."""
    try:
        module = importlib.import_module("hwsim.emvca")
    except ModuleNotFoundError as exc:
        if exc.name != "hwsim.emvca":
            raise
        return ()
    return tuple(module.TEST_CA_KEYS)


def ca_key_table(key: CaKey) -> dict[str, Scalar]:
    """One [[chip.ca_keys]] entry, with EMVCo's SHA-1 checksum as a real table gives it."""
    checksum = hashlib.sha1(key.rid + bytes([key.index]) + key.modulus
                            + EXPONENT_BYTES[key.exponent]).hexdigest()
    return {"rid": key.rid.hex().upper(), "index": f"{key.index:02X}",
            "modulus": key.modulus.hex().upper(), "exponent": key.exponent,
            "expiry": key.expiry.isoformat(), "sha1": checksum.upper()}


# 9F33 with a PIN pad (Book 4 Annex A2): manual key entry, stripe, IC with contacts;
# plaintext PIN for ICC verification, enciphered PIN online, signature, enciphered PIN
# offline, no CVM; SDA, DDA, card capture, CDA
PIN_CAPABILITIES = "E0F8E8"


def chip_table() -> dict[str, TomlValue]:
    """[chip] for hwsim's chip slot: vpcd's reader, the test scheme, the test CA's keys."""
    aids: list[dict[str, Scalar]] = [
        {"aid": aid, "label": label, **TEST_TACS, "floor_limit": CHIP_FLOOR_LIMIT,
         **RANDOM_SELECTION, "ddol": "9F3704"}
        for aid, label in TEST_AIDS]
    return {"enabled": True, "reader": "Virtual PCD", "country": "0276", "aids": aids,
            "ca_keys": [ca_key_table(key) for key in emvca_keys()]}


def pin_key_text(method: str = dukpt.AES) -> str:
    """The simulated terminal's DUKPT key file: its initial key from the test BDK."""
    if method == dukpt.AES:
        return pinkeyfile.key_text(method, dukpt.aes_initial_key(TEST_AES_BDK, PIN_KEY_ID),
                              PIN_KEY_ID)
    return pinkeyfile.key_text(method, dukpt.tdes_ipek(TEST_TDES_BDK, PIN_INITIAL_KSN),
                          PIN_INITIAL_KSN)


def write_pin_key(state_dir: str | Path, method: str = dukpt.AES) -> Path:
    """Write the key file [pin] names (`pin.key` in the state directory), mode 600."""
    path = Path(state_dir) / PIN_KEY_NAME
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pin_key_text(method).encode("ascii"))
    finally:
        os.close(fd)
    return path


def pin_table(state_dir: str, method: str = dukpt.AES) -> dict[str, TomlValue]:
    """[pin]: PIN entry on, AES DUKPT, the key file in the state directory (bypass stays
    off, the default: a test of it overrides [pin] bypass)."""
    return {"enabled": True, "method": method, "key_file": f"{state_dir}/{PIN_KEY_NAME}"}


@dataclass(frozen=True)
class FleetLink:
    """Where the terminal's fleet channel goes: brokers ("host:port" or (host, port)),
    the CA their certificates are checked against, the terminal's client certificate
    and key, and the fleet's Ed25519 public key for signed commands ("" for none)."""

    brokers: Sequence[str | tuple[str, int]]
    ca_file: str
    client_cert: str
    client_key: str
    command_key: str = ""

    def table(self) -> dict[str, TomlValue]:
        """The [fleet] table (other keys keep the firmware's defaults)."""
        brokers = [b if isinstance(b, str) else f"{b[0]}:{b[1]}" for b in self.brokers]
        table: dict[str, TomlValue] = {
            "brokers": brokers, "tls": True, "ca_file": str(self.ca_file),
            "client_cert": str(self.client_cert), "client_key": str(self.client_key)}
        if self.command_key:
            table["command_key"] = str(self.command_key)
        return table


def base_config(info: Mapping[str, Any], *, state_dir: str, chip: bool = False,
                pin: bool = False, fleet: FleetLink | None = None
                ) -> dict[str, dict[str, TomlValue]]:
    """The tables and keys of the configuration, before overrides; [chip] when hwsim
    simulates a chip slot; [pin] when the terminal takes PINs (`write_pin_key` too);
    [fleet] when `fleet` says where the fleet's brokers are."""
    socket = str(info["control_socket"])
    tables: dict[str, dict[str, TomlValue]] = {
        "terminal": {
            "id": TERMINAL_ID,
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
    if chip:
        tables["chip"] = chip_table()
    if pin:
        tables["pin"] = pin_table(state_dir)
        if chip:  # the PIN methods in 9F33: offline plaintext and enciphered, online
            tables["chip"]["capabilities"] = PIN_CAPABILITIES
    if fleet is not None:
        tables["fleet"] = fleet.table()
    return tables


def render_config(
    info: Mapping[str, Any],
    *,
    state_dir: str,
    overrides: Mapping[str, Mapping[str, TomlValue]] | None = None,
    chip: bool = False,
    pin: bool = False,
    fleet: FleetLink | None = None,
) -> str:
    """TOML text of the firmware configuration; `overrides` replace keys per table (an
    array of tables, such as [chip] "aids", whole); `chip`: hwsim has a chip slot; `pin`:
    [pin] on, its key file to be written with `write_pin_key(state_dir)`; `fleet`: [fleet]
    pointing at those brokers with those certificates."""
    tables = base_config(info, state_dir=state_dir, chip=chip, pin=pin, fleet=fleet)
    for name, keys in (overrides or {}).items():
        tables.setdefault(name, {}).update(keys)
    return dumps(tables)


def dumps(tables: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """TOML text for a mapping of table name -> keys; a key whose value is a non-empty
    list of tables is written after the others as an array of tables, [[name.key]]."""
    parts = []
    for name, keys in tables.items():
        arrays = {k: v for k, v in keys.items() if _is_tables(v)}
        lines = [f"[{_key(name)}]"]
        lines += [f"{_key(k)} = {_value(v)}" for k, v in keys.items() if k not in arrays]
        parts.append("\n".join(lines) + "\n")
        for key, entries in arrays.items():
            for entry in entries:
                lines = [f"[[{_key(name)}.{_key(key)}]]"]
                lines += [f"{_key(k)} = {_value(v)}" for k, v in entry.items()]
                parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _is_tables(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


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
