"""The terminal's own keypad as the PIN pad (firmware.ports.PinPadPort).

While it takes a PIN, the loop hands it every key before the core sees any (`takes`):
the digits go into a bytearray here and nowhere else; the core hears only how many
there are (PinKeyed) and how the entry ended (PinTaken, from whoever asked). OK enters
4 to 12 digits (none: a bypass, where the card's CVM and the configuration allow it),
CLEAR erases, CANCEL stops, and an entry left alone ends after the timeout.

An online PIN becomes an ISO 9564-1 PIN block under DUKPT at once (PinKeys: the KSN's
counter journaled before the block exists), held for the request and given once. An
offline PIN goes to the card at once: in plaintext (VERIFY P2 80, EMV Book 3 6.5.12) or
enciphered under the card's public key after GET CHALLENGE (P2 88, Book 2 7.2). Every
buffer that held digits is overwritten after use. hardware.md: a Linux board is not a
PCI PTS device; this is for development, tests and the regions that allow it, and an
external certified PIN pad takes its place behind the same port.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from pathlib import Path

from firmware.core.emv.steps import PinResult, PinStep
from firmware.core.events import Event, KeyPressed, PinKeyed
from firmware.errors import KeyStoreError
from firmware.runtime.pinkeys import PinKeys, key_path

log = logging.getLogger("posterm.pin")

MIN_DIGITS, MAX_DIGITS = 4, 12
Transmit = Callable[[bytes], Awaitable[tuple[bytes, int]]]


def offline_block(pin: bytearray) -> bytearray:
    """EMV's plaintext offline PIN block (Book 3 6.5.12, ISO 9564 format 2): control 2,
    the PIN's length, its digits, F to 8 bytes."""
    nibbles = [0x2, len(pin), *(d - 0x30 for d in pin)]
    nibbles += [0xF] * (16 - len(nibbles))
    block = bytearray((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, 16, 2))
    nibbles[:] = [0] * len(nibbles)
    return block


def encipher(block: bytes | bytearray, challenge: bytes, key: tuple[bytes, int]) -> bytes:
    """Book 2 7.2: 7F || PIN block || ICC unpredictable number || random pad, to the
    key's length, under the card's public key (RSA, the public operation)."""
    modulus, exponent = key
    n = len(modulus)
    data = b"\x7f" + bytes(block) + challenge + secrets.token_bytes(n - 17)
    value = pow(int.from_bytes(data, "big"), exponent, int.from_bytes(modulus, "big"))
    return value.to_bytes(n, "big")


def verify_result(sw: int) -> PinResult:
    """The card's answer to VERIFY (Book 3 6.5.12)."""
    if sw == 0x9000:
        return PinResult("verified", sw=sw)
    if sw & 0xFFF0 == 0x63C0:
        left = sw & 0x0F
        return PinResult("wrong" if left else "blocked", tries_left=left, sw=sw)
    if sw in (0x6983, 0x6984):
        return PinResult("blocked", tries_left=0, sw=sw)
    return PinResult("failed", sw=sw)


