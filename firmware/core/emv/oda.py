"""Offline data authentication, the terminal's side (EMV 4.4 Book 2 sections 5 and 6).

Theory of operation. Every signed object of Book 2 is an RSA signature with message
recovery (Annex A2.1): the terminal raises it to the public exponent modulo the
signer's modulus, and the recovered block must read `6A` ... hash ... `BC`. The hash
is SHA-1 (hash algorithm indicator `01`, Annex B3) over the recovered fields that
precede it and the data sent beside the signature (a key's remainder and exponent,
the static data to be authenticated, the DDOL data, the unpredictable number).

The chain: the certification authority's key (chosen by RID and tag 8F) recovers the
issuer public key from tag 90 (`issuer_key`); the issuer key recovers either the
signed static application data, tag 93 (SDA, `verify_sda`), or the ICC public key
from tag 9F46 (`icc_key`); the ICC key recovers the signed dynamic application data
9F4B of INTERNAL AUTHENTICATE (DDA, `verify_dda`) or of GENERATE AC (CDA,
`verify_cda`). For offline enciphered PIN (Book 2 7.1) the issuer key also recovers the
ICC PIN encipherment public key from 9F2D (`icc_pin_key`). Every check names its
Book 2 step; a failed one raises `OdaError` whose message names the object and the
check. `OdaMissing` (an `OdaError`) is the one failure that is missing card data (a
key remainder the certificate says is needed): Book 3 10.3 has the kernel also set
"ICC data missing" for it. Setting the TVR is the kernel's job, not this module's.

Pure: integers, `pow` and hashlib; no clock (the caller passes today's date).
"""

from __future__ import annotations

import calendar
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from firmware.core.emv import tlv
from firmware.core.emv.params import CaKey

MAX_MODULUS = 248  # bytes: 1984 bits, the longest key Book 2 allows (5.1, 6.1)
HEADER = 0x6A  # recovered data header (Book 2 Tables 6, 7, 14, 17, 22)
TRAILER = 0xBC  # recovered data trailer
SHA1 = 0x01  # hash algorithm indicator (Book 2 Annex B3)
RSA = 0x01  # public key algorithm indicator (Book 2 Annex B2)
EXPONENTS = (3, 65537)  # Book 2 Annex B2.1: e is 3 or 2^16 + 1
HASH_LEN = 20
_SDAD_TAG = 0x9F4B


class OdaError(ValueError):
    """Offline data authentication failed; the message says which check."""


class OdaMissing(OdaError):
    """Data the card must supply for the check is absent (Book 3 10.3: ICC data missing)."""


@dataclass(frozen=True)
class PublicKey:
    modulus: bytes = field(repr=False)
    exponent: int

    @property
    def size(self) -> int:
        """The modulus length in bytes."""
        return len(self.modulus)


# -- static data (Book 3 10.3, Book 2 5.4 step 5 and 6.4 step 5) ----------------

def static_data(records: Sequence[tuple[int, bytes]], tag_list: bytes | None,
                aip: bytes) -> bytes:
    """Static data to be authenticated (Book 3 10.3, Book 2 5.4/6.4): records are (SFI,
    whole record as read, tag 70 template included), only those the AFL marks for ODA,
    in order. SFI 1..10: the value of the 70 template only (OdaError if a record is
    not a 70 template); SFI 11..30: the whole record. Then the values of the tags in
    the Static Data Authentication Tag List (9F4A) -- which may only be 82 (OdaError
    otherwise)."""
    out: list[bytes] = []
    for n, (sfi, record) in enumerate(records, 1):
        if 1 <= sfi <= 10:
            # Book 3 10.3: tag 70 and its length are left out; a record that is not a
            # 70 template means ODA was performed and failed
            value = _template_70(record)
            if value is None:
                raise OdaError(f"static data: record {n} (SFI {sfi}) is not a 70 template")
            out.append(value)
        elif 11 <= sfi <= 30:
            out.append(record)  # Book 3 10.3: the whole record, tag and length included
        else:
            raise OdaError(f"static data: SFI {sfi} is not 1 to 30")
    if tag_list:
        # Book 3 10.3: the SDA tag list, if present, holds only the AIP's tag; its value
        # (no tag, no length) closes the data
        if tag_list != b"\x82":
            raise OdaError(f"static data: tag list 9F4A {tag_list.hex().upper()} "
                           "holds more than tag 82")
        if len(aip) != 2:
            raise OdaError(f"static data: AIP has {len(aip)} bytes, not 2")
        out.append(aip)
    return b"".join(out)


