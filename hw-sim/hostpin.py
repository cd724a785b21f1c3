"""The simulated host's PIN checks (host-interface 1.2, section 9.2).

`PinChecks` is the host's `pin_check` hook (`ledger.Books` calls it in section 7's
order: after the cryptogram check, before the other cents conventions). For a 0200
carrying fields 52 and 53 it answers `81`, `75` or `55`, or None when the PIN is
right:

- the method comes from field 53's length: 12 bytes, AES DUKPT (ANSI X9.24-3-2017,
  the AES-128 PIN encryption key, key usage 1000) and an ISO 9564-1 format 4 block
  of 16 bytes; 10 bytes, TDES DUKPT (ANSI X9.24-1:2009 Annex A, the PIN variant of
  the transaction key) and a format 0 block of 8 bytes;
- `81`, never counted as a try: a block whose length does not fit the KSN's method,
  a KSN whose counter is 0 or has more one-bits than its method allows (16 of 32
  for AES, X9.24-3 6.1; 10 of 21 for TDES, X9.24-1 A.2), a KSN the host has already
  used, and a block that does not decode (format nibble, PIN length 4 to 12, digits,
  fill; a PAN field that is not field 2's shows as such in a format 4 block, and in
  a format 0 block only when the control or fill digits show it);
- the PIN is `1234` for every card; wrong PINs in a row are counted per PAN across
  terminals: the first and second are answered `55`, the third `75`, and every later
  PIN for that PAN (right or wrong) `75` until `reset` (the control op `pin-reset`).
  A right PIN before the third resets the count.

A KSN is used once. The one exception (9.1) is the new attempt after a `91` or `96`
answer, which resends the same 52, 53 and 55 with a new STAN: `Books` tells this
module of a 0200 answered that way (`not_processed`), and a later request with that
KSN is accepted once if its 52 and 55 are the same; with other data it is a reuse.

The DUKPT derivations are written here from the standards, independently of the
firmware's (`firmware/dukpt.py`): hwsim never imports it, so that two
implementations check each other. They hold only the ANSI test keys, never
production ones. Nothing here keeps a PIN, a PIN block or a PAN in clear: the
counts are keyed by a hash of the PAN, a resend is recognised by a hash of 52 and
55, and no log line, exception or repr carries any of them. No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 moved TripleDES to the decrepit module
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

from .hostproto import Message

log = logging.getLogger("hwsim.host")

# 9.2: the ANSI test base derivation keys; never for production.
AES_BDK: Final = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")
TDES_BDK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
RIGHT_PIN: Final = "1234"
TRIES: Final = 3  # the third wrong PIN in a row is answered 75

AES_KSN_BYTES: Final = 12  # initial key ID 8 bytes, transaction counter 4 bytes
TDES_KSN_BYTES: Final = 10  # key set ID, device ID, 21-bit transaction counter
AES_MAX_ONES: Final = 16  # X9.24-3-2017: MAX_WORK
TDES_MAX_ONES: Final = 10  # X9.24-1:2009 A.2
TDES_COUNTER_BITS: Final = 21

# X9.24-3-2017 6.3.2: key usage indicators and the AES-128 key type of the derivation data
_USAGE_PIN: Final = 0x1000
_USAGE_DERIVATION: Final = 0x8000
_USAGE_INITIAL: Final = 0x8001
_ALG_AES128: Final = 0x0002
_BITS_128: Final = 0x0080
# X9.24-1:2009 A.6: the key mask of the non-reversible key generation, the PIN variant
_KEY_MASK: Final = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
_PIN_VARIANT: Final = bytes.fromhex("00000000000000FF00000000000000FF")


# -- primitives ----------------------------------------------------------------------

def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _aes(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def _des(key: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    """DES (an 8-byte key) or two-key TDES (16 bytes) of one 8-byte block."""
    triple = key * 3 if len(key) == 8 else key + key[:8]
    cipher = Cipher(TripleDES(triple), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


# -- AES DUKPT (ANSI X9.24-3-2017) ---------------------------------------------------

def _aes_derivation_data(usage: int, ident: bytes) -> bytes:
    """6.3.2: version 01, key block counter 01, key usage, algorithm AES-128, length
    128 bits, then 8 bytes (the initial key ID, or its right half and a counter)."""
    return (bytes([0x01, 0x01]) + usage.to_bytes(2, "big") + _ALG_AES128.to_bytes(2, "big")
            + _BITS_128.to_bytes(2, "big") + ident)


def aes_initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    """6.3.3: the initial key of a device, from the BDK and its 8-byte initial key ID."""
    return _aes(bdk, _aes_derivation_data(_USAGE_INITIAL, initial_key_id))


def aes_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """The AES-128 PIN encryption key for a 12-byte KSN (6.4: from the initial key, one
    intermediate derivation key per one-bit of the counter, from the highest; then the
    working key of usage 1000 for the whole counter)."""
    ikid, counter = ksn[:8], int.from_bytes(ksn[8:], "big")
    key = aes_initial_key(bdk, ikid)
    working = 0
    for bit in range(31, -1, -1):
        mask = 1 << bit
        if counter & mask:
            working |= mask
            key = _aes(key, _aes_derivation_data(_USAGE_DERIVATION,
                                                 ikid[4:] + working.to_bytes(4, "big")))
    return _aes(key, _aes_derivation_data(_USAGE_PIN, ikid[4:] + counter.to_bytes(4, "big")))


# -- TDES DUKPT (ANSI X9.24-1:2009 Annex A) -------------------------------------------

def _tdes_counter(ksn: bytes) -> int:
    return int.from_bytes(ksn[-3:], "big") & ((1 << TDES_COUNTER_BITS) - 1)


def tdes_initial_key(bdk: bytes, ksn: bytes) -> bytes:
    """A.6: the initial PIN entry device key from the BDK and the KSN (its counter
    cleared; the leftmost 8 bytes)."""
    register = (int.from_bytes(ksn, "big") & ~((1 << TDES_COUNTER_BITS) - 1)).to_bytes(10, "big")
    left = _des(bdk, register[:8])
    right = _des(_xor(bdk, _KEY_MASK), register[:8])
    return left + right


def _non_reversible(key: bytes, data: bytes) -> bytes:
    """A.2's non-reversible key generation process of a double-length key."""
    def half(k: bytes) -> bytes:
        return _xor(_des(k[:8], _xor(data, k[8:])), k[8:])
    return half(_xor(key, _KEY_MASK)) + half(key)


