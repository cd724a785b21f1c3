"""HD44780 20x4 character LCD behind a PCF8574 I/O expander on I2C (smbus2).

The PCF8574 drives the controller in 4-bit mode: P0 = RS, P1 = RW, P2 = E,
P3 = backlight, P4..P7 = D4..D7. Each byte goes out as two nibbles, high
first, each latched on the falling edge of E: two PCF8574 bytes a nibble (E
high, then E low with the same data), four a character, the least the
protocol allows (the data may not change on the byte that drops E).

`show` writes only what changed since the last call, character by character:
it keeps the text the controller holds and where its address counter points,
moves the cursor (one "set DDRAM address" instruction, the cost of one
character) over text that stays, and follows the counter as the controller
advances it, so row 0 runs on into row 2 and row 2 into row 1 with no cursor
move (in two-line mode DDRAM 0x13 is followed by 0x14, and 0x27 by 0x40). The
whole change goes out as one I2C write: the PCF8574 takes a stream of bytes,
each one setting its outputs, and every instruction but clear and home (never
sent by `show`) takes 37 us, less than the next nibble's two bytes take on the
bus even at 400 kHz.

After a bus error nothing is known: the cache is dropped and the controller is
initialised again before the next write, so a half-sent byte cannot leave it
out of nibble sync, and a module that lost power meanwhile (blank, back in
8-bit mode) is brought back and given every character again. Retrying a
display that fails is the caller's job (firmware/runtime/display.py): each
call here is one attempt.

The bus belongs to the caller (the battery gauge shares it), so `close` does
not close it.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from smbus2 import i2c_msg

from firmware.errors import DeviceError, DisplayError

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.display")

# PCF8574 bits
_RS = 0x01
_E = 0x04
_BACKLIGHT = 0x08

# HD44780 instructions
_CLEAR = 0x01
_FUNCTION_SET_4BIT_2LINE = 0x28
_DISPLAY_ON = 0x0C
_ENTRY_INCREMENT = 0x06
_SET_DDRAM = 0x80

ROW_OFFSETS = (0x00, 0x40, 0x14, 0x54)

# Characters of the A00 (standard) character ROM beyond plain ASCII, and the
# ASCII codes that ROM draws differently ('\\' is a yen sign, '~' an arrow).
_ROM_EXTRAS = {"¥": 0x5C, "→": 0x7E, "←": 0x7F, "·": 0xA5, "°": 0xDF, "ä": 0xE1,
               "ß": 0xE2, "µ": 0xE4, "ö": 0xEF, "ü": 0xF5, "÷": 0xFD}
_ASCII_LOOKALIKES = {"—": "-", "–": "-", "‐": "-", "‑": "-", "−": "-", "‘": "'", "’": "'",
                     "‚": ",", "“": '"', "”": '"', "„": '"', "…": ".", "\u00a0": " ",
                     "\\": "/", "~": "-", "\t": " "}


class SMBusLike(Protocol):
    """The two smbus2.SMBus methods this driver uses."""

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None: ...

    def i2c_rdwr(self, *i2c_msgs: Any) -> None: ...


def encode_char(ch: str) -> int:
    """The character-ROM code for `ch`: ASCII, a few ROM extras, a look-alike, or '?'."""
    if ch in _ROM_EXTRAS:
        return _ROM_EXTRAS[ch]
    ch = _ASCII_LOOKALIKES.get(ch, ch)
    if " " <= ch <= "}" and ch != "\\":
        return ord(ch)
    base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    if len(base) == 1 and " " <= base <= "}" and base != "\\":
        return ord(base)  # é -> e, Å -> A
    return ord("?")


def encode_row(text: str, cols: int) -> bytes:
    """Pad or cut `text` to `cols` characters and encode it for the character ROM."""
    return bytes(encode_char(ch) for ch in text[:cols].ljust(cols))


def nibble_bytes(value: int, rs: bool) -> list[int]:
    """The four PCF8574 bytes that clock one byte into the controller, high nibble first."""
    flags = _BACKLIGHT | (_RS if rs else 0)
    out: list[int] = []
    for nibble in (value >> 4, value & 0x0F):
        data = (nibble << 4) | flags
        out += [data | _E, data]  # E high, then low: latched on the falling edge
    return out


def next_address(address: int) -> int:
    """Where the controller's address counter goes after a character at `address` in
    two-line mode with increment: 0x00-0x27 and 0x40-0x67, each line running into the
    other."""
    if (address & 0x3F) + 1 >= 0x28:
        return (address & 0x40) ^ 0x40
    return address + 1


class Lcd2004:
    """`DisplayPort` for a 20x4 HD44780 LCD on a PCF8574 backpack."""

    def __init__(self, bus: SMBusLike, address: int = 0x27, cols: int = 20, rows: int = 4) -> None:
        if rows > len(ROW_OFFSETS):
            raise ValueError(f"an HD44780 addresses at most {len(ROW_OFFSETS)} rows, not {rows}")
        if not 0 < cols <= 0x28 - max(ROW_OFFSETS[:rows]) % 0x40:
            raise ValueError(f"{cols} columns do not fit the controller's {rows}-row memory")
        self._bus = bus
        self._address = address
        self._cols = cols
        self._rows = rows
        # every visible character's DDRAM address, in the order the counter runs
        self._cells = sorted(ROW_OFFSETS[r] + c for r in range(rows) for c in range(cols))
        self._held: dict[int, int] | None = None  # DDRAM address -> code the glass shows
        self._counter: int | None = None  # where the address counter points, if known
        self._initialised = False
        self._closed = False
        self._lock = threading.Lock()

    # -- public API -------------------------------------------------------------

    def init(self) -> None:
        """Run the standard power-on initialisation (4-bit, 2 lines, display on, clear)."""
        with self._lock:
            self._guarded(self._init)

    def show(self, rows: Sequence[str]) -> None:
        """Show up to four rows; each is padded or cut to the width of the display."""
        with self._lock:
            if self._closed:
                raise DisplayError("display: show() after close()")
            if len(rows) > self._rows:
                log.warning("display: %d rows given, showing the first %d", len(rows), self._rows)
            wanted: dict[int, int] = {}
            for r in range(self._rows):
                text = encode_row(rows[r] if r < len(rows) else "", self._cols)
                for c, code in enumerate(text):
                    wanted[ROW_OFFSETS[r] + c] = code
            self._guarded(lambda: self._write(wanted))

    def close(self) -> None:
        """Stop using the display; the text shown stays on the glass."""
        with self._lock:
            self._closed = True
            self._forget()

    # -- internals --------------------------------------------------------------

    def _forget(self) -> None:
        self._held = None
        self._counter = None

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            self._forget()
            self._initialised = False
            raise DisplayError(
                f"display: I2C write to {self._address:#04x} failed: {exc}"
            ) from exc

    def _init(self) -> None:
        self._initialised = False
        self._forget()
        self._bus.write_byte(self._address, _BACKLIGHT)  # all lines low, E low
        time.sleep(0.05)  # more than 40 ms after power reaches 2.7 V
        # The controller may be in 8-bit mode or half-way through a 4-bit byte:
        # three single-nibble "8-bit function set" writes bring it to a known
        # state, the fourth switches to 4-bit mode.
        for nibble, pause in ((0x3, 0.0045), (0x3, 0.00015), (0x3, 0.00015), (0x2, 0.00015)):
            self._send([(nibble << 4) | _BACKLIGHT | _E, (nibble << 4) | _BACKLIGHT])
            time.sleep(pause)
        # Each instruction takes 37 us, less than one I2C byte: no pauses needed.
        stream: list[int] = []
        for command in (_FUNCTION_SET_4BIT_2LINE, _DISPLAY_ON, _ENTRY_INCREMENT, _CLEAR):
            stream += nibble_bytes(command, rs=False)
        self._send(stream)
        time.sleep(0.002)  # clear takes 1.52 ms
        wire.debug(">>> init 0x33 0x32 0x28 0x0C 0x06 0x01")
        # Cleared, but a module that glitched may not have taken it: every character of
        # the next screen is written, so the glass is right whatever happened.
        self._held = {}
        self._counter = 0x00
        self._initialised = True

    def _write(self, wanted: dict[int, int]) -> None:
        if not self._initialised or self._held is None:
            self._init()
        held = self._held
        assert held is not None
        stream, counter, moves, chars = self._changes(held, wanted, self._counter)
        if not stream:
            return
        self._send(stream)
        wire.debug(">>> %d character(s), %d cursor move(s): %d bytes in one write",
                   chars, moves, len(stream))
        held.update(wanted)
        self._counter = counter

    def _changes(self, held: dict[int, int], wanted: dict[int, int],
                counter: int | None) -> tuple[list[int], int | None, int, int]:
        """The PCF8574 bytes that turn `held` into `wanted` with the counter at `counter`:
        (stream, the counter after it, cursor moves, characters)."""
        stream: list[int] = []
        moves = chars = 0
        for cell in self._cells:
            code = wanted[cell]
            if held.get(cell) == code:
                continue
            if counter != cell:  # one instruction: as dear as one character
                stream += nibble_bytes(_SET_DDRAM | cell, rs=False)
                moves += 1
            stream += nibble_bytes(code, rs=True)
            chars += 1
            counter = next_address(cell)
        return stream, counter, moves, chars

    def _send(self, stream: Iterable[int]) -> None:
        self._bus.i2c_rdwr(i2c_msg.write(self._address, list(stream)))


def open_smbus(bus_number: int, *, who: str = "display",
               error: type[DeviceError] = DisplayError) -> Any:
    """Open /dev/i2c-N with smbus2; a missing or forbidden device becomes `error` (a
    DisplayError by default), its message naming `who` needed it."""
    import smbus2

    path = f"/dev/i2c-{bus_number}"
    try:
        return smbus2.SMBus(bus_number)
    except FileNotFoundError as exc:
        raise error(f"{who}: {path} not found (is I2C enabled, e.g. dtparam=i2c_arm=on?)") from exc
    except PermissionError as exc:
        raise error(f"{who}: no permission to open {path} (group i2c?)") from exc
    except OSError as exc:
        raise error(f"{who}: cannot open {path}: {exc}") from exc
