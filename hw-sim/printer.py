"""Model of a 58 mm ESC/POS thermal receipt printer on TCP (like port 9100).

Reception and printing are separate, as in a real printer: each connection's
reader answers the real-time status requests DLE EOT n at once and puts every
other byte into the one print buffer; a single worker decodes that buffer
(`hwsim.escpos_stream`) and "prints" it, taking `slow_seconds` per line when asked.
While the paper is out, the cover open or the printer offline, decoded data is
thrown away instead of printed, and GS r (status in sequence) goes unanswered,
as a stopped printer would leave it; `discarded()` counts the text lines and
cuts that arrived then, so a test can tell that nothing came out.

The real-time status answers follow the ESC/POS reference for DLE EOT n:
n=1 printer status (bit 3 offline: set whenever printing is stopped), n=2
offline cause (bit 2 cover open, bit 5 stopped by paper end, bit 6 error), n=3
error cause (bit 6 recoverable error), n=4 roll paper sensor (bits 2-3 near end,
bits 5-6 paper out; an empty roll trips the near-end sensor too). Every answer
has bits 1 and 4 set. A muted printer (powered off behind its interface, a
frozen controller) answers nothing at all. `load_paper()` is a person putting
in a fresh roll: paper out and near end both end, and a receipt cut short by the
end of the old roll goes out with it (`torn_off()`).

`received()` counts the chunks and bytes of print data as they came off the
connection (one write of a driver on loopback arrives as one chunk), so a test or
benchmark can see how a driver sends a receipt.

`receipts()` lists what was cut off, `partial()` what is on the paper above
the cutter, as Unicode text: each byte read in the character code table the
printer had selected at the time (ESC t, back to table 0 on ESC @), so text
sent in the wrong table reads wrong here too. Public methods are safe to call
from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from hwsim.escpos_stream import DLE, Command, EscPosDecoder
from hwsim.watch import notify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrintedLine:
    """One line on the paper, with the style it was printed in."""

    text: str
    bold: bool = False
    double_height: bool = False
    double_width: bool = False
    font_b: bool = False  # the smaller font (9 x 17 dots instead of 12 x 24)

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "bold": self.bold, "double_height": self.double_height,
                "double_width": self.double_width, "font_b": self.font_b}


class PrinterSim:
    """A receipt printer: paper, cutter, status and fault injection, served over TCP."""

    def __init__(self, columns: int = 32, columns_font_b: int = 42) -> None:
        self._lock = threading.Lock()
        self._columns = (columns, columns_font_b)
        self._decoder = EscPosDecoder()
        self._receipts: list[list[PrintedLine]] = []
        self._paper: list[PrintedLine] = []  # printed lines not yet cut
        self._torn: list[list[PrintedLine]] = []  # uncut ends of rolls taken out
        self._line = ""  # the line buffer, not yet printed
        self._paper_out = self._cover_open = self._offline = self._mute = False
        self._paper_near_end = False
        self._slow = 0.0
        self._discarded_lines = self._discarded_cuts = 0
        self._received_chunks = self._received_bytes = 0  # print data, as it came in
        self._reset_modes()
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[tuple[asyncio.StreamWriter, bytes]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # called on the event loop when paper comes out or the state changes (hwsim's page)
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        notify(self.on_change, "printer sim")

    # -- server -----------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for connections; returns the bound port."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._print_worker())
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("printer sim: listening on %s:%d", host, bound)
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None
        self._worker = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        carry = b""
        try:
            while data := await reader.read(65536):
                data, carry = carry + data, b""
                kept = bytearray()
                i = 0
                while (dle := data.find(DLE, i)) >= 0:  # real-time requests are answered now
                    if data[dle + 1:dle + 2] not in (b"\x04", b""):
                        kept += data[i:dle + 1]  # DLE starting another command: print data
                        i = dle + 1
                        continue
                    kept += data[i:dle]
                    if dle + 2 >= len(data):
                        carry = data[dle:]  # DLE or DLE EOT at the end: wait for more
                        i = len(data)
                        break
                    self._answer_realtime(writer, data[dle + 2])
                    i = dle + 3
                kept += data[i:]
                if kept and self._queue is not None:
                    with self._lock:
                        self._received_chunks += 1
                        self._received_bytes += len(kept)
                    self._queue.put_nowait((writer, bytes(kept)))
        except ConnectionError as exc:
            log.info("printer sim: connection lost: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer_realtime(self, writer: asyncio.StreamWriter, n: int) -> None:
        with self._lock:
            if self._mute:
                return
            answer = realtime_status(n, paper_out=self._paper_out, cover_open=self._cover_open,
                                     offline=self._offline, near_end=self._paper_near_end)
        if answer is not None and not writer.is_closing():
            writer.write(bytes([answer]))

    async def _print_worker(self) -> None:
        assert self._queue is not None
        while True:
            writer, data = await self._queue.get()
            for command in self._decoder.feed(data):
                try:
                    lines = self._apply(command, writer)
                except Exception:  # a model bug must not stop the printer
                    log.exception("printer sim: cannot apply %s", command.name)
                    continue
                with self._lock:
                    slow = self._slow
                if lines and slow > 0:
                    self._changed()  # each slow line as it comes out
                    await asyncio.sleep(slow * lines)
            self._changed()

    # -- printing ---------------------------------------------------------------

    def _reset_modes(self) -> None:
        self._font_b = self._bold = self._double_width = self._double_height = False
        self._align = 0

    def _apply(self, command: Command, writer: asyncio.StreamWriter) -> int:
        """Carry out one command; returns how many lines it printed."""
        with self._lock:
            if self._paper_out or self._cover_open or self._offline:
                self._discard(command)  # a stopped printer: the data is lost
                return 0
            name, args = command.name, command.args
            if name == "text":
                return self._add_text(command.text)
            if name == "ht":
                return self._add_text(" " * (8 - len(self._line) % 8))
            if name == "lf":
                return self._print_line()
            if name == "ESC d":
                return sum(self._print_line() for _ in range(max(args[0], 1)))
            if name == "ESC J" and self._line:
                return self._print_line()
            if name in ("GS V", "ESC i", "ESC m"):
                printed = self._print_line() if self._line else 0
                self._cut()
                return printed
            if name == "ESC @":
                self._reset_modes()
                self._line = ""
            elif name == "ESC !":
                self._font_b, self._bold = bool(args[0] & 0x01), bool(args[0] & 0x08)
                self._double_height, self._double_width = bool(args[0] & 0x10), bool(args[0] & 0x20)
            elif name == "ESC E":
                self._bold = bool(args[0] & 0x01)
            elif name == "ESC M":
                self._font_b = args[0] in (1, 49)
            elif name == "GS !":
                self._double_width, self._double_height = args[0] >> 4 > 0, args[0] & 0x07 > 0
            elif name == "ESC a":
                self._align = args[0] % 48 if args[0] % 48 <= 2 else 0
            elif name == "GS r" and not self._mute and not writer.is_closing():
                paper = (0x03 if self._paper_near_end else 0) | (0x0C if self._paper_out else 0)
                writer.write(bytes([paper if args[0] in (1, 49) else 0x00]))
            return 0

    def _discard(self, command: Command) -> None:
        if command.name == "lf":
            self._discarded_lines += 1
        elif command.name in ("GS V", "ESC i", "ESC m"):
            self._discarded_cuts += 1

    def _width(self) -> int:
        return self._columns[self._font_b] // (2 if self._double_width else 1)

    def _add_text(self, text: str) -> int:
        printed, width = 0, self._width()
        while text:
            room = width - len(self._line)
            if room <= 0:
                printed += self._print_line()  # the printer wraps a full line
                continue
            self._line += text[:room]
            text = text[room:]
        return printed

    def _print_line(self) -> int:
        text, self._line = self._line, ""
        pad = self._width() - len(text)
        if self._align and pad > 0:
            text = " " * (pad // 2 if self._align == 1 else pad) + text
        self._paper.append(
            PrintedLine(text, self._bold, self._double_height, self._double_width, self._font_b))
        return 1

    def _cut(self) -> None:
        self._receipts.append(self._paper)
        self._paper = []

    # -- faults -----------------------------------------------------------------

    def set_fault(
        self,
        *,
        paper_out: bool | None = None,
        cover_open: bool | None = None,
        offline: bool | None = None,
        mute: bool | None = None,
        slow_seconds: float | None = None,
        paper_near_end: bool | None = None,
    ) -> None:
        """Change the given faults; the others stay as they are."""
        with self._lock:
            if paper_out is not None:
                self._paper_out = paper_out
            if cover_open is not None:
                self._cover_open = cover_open
            if offline is not None:
                self._offline = offline
            if mute is not None:
                self._mute = mute
            if slow_seconds is not None:
                self._slow = slow_seconds
            if paper_near_end is not None:
                self._paper_near_end = paper_near_end
        self._changed()

    def load_paper(self) -> None:
        """A fresh roll goes in: neither out nor near its end. What was printed on the
        end of the old roll, above the cutter, goes with it (`torn_off()`)."""
        with self._lock:
            if self._paper:
                self._torn.append(self._paper)
                self._paper = []
            self._paper_out = self._paper_near_end = False
        self._changed()

    def torn_off(self) -> list[str]:
        """The uncut ends of old rolls taken out by `load_paper`, oldest first."""
        with self._lock:
            return [receipt_text(lines) for lines in self._torn]

    def state(self) -> dict[str, object]:
        """The faults set, and what was thrown away while printing was stopped."""
        with self._lock:
            return {"paper_out": self._paper_out, "paper_near_end": self._paper_near_end,
                    "cover_open": self._cover_open, "offline": self._offline,
                    "mute": self._mute, "slow_seconds": self._slow,
                    "discarded_lines": self._discarded_lines,
                    "discarded_cuts": self._discarded_cuts, "torn_off": len(self._torn),
                    "received_chunks": self._received_chunks,
                    "received_bytes": self._received_bytes}

    def received(self) -> tuple[int, int]:
        """(chunks, bytes) of print data received so far, real-time requests left out: a
        chunk is what one read of the connection brought, so a job a driver sent in one
        write arrives as one chunk."""
        with self._lock:
            return self._received_chunks, self._received_bytes

    def discarded(self) -> tuple[int, int]:
        """(text lines, cuts) received while printing was stopped: never on paper."""
        with self._lock:
            return self._discarded_lines, self._discarded_cuts

    def clear_faults(self) -> None:
        self.set_fault(paper_out=False, cover_open=False, offline=False, mute=False,
                       slow_seconds=0.0, paper_near_end=False)

    # -- what a person can read -------------------------------------------------

    def receipts(self) -> list[str]:
        """Every receipt cut so far, oldest first."""
        with self._lock:
            return [receipt_text(lines) for lines in self._receipts]

    def partial(self) -> str:
        """What is printed above the cutter but not yet cut."""
        with self._lock:
            return receipt_text(self._paper)

    def receipt_lines(self, start: int = 0) -> list[list[PrintedLine]]:
        """Every receipt cut so far (from number `start`, 0 the first), line by line with
        styles."""
        with self._lock:
            return [list(lines) for lines in self._receipts[start:]]

    def partial_lines(self) -> list[PrintedLine]:
        """What is printed above the cutter but not yet cut, line by line with styles."""
        with self._lock:
            return list(self._paper)

    def receipt_count(self) -> int:
        with self._lock:
            return len(self._receipts)


def realtime_status(n: int, *, paper_out: bool, cover_open: bool, offline: bool,
                    near_end: bool) -> int | None:
    """The answer byte to DLE EOT n in the given state; None for an n with no answer."""
    stopped = paper_out or cover_open or offline
    if n == 1:  # printer status: bit 3 offline
        return 0x12 | (0x08 if stopped else 0)
    if n == 2:  # offline cause: bit 2 cover open, bit 5 paper-end stop, bit 6 error
        return 0x12 | (0x04 if cover_open else 0) | (0x20 if paper_out else 0) \
            | (0x40 if offline else 0)
    if n == 3:  # error cause: bit 6 automatically recoverable error
        return 0x12 | (0x40 if offline else 0)
    if n == 4:  # roll paper sensor: bits 2-3 near end, bits 5-6 out (an empty roll is both)
        return 0x12 | (0x0C if near_end or paper_out else 0) | (0x60 if paper_out else 0)
    return None


def receipt_text(lines: list[PrintedLine]) -> str:
    """Printed lines as plain text, one line each, trailing blanks dropped."""
    return "\n".join(line.text.rstrip() for line in lines).rstrip()


