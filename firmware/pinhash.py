"""The supervisor PIN's stored form: `scrypt$N$r$p$salt$hash`, made, parsed and checked.

Pure functions over hashlib's scrypt, shared by the configuration (which checks a
configured hash at start) and the runtime's guard (firmware/runtime/operator.py,
which checks a keyed PIN against it and keeps the lockout).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

SCHEME = "scrypt"
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**15, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
PIN_RE = re.compile(r"[0-9]{4,8}")
PIN_WHAT = "a PIN is 4 to 8 digits"
# bounds on the parameters a configured hash may ask for: a hash pasted from elsewhere
# must not make each check take minutes or all the memory
N_RANGE = (2**10, 2**20)
R_RANGE = (1, 32)
P_RANGE = (1, 16)
FUNCTIONS = ("refund", "void", "close", "x_report")



@dataclass(frozen=True)
class PinHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def parse_pin_hash(text: str) -> PinHash:
    """The parts of a stored hash; ValueError says what is wrong (never echoing it)."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(f'must be "{SCHEME}$N$r$p$salt$hash" as printed by '
                         "`posterm pin-hash`")
    try:
        n, r, p = (int(x) for x in parts[1:4])
    except ValueError:
        raise ValueError("N, r and p must be whole numbers") from None
    if not (N_RANGE[0] <= n <= N_RANGE[1] and n & (n - 1) == 0):
        raise ValueError(f"N must be a power of 2 from {N_RANGE[0]} to {N_RANGE[1]}")
    if not (R_RANGE[0] <= r <= R_RANGE[1] and P_RANGE[0] <= p <= P_RANGE[1]):
        raise ValueError(f"r must be {R_RANGE[0]}-{R_RANGE[1]} and p {P_RANGE[0]}-{P_RANGE[1]}")
    try:
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("salt and hash must be base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt (8 bytes or more) or hash (16 bytes or more) too short")
    return PinHash(n, r, p, salt, digest)


def _scrypt(pin: str, n: int, r: int, p: int, salt: bytes, size: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=size,
                          maxmem=128 * r * (n + p + 2) + (1 << 20))


def hash_pin(pin: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P,
             salt: bytes | None = None) -> str:
    """The line to configure for `pin` (4 to 8 digits)."""
    if not PIN_RE.fullmatch(pin):
        raise ValueError(PIN_WHAT)
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(pin, n, r, p, salt, HASH_BYTES)
    return "$".join((SCHEME, str(n), str(r), str(p), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def verify_pin(pin: str, stored: PinHash) -> bool:
    """True when `pin` is the one `stored` was made from (constant-time comparison)."""
    if not PIN_RE.fullmatch(pin):
        return False
    got = _scrypt(pin, stored.n, stored.r, stored.p, stored.salt, len(stored.digest))
    return hmac.compare_digest(got, stored.digest)
