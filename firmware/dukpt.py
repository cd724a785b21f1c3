"""DUKPT key derivation and PIN blocks: pure computation, no I/O, no clock, no randomness.

- AES DUKPT, ANSI X9.24-3-2017, AES-128 keys: the initial key from a base derivation
  key (BDK) and the 8-byte initial key ID (hwsim's host and tests only; a terminal never
  holds a BDK), the intermediate derivation key for a transaction counter (one AES
  encipherment per one-bit of the counter, most significant first, key usage 8000) and
  the working key for PIN encryption (key usage 1000). The KSN is 12 bytes: the initial
  key ID, then the 32-bit counter, which has at most 16 one-bits.
- TDES DUKPT, ANSI X9.24-1:2009: the initial PIN encryption key (IPEK) from a BDK and the
  initial KSN, the transaction key for a KSN by the non-reversible key generation
  process, and its PIN encryption variant. The KSN is 10 bytes, its counter the right 21
  bits, with at most 10 one-bits.
- ISO 9564-1 PIN blocks: format 4 (AES, 16 bytes, enciphered as AES(K, AES(K, PIN
  field) XOR PAN field)) and format 0 (8 bytes, PIN field XOR PAN field, enciphered
  with TDES); the inverses for the host's side.
- EMV's offline PIN: the plaintext PIN block of VERIFY (Book 3 6.5.12: control 2, the
  length, the digits, F fill, 8 bytes) and the enciphered PIN data (Book 2 7.2: 7F, the
  PIN block, the ICC's unpredictable number, random pad, RSA under the card's key).

The key file's text (what `posterm key-load` takes) is firmware/pinkeyfile.py's.

A PIN is given as a bytearray of ASCII digits. What is made from it in memory (PIN
fields, clear blocks) is a bytearray overwritten once used; a PIN is never in an
exception message (errors say what is wrong, not what was given). Random fills are the
caller's (firmware/runtime/pinkeys.py takes them from os.urandom), so every function here
is reproducible against published vectors.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

try:  # cryptography 43+: TDES lives among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

AES, TDES = "aes", "tdes"
METHODS = (AES, TDES)

# X9.24-3-2017 6.2: derivation data's key usage indicators and the AES-128 algorithm
USAGE_PIN = 0x1000  # PIN encryption
USAGE_DERIVATION = 0x8000  # key derivation (the intermediate derivation keys)
USAGE_INITIAL = 0x8001  # key derivation, initial key
ALGORITHM_AES128 = 0x0002
AES_KEY_BYTES, AES_ID_BYTES, AES_KSN_BYTES = 16, 8, 12
AES_COUNTER_BITS, AES_MAX_ONES = 32, 16
# X9.24-1:2009: the 10-byte KSN, its 21-bit counter with at most 10 one-bits
TDES_KEY_BYTES, TDES_KSN_BYTES = 16, 10
TDES_COUNTER_BITS, TDES_MAX_ONES = 21, 10
KEY_MASK = bytes.fromhex("C0C0C0C000000000C0C0C0C000000000")
PIN_VARIANT = bytes.fromhex("00000000000000FF00000000000000FF")
PIN_MIN, PIN_MAX = 4, 12


class DukptError(ValueError):
    """A key, KSN, PIN block or PIN of the wrong shape; the message never holds a PIN."""


# -- the block ciphers ---------------------------------------------------------------------
def _aes(key: bytes | bytearray, block: bytes | bytearray, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(bytes(key)), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def _tdes(key: bytes | bytearray, block: bytes | bytearray, *, decrypt: bool = False) -> bytes:
    """TDES-ECB; an 8-byte key is single DES (K1 = K2 = K3), a 16-byte key two-key TDES
    (K3 = K1), both given to the library as the 24-byte key they stand for."""
    full = bytes(key) * 3 if len(key) == 8 else bytes(key) + bytes(key[:8])
    cipher = Cipher(TripleDES(full), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def _xor(a: bytes | bytearray, b: bytes | bytearray) -> bytearray:
    return bytearray(x ^ y for x, y in zip(a, b, strict=True))


def _wipe(*buffers: bytearray) -> None:
    for buf in buffers:
        buf[:] = bytes(len(buf))


# -- counters ---------------------------------------------------------------------------
def counter_limits(method: str) -> tuple[int, int]:
    """(bits of the counter, most one-bits allowed) for `method`."""
    if method == AES:
        return AES_COUNTER_BITS, AES_MAX_ONES
    if method == TDES:
        return TDES_COUNTER_BITS, TDES_MAX_ONES
    raise DukptError(f'DUKPT method must be "{AES}" or "{TDES}"')


def valid_counter(method: str, counter: int) -> bool:
    """A counter a KSN may carry: not 0, within its bits, not too many one-bits."""
    bits, ones = counter_limits(method)
    return 0 < counter < (1 << bits) and counter.bit_count() <= ones


def next_counter(method: str, counter: int) -> int | None:
    """The counter after `counter` (0: none used yet), skipping those with too many
    one-bits by adding their lowest one-bit (X9.24-1 A.2, X9.24-3 6.1); None when the
    counter is exhausted."""
    bits, ones = counter_limits(method)
    counter += 1
    while counter < (1 << bits) and counter.bit_count() > ones:
        counter += counter & -counter
    return counter if counter < (1 << bits) else None


# -- AES DUKPT (X9.24-3-2017) -----------------------------------------------------------
def _derivation_data(usage: int, tail: bytes) -> bytes:
    """Version 01, key block counter 01, key usage, algorithm AES-128, length 128 bits,
    then the initial key ID (initial key) or derivation ID and counter (8 bytes)."""
    return (bytes([1, 1]) + usage.to_bytes(2, "big") + ALGORITHM_AES128.to_bytes(2, "big")
            + (128).to_bytes(2, "big") + tail)


def _check(value: bytes | bytearray, size: int, what: str) -> None:
    if len(value) != size:
        raise DukptError(f"{what} must be {size} bytes, got {len(value)}")


def aes_initial_key(bdk: bytes, initial_key_id: bytes) -> bytes:
    """The terminal's initial key from the BDK (the host's side, and key injection)."""
    _check(bdk, AES_KEY_BYTES, "an AES-128 BDK")
    _check(initial_key_id, AES_ID_BYTES, "an initial key ID")
    return _aes(bdk, _derivation_data(USAGE_INITIAL, initial_key_id))


def aes_derivation_key(initial_key: bytes, initial_key_id: bytes, counter: int) -> bytes:
    """The intermediate derivation key for `counter`: from the initial key, one step per
    one-bit of the counter, most significant first (X9.24-3 6.3)."""
    _check(initial_key, AES_KEY_BYTES, "an AES-128 initial key")
    _check(initial_key_id, AES_ID_BYTES, "an initial key ID")
    if not valid_counter(AES, counter):
        raise DukptError("the KSN's transaction counter is 0 or has more than 16 one-bits")
    key, working = bytes(initial_key), 0
    derivation_id = initial_key_id[4:]
    for bit in range(AES_COUNTER_BITS - 1, -1, -1):
        if counter >> bit & 1:
            working |= 1 << bit
            key = _aes(key, _derivation_data(USAGE_DERIVATION,
                                             derivation_id + working.to_bytes(4, "big")))
    return key


def aes_pin_key(initial_key: bytes, initial_key_id: bytes, counter: int) -> bytes:
    """The AES-128 PIN encryption key (key usage 1000) for `counter`: the terminal's side."""
    key = aes_derivation_key(initial_key, initial_key_id, counter)
    return _aes(key, _derivation_data(USAGE_PIN, initial_key_id[4:] + counter.to_bytes(4, "big")))


