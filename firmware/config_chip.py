"""The [chip] table: the chip reader and the terminal's EMV parameters (EMV 4.4).

[chip] names the PC/SC reader (hardware.md, "Chip card reader") and the terminal's own
data objects (9F1A, 9F35, 9F33, 9F40, 9F1E); [[chip.aids]] the applications it accepts,
with their action codes and risk parameters (Book 3 10.6, 10.7); [[chip.ca_keys]] the
certification authorities' public keys (Book 2 5.1, 6.1); [[chip.revoked]] the revoked
issuer certificates (Book 2 5.3 step 10). Each key is declared once
(firmware.config_schema), each entry of an array read by the same loader and named by its
path in errors ("chip.ca_keys[1].exponent: 5 is not 3 or 65537", entries counted from 0).

Values are checked as EMV defines them, so the kernel never meets a bad one: hex of the
right length, a DOL that parses, a CA key whose modulus is an RSA modulus of 64 to 248
bytes with exponent 3 or 65537 and, when EMVCo's SHA-1 checksum is given, the checksum of
that key. `terminal` builds the core's `Terminal` from the table as read, or None when
[chip] is absent or not enabled. The transaction currency (5F2A) is [terminal] currency.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

from firmware.config_schema import REQUIRED, boolean, custom, entries, integer, text
from firmware.config_values import Table
from firmware.core.emv.params import AidParams, CaKey, Terminal
from firmware.core.emv.tlv import TlvError, parse_dol

FLOOR_MAX = 0xFFFFFFFF  # 9F1B is 4 bytes binary (Book 3 Annex A)
MODULUS_BYTES = (64, 248)  # N_CA: at most 248 bytes (Book 2 5.1); 64: the least taken here
EXPONENTS = {3: b"\x03", 65537: b"\x01\x00\x01"}  # as EMVCo's tables write them
# Book 4 Annex A1: attended 1x, unattended 2x (financial institution, merchant: x1-x3
# attended, x4-x6 unattended), 3x cardholder-operated.
TERMINAL_TYPES = frozenset({"11", "12", "13", "14", "15", "16",
                            "21", "22", "23", "24", "25", "26", "34", "35", "36"})
UNPREDICTABLE_NUMBER = 0x9F37


def _hex(lo: int, hi: int | None = None) -> Any:
    """A check: hex digits for `lo` to `hi` bytes (exactly `lo` when `hi` is None)."""
    pattern = re.compile(f"(?:[0-9A-Fa-f]{{2}}){{{lo},{lo if hi is None else hi}}}")
    return lambda v: pattern.fullmatch(v) is not None


def _dol(v: str) -> bool:
    if not _hex(0, 252)(v):
        return False
    try:
        parse_dol(bytes.fromhex(v))
    except TlvError:
        return False
    return True


def _ddol(v: str) -> bool:
    """A default DDOL asks for the unpredictable number (Book 2 6.5.1: without it the
    dynamic signature proves nothing, and DDA fails); "" is no default DDOL."""
    return v == "" or (_dol(v) and any(tag == UNPREDICTABLE_NUMBER
                                       for tag, _ in parse_dol(bytes.fromhex(v))))


def _printable(hi: int) -> Any:
    return lambda v: len(v) <= hi and all(" " <= c <= "~" for c in v)


def _byte(v: str) -> int:
    return int(v, 16)


# -- readers of keys with a check of their own -------------------------------------------
MODULUS_WHAT = (f"must be the RSA modulus in hex, {MODULUS_BYTES[0]} to {MODULUS_BYTES[1]} "
                "bytes, as EMVCo publishes it")


def _modulus(t: Table, key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise t.error(key, MODULUS_WHAT, value)
    digits = "".join(value.split())  # a modulus copied over several lines
    if "-----BEGIN" in value:
        raise t.fail(key, f"not hex: {_pem_kind(value)}; an EMV CA key is RSA: give its "
                     "modulus in hex, as EMVCo publishes it")
    bad = next((i for i, c in enumerate(digits) if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None or not digits:
        where = f" ({digits[bad]!r} at digit {bad + 1})" if bad is not None else " (empty)"
        raise t.fail(key, "not hex" + where + "; " + MODULUS_WHAT.removeprefix("must be "))
    if len(digits) % 2:
        raise t.fail(key, f"an odd number of hex digits ({len(digits)}): a digit is missing")
    modulus = bytes.fromhex(digits)
    lo, hi = MODULUS_BYTES
    if not lo <= len(modulus) <= hi:
        raise t.fail(key, f"{len(modulus)} bytes, not {lo} to {hi}")
    if modulus[0] == 0 or not modulus[-1] & 1:
        raise t.fail(key, "not an RSA modulus (its first byte is 00, or it is even): "
                     "a digit mistyped?")
    return modulus


def _pem_kind(value: str) -> str:
    """What a PEM block holds, in words, for the error."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(value.strip().encode())
    except (ValueError, TypeError):
        return "a PEM block, not a public key"
    if isinstance(key, rsa.RSAPublicKey):
        return "a PEM RSA public key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "a PEM elliptic-curve key, not RSA"
    return "a PEM public key that is not RSA"