class KeypadPinPad:
    """PIN entry on the terminal's keypad, behind the PIN pad port."""

    def __init__(self, emit: Callable[[Event], None], keys: Any, *, timeout: float = 30.0,
                 min_digits: int = MIN_DIGITS, max_digits: int = MAX_DIGITS) -> None:
        self.emit, self.keys, self.timeout = emit, keys, timeout
        self.min_digits, self.max_digits = min_digits, max_digits
        self._digits = bytearray()
        self._done: asyncio.Future[str] | None = None
        self._bypass = False
        self._held: tuple[bytes, bytes] | None = None

    # -- the keys ---------------------------------------------------------------------
    def takes(self, event: Event) -> bool:
        """The loop's question for every event: a key while a PIN is being taken is this
        pad's, and goes no further."""
        if not isinstance(event, KeyPressed) or self._done is None or self._done.done():
            return False
        self._key(event.key)
        return True

    def _key(self, key: str) -> None:
        assert self._done is not None
        if key.isdigit():
            if len(self._digits) < self.max_digits:
                self._digits.append(ord(key))
            self.emit(PinKeyed(len(self._digits)))
        elif key == "CLEAR":
            self._wipe()
            self.emit(PinKeyed(0))
        elif key == "CANCEL":
            self._done.set_result("cancelled")
        elif key == "OK":
            if self.min_digits <= len(self._digits) <= self.max_digits:
                self._done.set_result("entered")
            elif not self._digits and self._bypass:
                self._done.set_result("bypassed")
            else:
                self.emit(PinKeyed(len(self._digits),
                                   f"{self.min_digits} TO {self.max_digits} DIGITS"))

    def _wipe(self) -> None:
        self._digits[:] = bytes(len(self._digits))
        self._digits.clear()

    async def _take(self, bypass: bool) -> str:
        self._wipe()
        self._bypass = bypass
        self._done = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(self._done), self.timeout)
        except TimeoutError:
            return "timeout"
        finally:
            if not self._done.done():
                self._done.cancel()
            self._done = None

    # -- the port ---------------------------------------------------------------------
    async def online(self, pan: str, amount: int, *, bypass: bool) -> PinResult:
        if self.keys is None or self.keys.exhausted:
            why = "no DUKPT key loaded" if self.keys is None else "the KSN counter is spent"
            log.error("online PIN not possible: %s", why)
            return PinResult("no_pinpad")
        status = await self._take(bypass)
        try:
            if status != "entered":
                return PinResult(status)
            try:
                self._held = self.keys.online_block(self._digits, pan)
            except (KeyStoreError, ValueError) as exc:  # no block: the PIN pad failed
                log.error("online PIN block not made: %s", exc)
                return PinResult("failed")
            log.info("online PIN entered: PIN block made under KSN counter %d",
                     self.keys.counter())
            return PinResult("entered")
        finally:
            self._wipe()

    def take_block(self) -> tuple[bytes, bytes] | None:
        held, self._held = self._held, None
        return held

    async def offline(self, step: PinStep, transmit: Transmit) -> PinResult:
        status = await self._take(step.bypass)
        block = bytearray()
        try:
            if status != "entered":
                return PinResult(status)
            block = offline_block(self._digits)
            self._wipe()
            if step.kind == "offline_enciphered":
                if step.key is None:
                    return PinResult("failed")
                challenge, sw = await transmit(bytes.fromhex("0084000008"))  # GET CHALLENGE
                if sw != 0x9000 or len(challenge) != 8:
                    return PinResult("failed", sw=sw)
                data, p2 = encipher(block, challenge, step.key), 0x88
            else:
                data, p2 = bytes(block), 0x80
            _, sw = await transmit(bytes([0x00, 0x20, 0x00, p2, len(data)]) + data)
            return verify_result(sw)
        finally:
            self._wipe()
            block[:] = bytes(len(block))

    def cancel(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result("cancelled")
        self._held = None


def pin_keys(cfg: Any, journal: Any) -> PinKeys | None:
    """The DUKPT key store [pin] names (firmware/runtime/pinkeys.py), or None when no
    key is loaded: the PIN pad then answers "PIN pad not working" to an online PIN, and
    `posterm status` says the key is missing."""
    try:
        return PinKeys.load(key_path(cfg.pin.key_file, Path(cfg.state_dir)), journal,
                            cfg.pin.method)
    except (KeyStoreError, OSError, ValueError) as exc:  # said once; offline PIN goes on
        log.error("online PIN disabled: %s", exc)
        return None


def keypad_pinpad(cfg: Any, journal: Any, emit: Callable[[Event], None]) -> KeypadPinPad:
    """The keypad as the PIN pad, as [pin] configures it."""
    return KeypadPinPad(emit, pin_keys(cfg, journal), timeout=cfg.pin.entry_timeout,
                        min_digits=cfg.pin.min_length, max_digits=cfg.pin.max_length)
