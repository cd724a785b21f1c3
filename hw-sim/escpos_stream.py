"""Decoder of the ESC/POS byte stream a receipt printer receives.

`EscPosDecoder.feed` splits the stream into commands, each consumed with its
parameter bytes (fixed lengths from the ESC/POS reference, counted or
NUL-terminated data for tab stops, images and barcodes). A command that is not
all there yet waits for the next `feed`. Runs of printable bytes become text,
decoded in the character code table chosen with ESC t; ESC @ goes back to
table 0 (PC437), as a real printer does.

The table numbers and their characters are those of python-escpos's default
profile (its `codePages`), byte by byte as escpos encodes them: each byte is one
character in every table. A table not listed here is shown as U+FFFD for every
byte from 0x80 up, so text sent in a table the printer does not know reads
visibly wrong.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
# Bytes of parameters after ESC x / GS x / FS x / DLE x, for fixed-length commands.
_ESC_PARAMS = {**dict.fromkeys(b"!-3EGJMRTUVadert%A+ =K{", 1), **dict.fromkeys(b"@2<LimS", 0),
               **dict.fromkeys(b"$Bcf?\\", 2), ord("p"): 3, ord("W"): 8}
_GS_PARAMS = {**dict.fromkeys(b"!BHIa|bfhwr", 1), **dict.fromkeys(b"LWP$\\", 2)}
_FS_PARAMS = {**dict.fromkeys(b".&", 0), ord("C"): 1, ord("p"): 2, ord("S"): 2}
_DLE_PARAMS = {0x04: 1, 0x05: 1, 0x14: 3}
# ESC t n -> Python codec, as python-escpos's default profile numbers them (1 is its
# CP932, used single-byte: half-width katakana). Its tables 11, 12, 30, 31, 41-43 and 53
# have no Python codec and are left out; escpos never picks 11, 12, 41-43 or 53 itself.
CODE_TABLES = {
    0: "cp437", 1: "cp932", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865", 13: "cp857",
    14: "cp737", 15: "iso8859_7", 16: "cp1252", 17: "cp866", 18: "cp852", 19: "cp858",
    21: "cp874", 32: "cp720", 33: "cp775", 34: "cp855", 35: "cp861", 36: "cp862",
    37: "cp864", 38: "cp869", 39: "iso8859_2", 40: "iso8859_15", 44: "cp1125",
    45: "cp1250", 46: "cp1251", 47: "cp1253", 48: "cp1254", 49: "cp1255", 50: "cp1256",
    51: "cp1257", 52: "cp1258",
}
_ASCII = "".join(map(chr, range(128)))
_CONTROL = re.compile(rb"[\x00-\x1f]")  # ends a run of text


@functools.cache
def code_table(n: int) -> str | None:
    """The 256 characters of table `n` (U+FFFD where a byte has none), None if unknown."""
    codec = CODE_TABLES.get(n)
    if codec is None:
        return None
    return _ASCII + "".join(bytes([b]).decode(codec, errors="replace") for b in range(128, 256))


@dataclass(frozen=True)
class Command:
    """One decoded unit of the stream: `name` is "text", "lf", "ESC x", "GS x"..."""

    name: str
    args: bytes = b""
    text: str = ""


class EscPosDecoder:
    """Splits an ESC/POS byte stream into commands; keeps incomplete ones for later."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.codepage = 0  # the table chosen with ESC t; ESC @ resets it to 0
        self._unknown_reported: set[int] = set()

    def feed(self, data: bytes) -> list[Command]:
        self._buf += data
        buf, pos, out = self._buf, 0, []
        while pos < len(buf):
            size = self._command_size(buf, pos)
            if size is None:
                break  # wait for the rest of the command
            out.append(self._command(bytes(buf[pos:pos + size])))
            pos += size
        del buf[:pos]
        return out

    def _command(self, raw: bytes) -> Command:
        first = raw[0]
        if first >= 0x20:
            return Command("text", raw, self._decode(raw))
        if first in (ESC, GS, FS, DLE):
            name = {ESC: "ESC", GS: "GS", FS: "FS", DLE: "DLE"}[first] + " " + chr(raw[1])
            if name == "ESC @":
                self.codepage = 0
            elif name == "ESC t":
                self.codepage = raw[2]
            return Command(name, raw[2:])
        return Command({0x0A: "lf", 0x09: "ht", 0x0C: "lf"}.get(first, "ctl"), raw)

    def _decode(self, raw: bytes) -> str:
        table = code_table(self.codepage)
        if table is None:
            if self.codepage not in self._unknown_reported and max(raw) >= 0x80:
                self._unknown_reported.add(self.codepage)
                log.warning("printer sim: unknown character code table %d (ESC t %d): "
                            "bytes 0x80-0xFF print as U+FFFD", self.codepage, self.codepage)
            return "".join(chr(b) if b < 0x80 else "\ufffd" for b in raw)
        if raw.isascii():  # the same in every table
            return raw.decode("ascii")
        return "".join(table[b] for b in raw)

    @staticmethod
    def _command_size(buf: bytearray, pos: int = 0) -> int | None:
        """Length of the command at `pos` in `buf`, None if it is not all there yet."""
        first = buf[pos]
        if first >= 0x20:
            ctl = _CONTROL.search(buf, pos)
            return (ctl.start() if ctl else len(buf)) - pos
        if first not in (ESC, GS, FS, DLE):
            return 1
        n = len(buf) - pos
        if n < 2:
            return None
        op = buf[pos + 1]
        table = {ESC: _ESC_PARAMS, GS: _GS_PARAMS, FS: _FS_PARAMS, DLE: _DLE_PARAMS}[first]
        if op in table:
            size = 2 + table[op]
        elif first == ESC and op == ord("D"):  # tab stops, NUL-terminated
            end = buf.find(0, pos + 2)
            size = end - pos + 1 if end >= 0 else n + 1
        elif first == ESC and op == ord("*"):  # bit image: m nL nH data
            size = 5 if n < 5 else \
                5 + (buf[pos + 3] + 256 * buf[pos + 4]) * (1 if buf[pos + 2] < 2 else 3)
        elif first == GS and op == ord("V"):  # cut: m, or m n for 65, 66, 97, 98, 103, 104
            size = 3 if n < 3 else 3 + (buf[pos + 2] in (65, 66, 97, 98, 103, 104))
        elif first == GS and op == ord("k"):  # barcode: m data NUL, or m n data
            if n < 4:
                return None
            end = buf.find(0, pos + 3)
            size = (end - pos + 1 if end >= 0 else n + 1) if buf[pos + 2] <= 6 \
                else 4 + buf[pos + 3]
        elif first == GS and op == ord("v"):  # raster: 0 m xL xH yL yH data
            size = 8 if n < 8 else 8 + (buf[pos + 4] + 256 * buf[pos + 5]) \
                * (buf[pos + 6] + 256 * buf[pos + 7])
        elif first == GS and op == ord("("):  # GS ( fn pL pH data
            size = 5 if n < 5 else 5 + buf[pos + 3] + 256 * buf[pos + 4]
        elif first == GS and op == ord("8"):  # GS 8 L p1 p2 p3 p4 data
            size = 7 if n < 7 else 7 + int.from_bytes(buf[pos + 3:pos + 7], "little")
        else:
            log.warning("printer sim: unknown command 0x%02X 0x%02X, skipped", first, op)
            size = 2
        return size if size <= n else None