def aes_host_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """The same key from the BDK and a 12-byte KSN: the host's side."""
    ikid, counter = split_aes_ksn(ksn)
    return aes_pin_key(aes_initial_key(bdk, ikid), ikid, counter)


def aes_ksn(initial_key_id: bytes, counter: int) -> bytes:
    _check(initial_key_id, AES_ID_BYTES, "an initial key ID")
    return initial_key_id + counter.to_bytes(4, "big")


def split_aes_ksn(ksn: bytes) -> tuple[bytes, int]:
    """(initial key ID, counter) of a 12-byte KSN."""
    _check(ksn, AES_KSN_BYTES, "an AES DUKPT KSN")
    return ksn[:AES_ID_BYTES], int.from_bytes(ksn[AES_ID_BYTES:], "big")


# -- TDES DUKPT (X9.24-1:2009) ----------------------------------------------------------
COUNTER_MASK = (1 << TDES_COUNTER_BITS) - 1


def _ksn_int(ksn: bytes) -> int:
    _check(ksn, TDES_KSN_BYTES, "a TDES DUKPT KSN")
    return int.from_bytes(ksn, "big")


def tdes_counter(ksn: bytes) -> int:
    return _ksn_int(ksn) & COUNTER_MASK


def tdes_ksn(initial_ksn: bytes, counter: int) -> bytes:
    """The KSN for `counter`: the initial KSN with its counter bits replaced."""
    return ((_ksn_int(initial_ksn) & ~COUNTER_MASK) | (counter & COUNTER_MASK)).to_bytes(
        TDES_KSN_BYTES, "big")


