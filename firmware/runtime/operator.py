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
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from firmware.core.events import PinChecked
from firmware.runtime.supervisor import is_fatal
from firmware.pinhash import PIN_RE, PIN_WHAT, PinHash, hash_pin, parse_pin_hash, verify_pin

# the stored form lives in firmware/pinhash.py; these names are also answered here
__all__ = ["PIN_RE", "PIN_WHAT", "OperatorGuard", "PinHash", "hash_pin", "parse_pin_hash",
           "verify_pin"]

log = logging.getLogger("posterm.operator")

# journal notes (firmware/runtime/journal_base.py meta, "note:" keys)
NOTE_FAILURES = "pin_failures"
NOTE_LOCKED_UNTIL = "pin_locked_until"  # epoch seconds, wall clock


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

    async def answer(self, pin: str, function: str) -> PinChecked:
        """`check`, and an answer on every path: a check that fails unexpectedly refuses
        (a journal failure still stops the terminal)."""
        try:
            return await self.check(pin, function)
        except Exception as exc:
            if is_fatal(exc):
                raise
            log.error("supervisor PIN check for %s failed: %s", function, type(exc).__name__)
            return PinChecked(False, function, "PIN CHECK FAILED")

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