def tdes_transaction_key(bdk: bytes, ksn: bytes) -> bytes:
    """The transaction key for a 10-byte KSN: from the initial key, one step per
    one-bit of the 21-bit counter, from the highest, on the KSN's rightmost 8 bytes."""
    key = tdes_initial_key(bdk, ksn)
    counter = _tdes_counter(ksn)
    register = int.from_bytes(ksn[2:], "big") & ~((1 << TDES_COUNTER_BITS) - 1)
    for bit in range(TDES_COUNTER_BITS - 1, -1, -1):
        mask = 1 << bit
        if counter & mask:
            register |= mask
            key = _non_reversible(key, register.to_bytes(8, "big"))
    return key


def tdes_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """The PIN variant of the transaction key (A.6's PIN encryption variant constant)."""
    return _xor(tdes_transaction_key(bdk, ksn), _PIN_VARIANT)


# -- ISO 9564-1 PIN blocks -------------------------------------------------------------

class Undecodable(ValueError):
    """A PIN block or PAN that cannot be deciphered or decoded; its text names the rule
    broken, never a digit."""


def format4_pan_field(pan: str) -> bytes:
    """Format 4's PAN field: M (the PAN's length minus 12, 0 below 12), the PAN padded
    on the left with zeros to 12 digits, then zeros to 32 nibbles."""
    if not pan.isdigit() or len(pan) > 19:
        raise Undecodable("field 2 is not a PAN of at most 19 digits")
    digits = str(max(0, len(pan) - 12)) + pan.rjust(12, "0")
    return bytes.fromhex(digits.ljust(32, "0"))


def format0_pan_field(pan: str) -> bytes:
    """Format 0's PAN field: 0000 and the 12 rightmost digits of the PAN without its
    check digit (zeros on the left when shorter)."""
    if not pan.isdigit() or not 2 <= len(pan) <= 19:
        raise Undecodable("field 2 is not a PAN of at most 19 digits")
    return bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))


def _pin_of(nibbles: str, control: str, fill: str, end: int) -> str:
    """The PIN of a clear PIN field (hex): the control nibble, the length 4 to 12, the
    digits, then `fill` up to nibble `end`."""
    if nibbles[0] != control:
        raise Undecodable("wrong format nibble")
    length = int(nibbles[1], 16)
    if not 4 <= length <= 12:
        raise Undecodable("PIN length outside 4 to 12")
    pin = nibbles[2:2 + length]
    if not pin.isdigit():
        raise Undecodable("a PIN digit that is not decimal")
    if nibbles[2 + length:end] != fill * (end - 2 - length):
        raise Undecodable("wrong fill")
    return pin


def decode_format4(key: bytes, block: bytes, pan: str) -> str:
    """The PIN of an AES format 4 block: AES⁻¹(K, AES⁻¹(K, block) ⊕ PAN field)."""
    middle = _xor(_aes(key, block, decrypt=True), format4_pan_field(pan))
    return _pin_of(_aes(key, middle, decrypt=True).hex().upper(), "4", "A", 16)


def decode_format0(key: bytes, block: bytes, pan: str) -> str:
    """The PIN of a TDES format 0 block: TDES⁻¹(K, block) ⊕ PAN field."""
    clear = _xor(_des(key, block, decrypt=True), format0_pan_field(pan))
    return _pin_of(clear.hex().upper(), "0", "F", 16)


