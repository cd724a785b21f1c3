"""Model of an HD44780 20x4 character LCD behind a PCF8574 I2C expander.

`Hd44780Sim.feed` takes every byte written to the PCF8574 (P0 RS, P1 RW, P2 E,
P3 backlight, P4..P7 = D4..D7). On each falling edge of E the controller
latches D4..D7. It powers up in 8-bit mode, where D0..D3 (not wired) read as
zero, so each single nibble is a whole instruction; after a function set with
DL = 0 it takes two nibbles per byte, high first. A function set with DL = 1
returns it to 8-bit mode, which is how the standard initialisation resyncs a
controller left half-way through a byte.

DDRAM is the real 80 bytes: 0x00-0x27 and 0x40-0x67 in two-line mode,
0x00-0x4F in one-line mode. The four visible rows of a 20x4 module start at
0x00, 0x40, 0x14 and 0x54. Display shifts are not modelled. Character codes are
decoded with the standard A00 character ROM.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from hwsim.watch import notify

log = logging.getLogger(__name__)

COLS = 20
ROW_STARTS = (0x00, 0x40, 0x14, 0x54)

_RS, _RW, _E, _BACKLIGHT = 0x01, 0x02, 0x04, 0x08

# A00 ROM codes that are not plain ASCII.
_ROM_CHARS = {0x5C: "¥", 0x7E: "→", 0x7F: "←", 0xA5: "·", 0xDF: "°", 0xE1: "ä",
              0xE2: "ß", 0xE4: "µ", 0xEF: "ö", 0xF5: "ü", 0xFD: "÷"}


def rom_char(code: int) -> str:
    """What the A00 character ROM draws for `code` ('?' for codes not modelled)."""
    if code in _ROM_CHARS:
        return _ROM_CHARS[code]
    if 0x20 <= code <= 0x7D:
        return chr(code)
    return "?"


class Hd44780Sim:
    """The controller's state, driven by the byte stream written to the expander."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # called after each `feed` and power cycle (hwsim's web page redraws from it)
        self.on_change: Callable[[], None] | None = None
        self._power_on()

    def power_cycle(self) -> None:
        """The module lost power and got it back: blank, display off, in 8-bit mode,
        waiting for the initialisation (the text shown before is gone)."""
        with self._lock:
            self._power_on()
        self._changed()

    def _changed(self) -> None:
        notify(self.on_change, "hd44780")

    def _power_on(self) -> None:
        # The PCF8574 powers up with every output high: E and RW high, so the
        # first write (E low) is a falling edge of a read cycle, which is harmless.
        self._last = 0xFF
        self._ddram = bytearray(b" " * 0x80)
        self._cgram = bytearray(64)
        self._address = 0
        self._to_cgram = False
        self._eight_bit = True
        self._high_nibble: int | None = None  # first half of a byte in 4-bit mode
        self._two_lines = False
        self._increment = True
        self.backlight = True
        self.display_on = False
        self.cursor_on = False
        self.blink_on = False
        self.instructions = 0  # count of instructions executed, for tests
        self.characters = 0  # count of data bytes written, for tests

    # -- input ------------------------------------------------------------------

    def feed(self, data: bytes | Iterable[int]) -> None:
        """Apply bytes written to the PCF8574, in order."""
        with self._lock:
            for value in data:
                value &= 0xFF
                if self._last & _E and not value & _E:
                    self._latch(self._last)
                self._last = value
                self.backlight = bool(value & _BACKLIGHT)
        self._changed()

    def _latch(self, pins: int) -> None:
        if pins & _RW:
            return  # a read cycle: the firmware's driver never reads, nothing changes
        rs = bool(pins & _RS)
        nibble = pins >> 4
        if self._eight_bit:
            self._execute(rs, nibble << 4)  # D0..D3 are not wired: they read as 0
        elif self._high_nibble is None:
            self._high_nibble = nibble
        else:
            value = (self._high_nibble << 4) | nibble
            self._high_nibble = None
            self._execute(rs, value)

    def _execute(self, rs: bool, value: int) -> None:
        if rs:
            self._write_data(value)
            return
        self.instructions += 1
        if value & 0x80:  # set DDRAM address
            self._address = self._wrap(value & 0x7F)
            self._to_cgram = False
        elif value & 0x40:  # set CGRAM address
            self._address = value & 0x3F
            self._to_cgram = True
        elif value & 0x20:  # function set: DL (bit 4), N (bit 3)
            self._eight_bit = bool(value & 0x10)
            self._high_nibble = None
            self._two_lines = bool(value & 0x08)
        elif value & 0x10:  # cursor or display shift: not modelled
            log.debug("hd44780: shift 0x%02X ignored", value)
        elif value & 0x08:  # display control: D, C, B
            self.display_on = bool(value & 0x04)
            self.cursor_on = bool(value & 0x02)
            self.blink_on = bool(value & 0x01)
        elif value & 0x04:  # entry mode: I/D (bit 1); S (display shift) not modelled
            self._increment = bool(value & 0x02)
        elif value & 0x02:  # return home
            self._address, self._to_cgram = 0, False
        elif value & 0x01:  # clear display
            self._ddram[:] = b" " * 0x80
            self._address, self._to_cgram, self._increment = 0, False, True

    def _write_data(self, value: int) -> None:
        self.characters += 1
        if self._to_cgram:
            self._cgram[self._address] = value
            self._address = (self._address + (1 if self._increment else -1)) & 0x3F
            return
        self._ddram[self._address] = value
        self._address = self._step(self._address)

    def _wrap(self, address: int) -> int:
        """An address as the address counter holds it (invalid ones fold into range)."""
        if self._two_lines:
            return (address & 0x40) | ((address & 0x3F) % 0x28)
        return address % 0x50

    def _step(self, address: int) -> int:
        if self._two_lines:
            line, col = address & 0x40, address & 0x3F
            col += 1 if self._increment else -1
            if col >= 0x28:
                return line ^ 0x40
            if col < 0:
                return (line ^ 0x40) | 0x27
            return line | col
        return (address + (1 if self._increment else -1)) % 0x50

    # -- what a person sees -----------------------------------------------------

    def rows(self) -> list[str]:
        """The four rows of 20 characters as they appear on the glass."""
        with self._lock:
            blank = " " * COLS
            if not self.display_on:
                return [blank] * len(ROW_STARTS)
            out = []
            for start in ROW_STARTS:
                if not self._two_lines and start & 0x40:
                    out.append(blank)  # one-line mode drives only the first line's commons
                    continue
                out.append("".join(rom_char(c) for c in self._ddram[start:start + COLS]))
            return out

    @property
    def eight_bit_mode(self) -> bool:
        with self._lock:
            return self._eight_bit