def _template_70(record: bytes) -> bytes | None:
    """The value of a record that is one 70 template, exactly (Book 3 Annex B lengths);
    its content is the kernel's to read, not checked here."""
    if len(record) < 2 or record[0] != 0x70:
        return None
    first = record[1]
    count = first & 0x7F if first & 0x80 else 0
    if first == 0x80 or count > 2:
        return None
    start = 2 + count
    length = int.from_bytes(record[2:start], "big") if count else first
    if len(record) != start + length:
        return None
    return record[start:]


# -- the pieces every check shares ----------------------------------------------

def _recover(key: PublicKey, signed: bytes, least: int, what: str) -> bytes:
    """Annex A2.1 recovery, then steps 1 to 3 of every Book 2 check: the length equals
    the key's modulus, the trailer is BC, the header is 6A. `least`: the fixed part of
    the recovered layout, which a shorter key cannot hold."""
    n = int.from_bytes(key.modulus, "big")
    if not least <= key.size <= MAX_MODULUS or key.modulus[0] == 0 \
            or key.exponent not in EXPONENTS:
        raise OdaError(f"{what}: the key is not usable ({key.size} bytes, "
                       f"exponent {key.exponent})")
    # step 1: the signed object has the length of the signer's modulus
    if len(signed) != key.size:
        raise OdaError(f"{what}: wrong length ({len(signed)} bytes, the key has {key.size})")
    s = int.from_bytes(signed, "big")
    if s >= n:  # Annex A2.1: a signature is below the modulus
        raise OdaError(f"{what}: not below the modulus")
    x = pow(s, key.exponent, n).to_bytes(key.size, "big")
    if x[-1] != TRAILER:  # step 2
        raise OdaError(f"{what}: trailer {x[-1]:02X}, not BC")
    if x[0] != HEADER:  # step 3
        raise OdaError(f"{what}: header {x[0]:02X}, not 6A")
    return x


def _format(x: bytes, expected: int, what: str) -> None:
    if x[1] != expected:  # step 4
        raise OdaError(f"{what}: format {x[1]:02X}, not {expected:02X}")


def _hash_algorithm(indicator: int, what: str) -> None:
    if indicator != SHA1:  # step 6 applies the indicated algorithm: only SHA-1 is known
        raise OdaError(f"{what}: hash algorithm {indicator:02X} not supported")


def _check_hash(x: bytes, data: bytes, what: str) -> None:
    """Steps 6 and 7: SHA-1 over `data` equals the recovered hash (before the trailer)."""
    if hashlib.sha1(data).digest() != x[-1 - HASH_LEN:-1]:
        raise OdaError(f"{what}: hash mismatch")


def _expiry(mmyy: bytes, today: date, what: str) -> None:
    """The last day of the month MMYY is today or later (5.3 step 9, 6.4 step 9)."""
    text = mmyy.hex()
    if not text.isdigit() or not 1 <= int(text[:2]) <= 12:
        raise OdaError(f"{what}: expiry {text.upper()} is not a MMYY date")
    month, yy = int(text[:2]), int(text[2:])
    year = 2000 + yy if yy < 50 else 1900 + yy  # Book 3 Annex A: YY 50..99 is 19YY
    last = date(year, month, calendar.monthrange(year, month)[1])
    if last < today:
        raise OdaError(f"{what}: expired ({text[:2]}/{text[2:]})")


def _modulus(x: bytes, at: int, remainder: bytes | None, room: int,
             what: str) -> tuple[int, bytes]:
    """The key length (at `at`) and the modulus of a key certificate (Tables 6 and 14):
    its leftmost digits recovered (`room` bytes from `at` + 2), and when the key does
    not fit, the remainder sent beside it (5.1, 6.1: present only then)."""
    length = x[at]
    leftmost = x[at + 2:at + 2 + room]
    if length <= room:
        return length, leftmost[:length]  # the rest is padding BB
    need = length - room
    if not remainder:
        raise OdaMissing(f"{what}: remainder missing ({need} bytes needed)")
    if len(remainder) != need:
        raise OdaError(f"{what}: remainder has {len(remainder)} bytes, "
                       f"the certificate needs {need}")
    return length, leftmost + remainder