# -- the checks --------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    name: str
    ksn_bytes: int
    block_bytes: int
    max_ones: int

    def counter(self, ksn: bytes) -> int:
        return int.from_bytes(ksn[8:], "big") if self.ksn_bytes == AES_KSN_BYTES \
            else _tdes_counter(ksn)

    def pin(self, ksn: bytes, block: bytes, pan: str) -> str:
        if self.ksn_bytes == AES_KSN_BYTES:
            return decode_format4(aes_pin_key(AES_BDK, ksn), block, pan)
        return decode_format0(tdes_pin_key(TDES_BDK, ksn), block, pan)


METHODS: Final = {m.ksn_bytes: m for m in (
    Method("AES DUKPT, format 4", AES_KSN_BYTES, 16, AES_MAX_ONES),
    Method("TDES DUKPT, format 0", TDES_KSN_BYTES, 8, TDES_MAX_ONES),
)}


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode("ascii", "replace")).digest()


@dataclass
class PinChecks:
    """Section 9.2's checks, called as the host's `pin_check` hook (see the module
    docstring). Its state (tries per PAN, the KSNs used) lives as long as the host."""

    _wrong: dict[bytes, int] = field(default_factory=dict)  # hash of the PAN -> in a row
    _used: set[bytes] = field(default_factory=set)  # KSNs used
    _resendable: dict[bytes, bytes] = field(default_factory=dict)  # KSN -> hash(52, 55)

    def __repr__(self) -> str:
        return f"PinChecks({len(self._wrong)} PAN(s) counted, {len(self._used)} KSN(s) used)"

    def __call__(self, req: Message) -> str | None:
        """The answer to a 0200's PIN: "81", "75", "55", or None when it is right."""
        stan = req.get("11", "-")
        try:
            ksn, block = bytes.fromhex(req["53"]), bytes.fromhex(req["52"])
        except (KeyError, ValueError):
            return self._error(stan, "fields 52 and 53 are not binary data")
        method = METHODS.get(len(ksn))
        if method is None:
            return self._error(stan, f"a KSN of {len(ksn)} bytes")
        if len(block) != method.block_bytes:
            return self._error(stan, f"a PIN block of {len(block)} bytes with {method.name}")
        counter = method.counter(ksn)
        if counter == 0 or counter.bit_count() > method.max_ones:
            return self._error(stan, f"KSN counter {counter:X} not allowed with {method.name}")
        fingerprint = _digest(req["52"].upper(), req.get("55", "").upper())
        if ksn in self._used:
            return self._error(stan, f"KSN ...{ksn[-4:].hex().upper()} already used")
        resent = self._resendable.pop(ksn, None)
        if resent is not None and not hmac.compare_digest(resent, fingerprint):
            self._used.add(ksn)
            return self._error(stan, f"KSN ...{ksn[-4:].hex().upper()} already used (with "
                               "other fields 52 or 55)")
        self._used.add(ksn)
        pan = req.get("2", "")
        try:
            pin = method.pin(ksn, block, pan)
        except Undecodable as exc:
            return self._error(stan, f"{method.name}: {exc}")
        key = _digest(pan)
        wrong = self._wrong.get(key, 0)
        if wrong >= TRIES:
            log.info("PIN stan=%s: PIN tries exceeded for this card: 75", stan)
            return "75"
        if hmac.compare_digest(pin.encode(), RIGHT_PIN.encode()):
            self._wrong.pop(key, None)
            log.info("PIN stan=%s: right (%s)", stan, method.name)
            return None
        self._wrong[key] = wrong + 1
        code = "75" if wrong + 1 >= TRIES else "55"
        log.info("PIN stan=%s: wrong PIN, %d in a row for this card: %s", stan, wrong + 1, code)
        return code

    def not_processed(self, req: Message) -> None:
        """A 0200 answered 91 or 96 (not processed): its KSN may come back once with the
        same 52 and 55 and a new STAN (9.1). A KSN already used stays used."""
        try:
            ksn = bytes.fromhex(req["53"])
            fingerprint = _digest(req["52"].upper(), req.get("55", "").upper())
        except (KeyError, ValueError):
            return
        if ksn not in self._used:
            self._resendable.setdefault(ksn, fingerprint)

    def reset(self, pan: str | None = None) -> int:
        """Forget the wrong PINs in a row of one PAN (None: of every PAN); returns how
        many PANs had a count."""
        if pan is None:
            count = len(self._wrong)
            self._wrong.clear()
        else:
            count = 1 if self._wrong.pop(_digest(pan), None) is not None else 0
        log.info("PIN tries reset for %s", "every card" if pan is None else "one card")
        return count

    def blocked(self) -> int:
        """How many PANs are answered 75 now."""
        return sum(1 for n in self._wrong.values() if n >= TRIES)

    @staticmethod
    def _error(stan: str, why: str) -> str:
        log.warning("PIN cryptographic error stan=%s: %s: 81", stan, why)
        return "81"