def _exponent(t: Table, key: str, value: Any) -> int:
    if isinstance(value, bool) or value not in EXPONENTS:
        raise t.error(key, "must be 3 or 65537", value)
    return int(value)


EXPIRY_WHAT = 'must be a date, 2030-12-31 or "2030-12-31" (the last day the key is valid)'


def _expiry(t: Table, key: str, value: Any) -> date:
    if type(value) is date:  # a TOML date (not a date-time, a subclass)
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise t.error(key, EXPIRY_WHAT, value)


def ca_key_checksum(rid: bytes, index: int, modulus: bytes, exponent: int) -> bytes:
    """EMVCo's checksum of a CA public key: SHA-1 of RID, index, modulus and exponent
    (`03` or `010001`), as its tables publish it (Book 2 Part IV, CA public key management)."""
    return hashlib.sha1(rid + bytes([index]) + modulus + EXPONENTS[exponent]).digest()


# -- the entries ---------------------------------------------------------------------------
TAC_WHAT = "must be 10 hex digits (5 bytes, as the TVR)"
AMOUNT_WHAT = f"must be an amount in minor units from 0 to {FLOOR_MAX}"


@dataclass(frozen=True, kw_only=True)
class AidEntry:
    """[[chip.aids]]: one application the terminal accepts (fields as AidParams names them)."""

    aid: bytes = text(REQUIRED, check=_hex(5, 16), convert=bytes.fromhex,
                      what="must be hex of 5 to 16 bytes",
                      help="application identifier (9F06): RID and PIX")
    partial: bool = boolean(True, help="a card's AID that begins with this one matches "
                            "(Book 1 12.3.1)")
    label: str = text("", check=_printable(16), what="must be at most 16 printable ASCII "
                      "characters", help="the application's name when the card gives none")
    version: bytes = text("0002", check=_hex(2), convert=bytes.fromhex,
                          what='must be 4 hex digits (2 bytes), e.g. "0002"',
                          help="application version number, terminal (9F09)")
    tac_denial: bytes = text("0000000000", check=_hex(5), convert=bytes.fromhex,
                             what=TAC_WHAT, help="terminal action code, denial (Book 3 10.7)")
    tac_online: bytes = text("0000000000", check=_hex(5), convert=bytes.fromhex,
                             what=TAC_WHAT, help="terminal action code, online")
    tac_default: bytes = text("0000000000", check=_hex(5), convert=bytes.fromhex,
                              what=TAC_WHAT, help="terminal action code, default")
    floor_limit: int = integer(0, lo=0, hi=FLOOR_MAX, what=AMOUNT_WHAT,
                               help="terminal floor limit (9F1B), minor units; at most "
                                    "[terminal] max_amount")
    random_threshold: int = integer(0, lo=0, hi=FLOOR_MAX, what=AMOUNT_WHAT,
                                    help="threshold for biased random selection (Book 3 "
                                         "10.6.2): below floor_limit, or 0")
    random_target: int = integer(0, lo=0, hi=99, help="target percentage for random "
                                 "selection")
    random_max_target: int = integer(0, lo=0, hi=99, help="maximum target percentage for "
                                     "biased random selection, at least random_target")
    ddol: bytes = text("9F3704", check=_ddol, convert=bytes.fromhex,
                       what='must be a data object list in hex (tags and lengths) that asks '
                            'for 9F37, e.g. "9F3704", or ""',
                       help="default DDOL, for a card without one (Book 2 6.5.1)")
    tdol: bytes = text("", check=_dol, convert=bytes.fromhex,
                       what='must be a data object list in hex (tags and lengths), or ""',
                       help="default TDOL, for a card without one (Book 3 5.4)")
    velocity: bool = boolean(True, help="read the card's offline counters with GET DATA for "
                             "velocity checking (Book 3 10.6.3)")