class I2cNack(ValueError):
    """A transfer the device did not acknowledge: the firmware's bus call fails with
    EREMOTEIO, as the kernel reports a NACK."""


class BusFault:
    """I2C errors injected on one device (the display's expander).

    While set, every transfer to the device is refused (`check` raises I2cNack);
    with a `count`, only that many transfers are refused and the device then
    answers again by itself. `power_loss` is a module that lost its supply: the
    controller forgets its text and mode, so when it answers again it shows
    nothing until it is initialised afresh.
    """

    def __init__(self, address: int, lcd: Hd44780Sim) -> None:
        self._address = address
        self._lcd = lcd
        self._lock = threading.Lock()
        self._on = False
        self._left: int | None = None  # transfers still to refuse; None: until cleared
        self.refused = 0  # transfers refused since the fault was set
        self.on_change: Callable[[], None] | None = None  # set, cleared, or ran out

    def _changed(self) -> None:
        notify(self.on_change, "display fault")

    @property
    def active(self) -> bool:
        with self._lock:
            return self._on

    def set(self, *, count: int = 0, power_loss: bool = False) -> None:
        """Refuse the next `count` transfers (0: every transfer until `clear`)."""
        if count < 0:
            raise ValueError(f"display_fault: count must be 0 or more, not {count}")
        with self._lock:
            self._on, self._left, self.refused = True, count or None, 0
        if power_loss:
            self._lcd.power_cycle()
        self._changed()
        log.info("display at 0x%02x: I2C errors %s%s", self._address,
                 f"for {count} transfer(s)" if count else "until cleared",
                 ", module lost power" if power_loss else "")

    def clear(self) -> int:
        """Answer again; the number of transfers refused while the fault was set."""
        with self._lock:
            refused, self._on, self._left = self.refused, False, None
        self._changed()
        log.info("display at 0x%02x answers again (%d transfer(s) refused)",
                 self._address, refused)
        return refused

    def check(self) -> None:
        """Raise I2cNack if this transfer is to fail."""
        ended = False
        with self._lock:
            if not self._on:
                return
            self.refused += 1
            if self._left is not None:
                self._left -= 1
                if self._left <= 0:
                    self._on, self._left, ended = False, None, True
        if ended:
            self._changed()
        raise I2cNack(f"Remote I/O error: no ACK from 0x{self._address:02x}")