def _exponent(x: bytes, at: int, exponent: bytes, what: str) -> int:
    """The exponent sent beside a key certificate: as long as the certificate says (at
    `at`), and 3 or 2^16 + 1 (Annex B2.1)."""
    if len(exponent) != x[at]:
        raise OdaError(f"{what}: bad exponent: {len(exponent)} bytes, the certificate "
                       f"says {x[at]}")
    e = int.from_bytes(exponent, "big")
    if e not in EXPONENTS:
        raise OdaError(f"{what}: bad exponent {exponent.hex().upper()} (not 3 or 65537)")
    return e


def _pan_digits(pan: str) -> str:
    """The card's PAN (5A) as digits, without its F padding."""
    if not pan.isdigit() or not 1 <= len(pan) <= 19:
        raise OdaError("PAN is not 1 to 19 digits")
    return pan


# -- the issuer public key (Book 2 5.3, 6.3) --------------------------------------

def issuer_key(ca: CaKey, cert: bytes, remainder: bytes | None, exponent: bytes, pan: str,
               today: date, revoked: frozenset[tuple[bytes, int, bytes]]) -> PublicKey:
    """Book 2 5.3 / 6.3: recover the issuer public key from tag 90 with the CA key (8F
    chose it), remainder 92, exponent 9F32. Checks: certificate length == CA modulus
    length; recovered data header 6A, trailer BC, format 02; hash (SHA-1, algorithm
    indicator 01) over format..remainder..exp; issuer identifier (leftmost 3-8 digits,
    F-padded) matches the PAN; expiry MMYY not before today (last day of that month);
    (RID, CA index, serial) not in revoked; public key algorithm indicator 01;
    remainder present when needed. Also: the CA key itself has not expired
    (ca.expiry < today -> error)."""
    what = "issuer certificate"
    pan = _pan_digits(pan)
    # Book 2 11.2 (the terminal's CA keys): an expired key is no longer used
    if ca.expiry < today:
        raise OdaError(f"{what}: CA key {ca.rid.hex().upper()} {ca.index:02X} expired "
                       f"on {ca.expiry.isoformat()}")
    x = _recover(PublicKey(ca.modulus, ca.exponent), cert, 36, what)  # steps 1 to 3
    _format(x, 0x02, what)  # step 4
    # Table 6: 6A | 02 | issuer id 4 | expiry 2 | serial 3 | hash alg | pk alg | N_I |
    # exponent length | N_CA - 36 bytes of key | hash 20 | BC
    issuer_id, expiry, serial = x[2:6], x[6:8], x[8:11]
    room = len(x) - 36
    _hash_algorithm(x[11], what)
    length, modulus = _modulus(x, 13, remainder, room, what)
    # step 5: format .. leftmost digits, then the remainder (if present) and the exponent
    _check_hash(x, x[1:15 + room] + (remainder or b"") + exponent, what)  # steps 6, 7
    # step 8: the issuer identifier is the PAN's leftmost 3 to 8 digits, F-padded
    digits = issuer_id.hex().upper()
    stripped = digits.rstrip("F")
    if not stripped.isdigit() or not 3 <= len(stripped) <= 8:
        raise OdaError(f"{what}: issuer identifier {digits} is not 3 to 8 digits")
    if not pan.startswith(stripped):
        raise OdaError(f"{what}: issuer identifier {digits} does not match the PAN")
    _expiry(expiry, today, what)  # step 9
    if (ca.rid, ca.index, serial) in revoked:  # step 10
        raise OdaError(f"{what}: revoked (serial {serial.hex().upper()})")
    if x[12] != RSA:  # step 11
        raise OdaError(f"{what}: public key algorithm {x[12]:02X} not supported")
    if length > len(ca.modulus):  # 5.1: N_I <= N_CA
        raise OdaError(f"{what}: issuer key of {length} bytes is longer than the CA key")
    # step 12: leftmost digits and remainder make the modulus
    return PublicKey(modulus, _exponent(x, 14, exponent, what))