@dataclass(frozen=True, kw_only=True)
class CaKeyEntry:
    """[[chip.ca_keys]]: a certification authority public key."""

    rid: bytes = text(REQUIRED, check=_hex(5), convert=bytes.fromhex,
                      what="must be hex of 5 bytes (the RID)",
                      help="registered application provider identifier")
    index: int = text(REQUIRED, check=_hex(1), convert=_byte,
                      what='must be one byte in hex, e.g. "92"',
                      help="the key's index, as the card names it (8F)")
    modulus: bytes = custom(REQUIRED, read=_modulus, what=MODULUS_WHAT,
                            help="the key's modulus (an RSA key)")
    exponent: int = custom(REQUIRED, read=_exponent, what="must be 3 or 65537",
                           help="the key's public exponent")
    expiry: date = custom(REQUIRED, read=_expiry, what=EXPIRY_WHAT,
                          help="the last day the key may be used (Book 2 5.3)")
    sha1: bytes = text("", check=lambda v: v == "" or _hex(20)(v), convert=bytes.fromhex,
                       what='must be 40 hex digits (20 bytes), or ""',
                       help="EMVCo's checksum, SHA-1 of rid, index, modulus and exponent: "
                            "a key that does not match it is refused")


@dataclass(frozen=True, kw_only=True)
class RevokedEntry:
    """[[chip.revoked]]: an issuer public key certificate the CA revoked."""

    rid: bytes = text(REQUIRED, check=_hex(5), convert=bytes.fromhex,
                      what="must be hex of 5 bytes (the RID)", help="the CA's RID")
    index: int = text(REQUIRED, check=_hex(1), convert=_byte,
                      what='must be one byte in hex, e.g. "92"', help="the CA key's index")
    serial: bytes = text(REQUIRED, check=_hex(3), convert=bytes.fromhex,
                         what="must be hex of 3 bytes",
                         help="the certificate's serial number")


def _check_aid(e: Table, aid: AidEntry) -> None:
    if aid.random_threshold and aid.random_threshold >= aid.floor_limit:
        raise e.error("random_threshold", f"must be less than floor_limit ({aid.floor_limit}), "
                      "or 0", aid.random_threshold)
    if aid.random_target > aid.random_max_target:
        raise e.error("random_target", f"must be at most random_max_target "
                      f"({aid.random_max_target})", aid.random_target)


def _check_ca_key(e: Table, key: CaKeyEntry) -> None:
    if key.sha1 and key.sha1 != ca_key_checksum(key.rid, key.index, key.modulus,
                                                 key.exponent):
        raise e.fail("sha1", "does not match the key (the SHA-1 of rid, index, modulus and "
                     "exponent differs): a digit mistyped, or the checksum of another key?")


# -- the table -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ChipTable:
    """[chip]: the chip card reader (PC/SC) and the terminal's EMV parameters."""

    enabled: bool = boolean(True, help="read chip cards (EMV contact); false, or no [chip] "
                            "table: no chip reader")
    reader: str = text("", check=lambda v: v == "" or (_printable(128)(v) and v.strip() != ""),
                       what="must be at most 128 printable ASCII characters",
                       help="the PC/SC reader's name or a prefix of it (`pcsc_scan` lists "
                            "them); required when enabled")
    country: str = text("0276", check=lambda v: re.fullmatch(r"\d{4}", v) is not None
                        and v != "0000",
                        what='must be the ISO 3166 numeric country code as 4 digits, e.g. '
                             '"0276"', help="terminal country code (9F1A)")
    terminal_type: int = text("22", check=lambda v: v in TERMINAL_TYPES, convert=_byte,
                              what='must be a terminal type of Book 4 Annex A1 in a string: '
                                   '"11" to "16", "21" to "26", "34" to "36"',
                              help="terminal type (9F35)")
    capabilities: bytes = text("E028C8", check=_hex(3), convert=bytes.fromhex,
                               what='must be 6 hex digits (3 bytes), e.g. "E028C8"',
                               help="terminal capabilities (9F33, Book 4 Annex A2); a PIN "
                                    "method in byte 2 says a PIN can be entered")
    additional_capabilities: bytes = text(
        "6000F0A001", check=_hex(5), convert=bytes.fromhex,
        what='must be 10 hex digits (5 bytes), e.g. "6000F0A001"',
        help="additional terminal capabilities (9F40, Book 4 Annex A3)")
    ifd_serial: str = text("", check=lambda v: re.fullmatch(r"[A-Za-z0-9]{8}|", v) is not None,
                           what='must be 8 letters or digits, or "" for the terminal id',
                           help='interface device serial number (9F1E); "": the terminal '
                                "id's letters and digits, 0 before them to 8")
    fallback: bool = boolean(True, help="take the magnetic stripe (80x) after the chip failed "
                             "before an application was selected")
    forced_online: bool = boolean(False, help="every chip sale goes online (merchant forced "
                                  "online, TVR byte 4)")
    aids: tuple[AidEntry, ...] = entries(
        AidEntry, least={"aid": "A0000000031010"}, check=_check_aid,
        what="must be an array of tables [[chip.aids]] (keys: chip.aids below)",
        help="the applications the terminal accepts, at least one when enabled")
    ca_keys: tuple[CaKeyEntry, ...] = entries(
        CaKeyEntry, check=_check_ca_key,
        least={"rid": "A000000003", "index": "92", "exponent": 3, "expiry": "2030-12-31",
               "modulus": "C1" * 64},
        what="must be an array of tables [[chip.ca_keys]] (keys: chip.ca_keys below)",
        help="the certification authorities' public keys, several per RID")
    revoked: tuple[RevokedEntry, ...] = entries(
        RevokedEntry, least={"rid": "A000000003", "index": "92", "serial": "000001"},
        what="must be an array of tables [[chip.revoked]] (keys: chip.revoked below)",
        help="revoked issuer public key certificates")


