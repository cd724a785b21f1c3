"""The modem's line protocol (SIM7600-style AT), sans I/O: bytes in, items out.

`AtParser.feed(bytes)` returns `Line`, `Prompt`, `Data` and `Garbage` items in
the order they arrived, whatever the split of the stream into reads. `Data`
(the bytes after `+IPD<n>`) carries card data: its repr shows only the length,
and `Garbage` keeps only a short hex preview.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_IPD = 1500
MAX_LINE = 1024
HEX_PREVIEW = 8  # bytes of garbage shown in a log line
CR, LF = 0x0D, 0x0A
_IPD = re.compile(r"\+IPD(\d{1,5})")


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class Prompt:
    """The `>` that asks for the bytes of AT+CIPSEND."""


@dataclass(frozen=True)
class Data:
    """The n bytes after `+IPD<n>`."""

    payload: bytes

    def __repr__(self) -> str:  # never the bytes: they carry card data
        return f"Data({len(self.payload)} bytes)"


@dataclass(frozen=True)
class Garbage:
    """Bytes that are no line of the protocol: a reason, the length and a short preview."""

    reason: str
    length: int
    preview: str


Item = Line | Prompt | Data | Garbage


class AtParser:
    """Cut the modem's byte stream into lines, the `>` prompt and +IPD data (sans I/O).

    Lines end with CR LF (a bare CR or LF is accepted too: an echo ends with CR
    alone). `+IPD<n>` CR LF is followed by exactly n raw bytes, which may hold
    anything (CR, LF, "OK"): they become one `Data` and are never read as
    lines. `>` at the start of a line is a prompt only while `expect_prompt`
    is set (after AT+CIPSEND was written). A line that is not printable ASCII,
    longer than `MAX_LINE`, or a bad +IPD length is reported as `Garbage`, and
    parsing goes on with the next line.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._cr = False  # the last byte was a CR that ended a line
        self._discarding = False  # an overlong line: drop up to its end
        self._data_left = 0
        self._data = bytearray()
        self._skip_lf = False  # the LF of "+IPD<n>\r\n", before the data
        self.expect_prompt = False

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        i, n = 0, len(data)
        while i < n:
            if self._data_left:
                if self._skip_lf:
                    self._skip_lf = False
                    if data[i] == LF:
                        i += 1
                        continue
                take = data[i:i + self._data_left]
                i += len(take)
                self._data += take
                self._data_left -= len(take)
                if not self._data_left:
                    out.append(Data(bytes(self._data)))
                    self._data.clear()
                continue
            byte = data[i]
            i += 1
            if self._cr:
                self._cr = False
                if byte == LF:
                    continue
            if byte in (CR, LF):
                self._end_line(out, by_cr=byte == CR)
                continue
            if self._discarding:
                continue
            if not self._buf and byte == 0x3E and self.expect_prompt:  # ">"
                self.expect_prompt = False
                out.append(Prompt())
                continue
            self._buf.append(byte)
            if len(self._buf) > MAX_LINE:
                out.append(Garbage(f"a line longer than {MAX_LINE} bytes", len(self._buf),
                                   preview(self._buf)))  # fmt: skip
                self._buf.clear()
                self._discarding = True
        return out

    def _end_line(self, out: list[Item], *, by_cr: bool) -> None:
        self._cr = by_cr
        raw, self._discarding = bytes(self._buf), False
        self._buf.clear()
        if not raw:
            return
        if any(b < 0x20 or b > 0x7E for b in raw):
            out.append(Garbage("bytes that are not a text line", len(raw), preview(raw)))
            return
        text = raw.decode("ascii").strip()
        if not text:
            return
        match = _IPD.fullmatch(text)
        if match is None:
            out.append(Line(text))
            return
        size = int(match.group(1))
        if not 0 < size <= MAX_IPD:
            out.append(Garbage(f"+IPD with a length of {size} (1..{MAX_IPD})", len(raw), ""))
            return
        self._data_left = size
        self._skip_lf = by_cr
        self._cr = False


def preview(data: bytes | bytearray) -> str:
    head = bytes(data[:HEX_PREVIEW]).hex(" ")
    return head + (" ..." if len(data) > HEX_PREVIEW else "")