# -- the ICC public key (Book 2 6.4) and the ICC PIN encipherment key (7.1) ----------

def icc_key(issuer: PublicKey, cert: bytes, remainder: bytes | None, exponent: bytes,
            static: bytes, pan: str, today: date) -> PublicKey:
    """Book 2 6.4: recover the ICC public key from 9F46 (remainder 9F48, exponent 9F47).
    Checks: length == issuer modulus length; 6A..BC; format 04; hash over
    format..static data; PAN (F-padded 10 bytes cn) equals the card's PAN exactly;
    expiry; algorithm 01."""
    return _icc_certificate(issuer, cert, remainder, exponent, static, pan, today,
                            "ICC certificate")


def icc_pin_key(issuer: PublicKey, cert: bytes, remainder: bytes | None, exponent: bytes,
                pan: str, today: date) -> PublicKey:
    """Book 2 7.1: recover the ICC PIN encipherment public key from 9F2D (remainder 9F2F,
    exponent 9F2E). The certificate has the ICC public key certificate's format (Table
    14, format 04) and is checked as 6.4 checks that one, but its hash covers the
    certificate's fields, the remainder and the exponent only: no static data to be
    authenticated (7.1: the data signed by the issuer, Table 23, holds none)."""
    return _icc_certificate(issuer, cert, remainder, exponent, b"", pan, today,
                            "ICC PIN encipherment certificate")


def _icc_certificate(issuer: PublicKey, cert: bytes, remainder: bytes | None,
                     exponent: bytes, static: bytes, pan: str, today: date,
                     what: str) -> PublicKey:
    pan = _pan_digits(pan)
    x = _recover(issuer, cert, 42, what)  # steps 1 to 3
    _format(x, 0x04, what)  # step 4
    # Table 14: 6A | 04 | PAN 10 | expiry 2 | serial 3 | hash alg | pk alg | N_IC |
    # exponent length | N_I - 42 bytes of key | hash 20 | BC
    card_pan, expiry = x[2:12], x[12:14]
    room = len(x) - 42
    _hash_algorithm(x[17], what)
    length, modulus = _modulus(x, 19, remainder, room, what)
    # step 5: format .. leftmost digits, remainder (if present), exponent, static data
    _check_hash(x, x[1:21 + room] + (remainder or b"") + exponent + static, what)
    # step 8: the recovered PAN equals the card's PAN (5A), digit for digit
    if card_pan != bytes.fromhex(pan.ljust(20, "F")):
        raise OdaError(f"{what}: PAN does not match")
    _expiry(expiry, today, what)  # step 9
    if x[18] != RSA:  # step 10
        raise OdaError(f"{what}: public key algorithm {x[18]:02X} not supported")
    if length > issuer.size:  # 6.1, 7.1: N_IC (N_PE) <= N_I
        raise OdaError(f"{what}: key of {length} bytes is longer than the issuer key")
    # step 11: leftmost digits and remainder make the modulus
    return PublicKey(modulus, _exponent(x, 20, exponent, what))


# -- SDA (Book 2 5.4) ---------------------------------------------------------------

def verify_sda(issuer: PublicKey, ssad: bytes, static: bytes) -> bytes:
    """Book 2 5.4: tag 93 recovered with the issuer key: 6A, format 03, hash over
    format..static data, BC. Returns the data authentication code (2 bytes, for 9F45)."""
    what = "SSAD"
    x = _recover(issuer, ssad, 26, what)  # steps 1 to 3
    _format(x, 0x03, what)  # step 4
    # Table 7: 6A | 03 | hash alg | data authentication code 2 | pad BB | hash 20 | BC
    _hash_algorithm(x[2], what)
    _check_hash(x, x[1:-1 - HASH_LEN] + static, what)  # steps 5 to 7
    return x[3:5]


# -- DDA (Book 2 6.5) ---------------------------------------------------------------

def _dynamic(x: bytes, what: str) -> bytes:
    """Steps 4 and 5's fields of Tables 17 and 22: format 05, the hash algorithm, the
    ICC dynamic data (its length within the block) and its ICC dynamic number."""
    _format(x, 0x05, what)
    _hash_algorithm(x[2], what)
    size = x[3]
    if size > len(x) - 25:
        raise OdaError(f"{what}: ICC dynamic data of {size} bytes does not fit")
    data = x[4:4 + size]
    if not data or not 2 <= data[0] <= 8 or 1 + data[0] > size:
        raise OdaError(f"{what}: ICC dynamic number length is not 2 to 8")
    return data