CAPABILITY_IC = 0x20  # 9F33 byte 1: IC with contacts (Book 4 Annex A2)
CAPABILITY_PIN = 0x80 | 0x40 | 0x10  # 9F33 byte 2: plaintext offline, online, enciphered


def check_chip(t: Table, chip: ChipTable, tables: dict[str, Any]) -> None:
    """The checks across the keys and entries of [chip] (the [terminal] table read first)."""
    if not chip.enabled:
        return
    if not chip.reader:
        raise t.fail("reader", "required when enabled: the PC/SC reader's name or a prefix "
                     'of it (`pcsc_scan` lists them), e.g. "Virtual PCD"')
    if not chip.capabilities[0] & CAPABILITY_IC:
        raise t.error("capabilities", "must say IC with contacts (byte 1 bit 6: 20) when "
                      "enabled")
    if not chip.aids:
        raise t.fail("aids", "needs at least one [[chip.aids]] when enabled (the "
                     "applications the terminal accepts)")
    max_amount = tables["terminal"].max_amount
    for i, aid in enumerate(chip.aids):
        for key in ("floor_limit", "random_threshold"):
            if getattr(aid, key) > max_amount:
                raise t.entry("aids", i, {}).error(
                    key, f"must be at most [terminal] max_amount ({max_amount})",
                    getattr(aid, key))
    _once(t, "aids", "aid", [aid.aid.hex().upper() for aid in chip.aids])
    _once(t, "ca_keys", "index", [f"rid {k.rid.hex().upper()} index {k.index:02X}"
                                  for k in chip.ca_keys])
    _once(t, "revoked", "serial", [f"rid {r.rid.hex().upper()} index {r.index:02X} serial "
                                   f"{r.serial.hex().upper()}" for r in chip.revoked])


def _once(t: Table, key: str, name: str, ids: list[str]) -> None:
    """Refuse an entry given twice: the second names the first."""
    seen: dict[str, int] = {}
    for i, ident in enumerate(ids):
        if ident in seen:
            raise t.entry(key, i, {}).fail(
                name, f"{ident} is given twice (also {t.name}.{key}[{seen[ident]}])")
        seen[ident] = i


def ifd_serial_of(terminal_id: str) -> str:
    """9F1E from the terminal id: its letters and digits, 0 before them to 8 (an 8)."""
    kept = "".join(c for c in terminal_id if c.isascii() and c.isalnum())[-8:]
    return kept.rjust(8, "0")


def terminal(chip: ChipTable, terminal_id: str, currency: str) -> Terminal | None:
    """The core's EMV parameters from [chip], or None when there is no chip reader."""
    if not chip.enabled:
        return None
    return Terminal(
        country=chip.country, currency=currency.zfill(4), type=chip.terminal_type,
        capabilities=chip.capabilities, additional=chip.additional_capabilities,
        ifd_serial=chip.ifd_serial or ifd_serial_of(terminal_id),
        aids=tuple(AidParams(**{f.name: getattr(a, f.name) for f in fields(a)})
                   for a in chip.aids),
        ca_keys=tuple(CaKey(k.rid, k.index, k.modulus, k.exponent, k.expiry)
                      for k in chip.ca_keys),
        revoked=frozenset((r.rid, r.index, r.serial) for r in chip.revoked),
        fallback=chip.fallback, forced_online=chip.forced_online,
        pin_pad=bool(chip.capabilities[1] & CAPABILITY_PIN))


__all__ = ["AidEntry", "CaKeyEntry", "ChipTable", "RevokedEntry",
           "ca_key_checksum", "check_chip", "ifd_serial_of", "terminal"]