def tdes_ipek(bdk: bytes, ksn: bytes) -> bytes:
    """The initial PIN encryption key from the BDK and the KSN (its counter ignored)."""
    _check(bdk, TDES_KEY_BYTES, "a double-length TDES BDK")
    base = (_ksn_int(ksn) & ~COUNTER_MASK).to_bytes(TDES_KSN_BYTES, "big")[:8]
    return _tdes(bdk, base) + _tdes(_xor(bdk, KEY_MASK), base)


def _non_reversible(key: bytes, data: bytes) -> bytes:
    """X9.24-1:2009 A.2's non-reversible key generation process, a 16-byte key."""
    left, right = key[:8], key[8:]
    right_half = bytes(_xor(_tdes(left, _xor(data, right)), right))
    masked = bytes(_xor(key, KEY_MASK))
    left_half = bytes(_xor(_tdes(masked[:8], _xor(data, masked[8:])), masked[8:]))
    return left_half + right_half


def tdes_transaction_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction key for a KSN: from the IPEK, one step per one-bit of the 21-bit
    counter, most significant first."""
    _check(ipek, TDES_KEY_BYTES, "a double-length TDES initial key")
    counter = tdes_counter(ksn)
    if not valid_counter(TDES, counter):
        raise DukptError("the KSN's transaction counter is 0 or has more than 10 one-bits")
    register = int.from_bytes(ksn[2:], "big") & ~COUNTER_MASK  # the right 64 bits
    key = bytes(ipek)
    for bit in range(TDES_COUNTER_BITS - 1, -1, -1):
        if counter >> bit & 1:
            register |= 1 << bit
            key = _non_reversible(key, register.to_bytes(8, "big"))
    return key


def tdes_pin_key(ipek: bytes, ksn: bytes) -> bytes:
    """The transaction key's PIN encryption variant (terminal's side)."""
    return bytes(_xor(tdes_transaction_key(ipek, ksn), PIN_VARIANT))


def tdes_host_pin_key(bdk: bytes, ksn: bytes) -> bytes:
    """The same from the BDK (the host's side)."""
    return tdes_pin_key(tdes_ipek(bdk, ksn), ksn)


# -- check values --------------------------------------------------------------------------
def aes_check_value(key: bytes) -> bytes:
    """AES-CMAC of a 16-byte zero block, its leftmost 5 bytes (X9.24-1:2017's AES key
    check value; many HSMs show only its first 3 bytes, which `key-load` also takes)."""
    mac = CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:5]


