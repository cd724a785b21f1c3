"""Ports: the small typed interfaces between the runtime and the drivers.

Each driver module in `drivers/` implements one of these. Wiring
(`firmware.runtime.wiring`) picks the implementation from configuration; nothing
else in the firmware knows whether a device is real or simulated.

Async `run` methods read a device until cancelled and report what happened as
core events through `emit`. They never raise for a device problem: they emit
`DeviceFault` (or `CardReadFailed`) and carry on or end cleanly. Blocking
methods (printer, display, pins) raise a subclass of `firmware.errors.DeviceError`
with a clear message; the runtime runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from firmware.core.emv.steps import PinResult, PinStep
from firmware.core.events import Event

Emit = Callable[[Event], None]


class CardReaderPort(Protocol):
    async def run(self, emit: Emit) -> None: ...

    def close(self) -> None: ...


class ChipReaderPort(Protocol):
    """A PC/SC chip reader. `run` watches the reader's state (SCardGetStatusChange, no
    polling loop) and emits ChipInserted / ChipRemoved / ChipReaderFailed; the blocking
    methods (run in a worker thread) raise `firmware.errors.ChipError` subclasses."""

    async def run(self, emit: Emit) -> None: ...

    def power_on(self) -> bytes:
        """Connect to the card (T=0 or T=1, whichever its ATR offers) and return the ATR."""

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """Send one command APDU as the kernel built it (case 4 with Le); return the
        response data and SW1SW2, with T=0's 61xx (GET RESPONSE) and 6Cxx (repeat with
        Le) handled here."""

    def power_off(self) -> None: ...

    def close(self) -> None: ...


class PinPadPort(Protocol):
    """Takes the cardholder's PIN (hardware.md "PIN entry"). Two shapes fit it: the
    terminal's own keypad (firmware/runtime/pinentry.py: keys are routed to it, never to
    the core, while it takes a PIN) and an external certified PIN pad, which returns only
    an encrypted PIN block and its KSN, or sends the offline PIN to the card itself. The
    PIN never leaves it in clear: results say only how the entry went."""

    async def online(self, pan: str, amount: int, *, bypass: bool) -> PinResult:
        """Take a PIN to be checked online: "entered" means a PIN block (field 52) and
        its KSN (field 53) are held for `take_block`."""

    def take_block(self) -> tuple[bytes, bytes] | None:
        """The held (PIN block, KSN), once; then it is forgotten."""

    async def offline(self, step: PinStep,
                      transmit: Callable[[bytes], Awaitable[tuple[bytes, int]]]) -> PinResult:
        """Take a PIN and send it to the card (VERIFY; GET CHALLENGE first when
        enciphered) through `transmit`; the card's answer, not the PIN, comes back."""

    def cancel(self) -> None: ...


class KeypadPort(Protocol):
    async def run(self, emit: Emit) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PrinterStatus:
    online: bool
    paper_out: bool = False
    paper_near_end: bool = False
    cover_open: bool = False

    @property
    def ready(self) -> bool:
        return self.online and not self.paper_out and not self.cover_open

    def problem(self) -> str:
        if self.paper_out:
            return "PAPER OUT"
        if self.cover_open:
            return "PRINTER COVER OPEN"
        if not self.online:
            return "PRINTER OFFLINE"
        return ""


class PrinterPort(Protocol):
    def status(self) -> PrinterStatus: ...

    def print_lines(self, lines: Sequence[str]) -> None:
        """Print the lines (each at most 32 characters) and cut. Raises PrinterError."""

    def close(self) -> None: ...


class DisplayPort(Protocol):
    def show(self, rows: Sequence[str]) -> None:
        """Show four rows of at most 20 characters. Raises DisplayError."""

    def close(self) -> None: ...


class PinsPort(Protocol):
    def set_led(self, on: bool) -> None: ...

    def beep(self, on: bool) -> None: ...

    def power_ok(self) -> bool: ...

    def watch_power(self, changed: Callable[[], None]) -> None:
        """Call `changed()`, from any thread, when the power-fail input changes; raises
        DeviceError where edges cannot be detected (the caller then polls)."""

    def close(self) -> None: ...