def verify_dda(icc: PublicKey, sdad: bytes, ddol_data: bytes) -> bytes:
    """Book 2 6.5.2: the signed dynamic application data (9F4B, from INTERNAL
    AUTHENTICATE's answer) recovered with the ICC key: 6A, format 05, hash algorithm 01,
    hash over format..ICC dynamic data ..pad (BB) ..DDOL data, BC. Returns the ICC
    dynamic number."""
    what = "SDAD"
    x = _recover(icc, sdad, 28, what)  # steps 1 to 3
    data = _dynamic(x, what)  # step 4, Table 17
    # step 5: format .. pad, then the data the DDOL asked for; steps 6, 7
    _check_hash(x, x[1:-1 - HASH_LEN] + ddol_data, what)
    return data[1:1 + data[0]]


# -- CDA (Book 2 6.6) ---------------------------------------------------------------

def verify_cda(icc: PublicKey, sdad: bytes, unpredictable: bytes, cid: int,
               genac_without_sdad: bytes, pdol_data: bytes, cdol_data: bytes) -> bytes:
    """Book 2 6.6.2: SDAD of a GENERATE AC with CDA: 6A, format 05, hash over
    format..dynamic data..unpredictable number (9F37 of the terminal); in the ICC
    dynamic data: ICC dynamic number length+value, CID (must equal 9F27 of the
    answer), the application cryptogram (8 bytes), the transaction data hash code =
    SHA-1(PDOL data || CDOL data || the GENERATE AC answer's TLV data objects other
    than 9F4B, in the order received). Returns the application cryptogram (what goes
    into 9F26).

    For the second GENERATE AC, `cdol_data` is the CDOL1 data followed by the CDOL2
    data (6.6.2 step 9). `genac_without_sdad(answer)` builds the third argument."""
    what = "SDAD"
    x = _recover(icc, sdad, 57, what)  # steps 1 to 3
    data = _dynamic(x, what)  # step 4, Table 22
    # step 5: format .. pad, then the terminal's unpredictable number; steps 6, 7
    _check_hash(x, x[1:-1 - HASH_LEN] + unpredictable, what)
    # 6.6.1, the ICC dynamic data: number length | number | CID | cryptogram 8 | hash code 20
    n = data[0]
    if len(data) < 1 + n + 1 + 8 + HASH_LEN:
        raise OdaError(f"{what}: ICC dynamic data of {len(data)} bytes is too short for CDA")
    signed_cid = data[1 + n]
    cryptogram = data[2 + n:10 + n]
    hash_code = data[10 + n:10 + n + HASH_LEN]
    if signed_cid != cid:  # step 8
        raise OdaError(f"{what}: CID {signed_cid:02X} does not match 9F27 {cid:02X}")
    # steps 9 to 11: the transaction data hash code
    if hashlib.sha1(pdol_data + cdol_data + genac_without_sdad).digest() != hash_code:
        raise OdaError(f"{what}: transaction data hash code mismatch")
    return cryptogram


def genac_without_sdad(answer: bytes) -> bytes:
    """The data objects of a GENERATE AC answer (the 77 template as received) other
    than 9F4B, each exactly as the card encoded it, in order (6.6.2 step 9)."""
    try:
        objs = tlv.parse(answer)
    except tlv.TlvError as exc:
        raise OdaError(f"GENERATE AC answer: {exc}") from None
    if len(objs) != 1 or objs[0].tag != 0x77:
        raise OdaError("GENERATE AC answer: not one 77 template (CDA needs format 2)")
    body = objs[0].value
    out: list[bytes] = []
    i = 0
    for obj in objs[0].children:
        head = len(tlv.tag_bytes(obj.tag))
        first = body[i + head]
        head += 1 + (first & 0x7F if first & 0x80 else 0)  # the length as it was encoded
        end = i + head + len(obj.value)
        if obj.tag != _SDAD_TAG:
            out.append(body[i:end])
        i = end
    return b"".join(out)