def tdes_check_value(key: bytes) -> bytes:
    """TDES of 8 zero bytes, its leftmost 3 bytes (the TDES key check value)."""
    return _tdes(key, bytes(8))[:3]


def check_value(method: str, key: bytes | bytearray) -> bytes:
    return aes_check_value(bytes(key)) if method == AES else tdes_check_value(bytes(key))


# -- the PIN ----------------------------------------------------------------------------
def _digits(pin: bytes | bytearray) -> bytearray:
    """The PIN's digit values (0-9), checked; the caller wipes the result."""
    if not PIN_MIN <= len(pin) <= PIN_MAX:
        raise DukptError(f"a PIN is {PIN_MIN} to {PIN_MAX} digits")
    out = bytearray(len(pin))
    for i, ch in enumerate(pin):
        if not 0x30 <= ch <= 0x39:
            _wipe(out)
            raise DukptError("a PIN is made of the digits 0-9 only")
        out[i] = ch - 0x30
    return out


def _pack(nibbles: bytearray) -> bytearray:
    out = bytearray(len(nibbles) // 2)
    for i in range(len(out)):
        out[i] = nibbles[2 * i] << 4 | nibbles[2 * i + 1]
    return out


def _control_field(control: int, pin: bytes | bytearray, fill: int) -> bytearray:
    """8 bytes: control nibble, length nibble, the digits, `fill` to 16 nibbles."""
    digits = _digits(pin)
    nibbles = bytearray([control, len(digits)]) + digits + bytearray([fill] * (14 - len(digits)))
    try:
        return _pack(nibbles)
    finally:
        _wipe(digits, nibbles)


def _read_control_field(field: bytes | bytearray, control: int, fill: int) -> bytearray:
    """The PIN (ASCII digits) of a clear control field; DukptError if it is not one."""
    nibbles = bytearray(n for b in field[:8] for n in (b >> 4, b & 0xF))
    try:
        length = nibbles[1]
        if nibbles[0] != control:
            raise DukptError(f"not a format {control} PIN block (its control nibble differs)")
        if not PIN_MIN <= length <= PIN_MAX:
            raise DukptError("the PIN block's length nibble is not 4 to 12")
        if any(n > 9 for n in nibbles[2:2 + length]):
            raise DukptError("the PIN block's PIN digits are not all decimal")
        if any(n != fill for n in nibbles[2 + length:16]):
            raise DukptError("the PIN block's fill digits are wrong")
        return bytearray(0x30 + n for n in nibbles[2:2 + length])
    finally:
        _wipe(nibbles)


def _pan_digits(pan: str) -> str:
    if not (pan.isascii() and pan.isdigit() and 1 <= len(pan) <= 19):
        raise DukptError("a PAN is 1 to 19 digits")
    return pan


# ISO 9564-1 format 4
def pin_field_4(pin: bytes | bytearray, fill: bytes) -> bytearray:
    """16 bytes: 4, the length, the digits, A fill to 16 nibbles, then 8 random bytes."""
    _check(fill, 8, "the format 4 random fill")
    return _control_field(4, pin, 0xA) + fill


def pan_field_4(pan: str) -> bytes:
    """16 bytes: the PAN's length less 12 (0 for 12 digits or fewer), the PAN (left-padded
    with zeros to 12 digits), zeros to 32 nibbles."""
    pan = _pan_digits(pan)
    m = max(len(pan) - 12, 0)
    return bytes.fromhex(f"{m:X}{pan.rjust(12, '0')}".ljust(32, "0"))


def format4_encipher(key: bytes, pin: bytes | bytearray, pan: str, fill: bytes) -> bytes:
    """AES(K, AES(K, PIN field) XOR PAN field): the 16-byte block for field 52."""
    _check(key, AES_KEY_BYTES, "an AES-128 PIN key")
    field = pin_field_4(pin, fill)
    try:
        middle = _xor(_aes(key, field), pan_field_4(pan))
        return _aes(key, middle)
    finally:
        _wipe(field)


def format4_decipher(key: bytes, block: bytes, pan: str) -> bytearray:
    """The PIN (ASCII digits) of a format 4 block; DukptError when the block does not
    decode, or its PAN is not `pan` (a wrong key shows as either)."""
    _check(key, AES_KEY_BYTES, "an AES-128 PIN key")
    _check(block, 16, "a format 4 PIN block")
    middle = bytearray(_aes(key, block, decrypt=True))
    field = bytearray(_aes(key, _xor(middle, pan_field_4(pan)), decrypt=True))
    try:
        return _read_control_field(field, 4, 0xA)
    finally:
        _wipe(middle, field)


# ISO 9564-1 format 0
def pan_field_0(pan: str) -> bytes:
    """8 bytes: 0000 and the 12 rightmost PAN digits without the check digit."""
    pan = _pan_digits(pan)
    if len(pan) < 13:
        raise DukptError("a format 0 PIN block needs a PAN of 13 digits or more")
    return bytes.fromhex("0000" + pan[-13:-1])


def format0_block(pin: bytes | bytearray, pan: str) -> bytearray:
    """The clear format 0 block (PIN field XOR PAN field); the caller wipes it."""
    field = _control_field(0, pin, 0xF)
    try:
        return _xor(field, pan_field_0(pan))
    finally:
        _wipe(field)


def format0_encipher(key: bytes, pin: bytes | bytearray, pan: str) -> bytes:
    """The clear block enciphered with two-key TDES (the PIN variant key)."""
    _check(key, TDES_KEY_BYTES, "a double-length TDES PIN key")
    clear = format0_block(pin, pan)
    try:
        return _tdes(key, clear)
    finally:
        _wipe(clear)


def format0_decipher(key: bytes, block: bytes, pan: str) -> bytearray:
    """The PIN (ASCII digits) of a format 0 block; DukptError when it does not decode."""
    _check(key, TDES_KEY_BYTES, "a double-length TDES PIN key")
    _check(block, 8, "a format 0 PIN block")
    clear = bytearray(_tdes(key, block, decrypt=True))
    field = _xor(clear, pan_field_0(pan))
    try:
        return _read_control_field(field, 0, 0xF)
    finally:
        _wipe(clear, field)


# -- EMV offline PIN ----------------------------------------------------------------------
def offline_plain_block(pin: bytes | bytearray) -> bytearray:
    """VERIFY's plaintext PIN block (Book 3 6.5.12): 2, the length, the digits, F fill;
    8 bytes. The caller wipes it once sent."""
    return _control_field(2, pin, 0xF)


def offline_enciphered(pin: bytes | bytearray, challenge: bytes, modulus: bytes,
                       exponent: int, pad: bytes) -> bytes:
    """VERIFY's enciphered PIN data (Book 2 7.2): 7F, the plaintext PIN block, the ICC
    unpredictable number (GET CHALLENGE's 8 bytes) and `pad` (random, N - 17 bytes for a
    modulus of N bytes), RSA-enciphered under the card's PIN encipherment (or ICC) public
    key; N bytes."""
    _check(challenge, 8, "the ICC unpredictable number")
    size = len(modulus)
    if size < 17 + 8 or modulus[0] == 0:
        raise DukptError("the card's public key modulus is too short or not normalised")
    _check(pad, size - 17, "the random pad")
    block = offline_plain_block(pin)
    message = bytearray(b"\x7f") + block + challenge + pad
    try:
        value = int.from_bytes(message, "big")
        n = int.from_bytes(modulus, "big")
        if value >= n:  # 7F... is below any normalised modulus but for a freak pad
            raise DukptError("the enciphered PIN data does not fit the card's modulus")
        return pow(value, exponent, n).to_bytes(size, "big")
    finally:
        _wipe(block, message)

