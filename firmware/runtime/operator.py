"""The supervisor PIN: its stored form, its check, and the lockout after wrong entries.

The PIN is configured only as a salted, slow hash ([operator] pin_hash), made by
`posterm pin-hash`:

    scrypt$<N>$<r>$<p>$<salt, base64>$<hash, base64>

scrypt (stdlib hashlib) with N=2**15, r=8, p=1 and a 16-byte random salt: about a
tenth of a second on a desktop core, more on a terminal's. A 4 to 8 digit PIN has
few values, so the hash alone does not make the configuration file safe to show:
keep it readable by the service only, as the rest of /etc/posterm.

Checking runs in a worker thread (the event loop never stalls on scrypt) and
compares with hmac.compare_digest. Wrong entries are counted in the journal's
meta table, so a restart does not reset them: after `lockout_attempts` wrong PINs
in a row the operator functions are locked for `lockout_minutes` (wall-clock
time, so that the lock outlives a restart; a clock set back never makes it longer
than configured). A right PIN resets the count. The PIN itself is never logged,
journaled, shown or kept: only whether it was right.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware.core.events import PinChecked

log = logging.getLogger("posterm.operator")

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

# journal notes (firmware/runtime/journal_base.py meta, "note:" keys)
NOTE_FAILURES = "pin_failures"
NOTE_LOCKED_UNTIL = "pin_locked_until"  # epoch seconds, wall clock


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


class Notes(Protocol):
    """Where the lockout is kept: the journal's notes (a Journal satisfies this)."""

    def note(self, key: str) -> str: ...

    def set_note(self, key: str, value: str) -> None: ...


class OperatorGuard:
    """Answers CheckPin: verifies in a thread, counts wrong entries, locks and unlocks."""

    def __init__(self, pin_hash: str, *, attempts: int, lockout_minutes: float,
                 journal: Notes, clock: Callable[[], float] = time.time) -> None:
        self.stored = parse_pin_hash(pin_hash) if pin_hash else None
        self.attempts, self.lockout = attempts, lockout_minutes * 60.0
        self.journal, self.clock = journal, clock
        self._lock = asyncio.Lock()

    def _failures(self) -> int:
        text = self.journal.note(NOTE_FAILURES)
        return int(text) if text.isdigit() else 0

    def locked_for(self) -> float:
        """Seconds the operator functions stay locked (0: not locked)."""
        text = self.journal.note(NOTE_LOCKED_UNTIL)
        try:
            until = float(text) if text else 0.0
        except ValueError:
            until = 0.0
        left = until - self.clock()
        # a clock set back must not stretch the lock beyond its configured length
        return max(0.0, min(left, self.lockout))

    def _locked_message(self, seconds: float) -> str:
        return f"LOCKED FOR {max(1, math.ceil(seconds / 60))} MIN"

    async def check(self, pin: str, function: str) -> PinChecked:
        async with self._lock:
            if self.stored is None:
                log.warning("operator function %s refused: no supervisor PIN is configured "
                            "([operator] pin_hash)", function)
                return PinChecked(False, function, "NO PIN CONFIGURED")
            locked = self.locked_for()
            if locked > 0:
                log.warning("operator function %s refused: locked after %d wrong PINs "
                            "(%.0f s left)", function, self.attempts, locked)
                return PinChecked(False, function, self._locked_message(locked))
            ok = await asyncio.to_thread(verify_pin, pin, self.stored)
            if ok:
                if self._failures():
                    self.journal.set_note(NOTE_FAILURES, "0")
                log.info("supervisor PIN accepted for %s", function)
                return PinChecked(True, function)
            failures = self._failures() + 1
            if failures >= self.attempts:
                self.journal.set_note(NOTE_LOCKED_UNTIL, f"{self.clock() + self.lockout:.0f}")
                self.journal.set_note(NOTE_FAILURES, "0")
                log.warning("wrong supervisor PIN for %s (%d in a row): operator functions "
                            "locked for %g min", function, failures, self.lockout / 60)
                return PinChecked(False, function, self._locked_message(self.lockout))
            self.journal.set_note(NOTE_FAILURES, str(failures))
            left = self.attempts - failures
            log.warning("wrong supervisor PIN for %s (%d of %d before the lockout)",
                        function, failures, self.attempts)
            return PinChecked(False, function, f"WRONG PIN - {left} LEFT")
