"""ESC/POS thermal receipt printer (58 mm, 32 columns in font A) via python-escpos 3.1.

Connection by TCP (port 9100) or a serial line, opened here with the standard
library and pyserial. python-escpos formats the text, styles and cut into a
`Dummy` printer, which only collects bytes: the whole job is built first and
then sent in one write (`sendall` on a socket with TCP_NODELAY; `write` and
`flush` on a serial port). Writing each escpos command as it is made meant some
sixty small writes per receipt, and on a socket without TCP_NODELAY each small
write after the first waited for the printer's delayed ACK (about 40 ms a
receipt).

The status exchange is done here, on the same connection, because escpos's own
`query_status` neither drains stale bytes nor bounds the wait sensibly (a serial
read of 16 bytes waits out the whole timeout every time). Status uses the
real-time requests DLE EOT 1 (printer status: bit 3 offline), 2 (offline cause:
bit 2 cover open, bit 5 stopped by paper end) and 4 (roll paper sensor: bits 2-3
near end, bits 5-6 paper out); their answers always have bits 1 and 4 set and
bits 0 and 7 clear. Before each request the input is drained of stale bytes (a
late answer to an earlier request, a GS r answer), and each answer is waited for
at most 2 s. A printer that cannot be reached or does not answer is reported as
offline (`status()` never raises for it; the log says why, once per change), so
`print_lines` then fails with "PRINTER OFFLINE", as it fails with "PAPER OUT" or
"PRINTER COVER OPEN" without sending anything.

The job ends with GS r 1 after the cut, which the printer answers only when it
has processed everything before it (that answer has bit 4 clear). So
`print_lines` returns only once the receipt is really out, and a fault in the
middle of it is reported. Printers without GS r can be run with
`confirm_print=False`.

Every receipt starts with ESC @ (`_initialize`), which puts the printer back to
its power-on character code table and modes. python-escpos does not know that:
its MagicEncode remembers the table it last selected with ESC t and would send
the next non-ASCII text ("€", "é") in that table without selecting it again. So
after ESC @ the driver sets `magic.encoding` back to None, the "unknown" state a
new printer object starts in, in which escpos selects a table before the first
text. That table is the only printer state escpos tracks; styles (`set`) are
sent explicitly each time.

python-escpos is imported only when the first receipt is built (or when
`warm_up()` is called), not by `open()` or `status()`: with PIL, qrcode and
barcode it costs about 0.1 s and 14 MB, which a terminal need not pay before it
is ready. Importing it has side effects, handled in `_load_escpos`: its
capabilities cache goes to ESCPOS_CAPABILITIES_PICKLE_DIR, which must be set
before the first import; 3.1 still calls `tempfile.mkdtemp()` on every import
even when that variable is set (the default argument of `environ.get` is
evaluated anyway), and it calls `logging.basicConfig()`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from firmware.errors import PrinterError
from firmware.ports import PrinterStatus

log = logging.getLogger(__name__)
wire = logging.getLogger("posterm.wire.printer")  # status bytes and sizes, never receipt text

BIG = "\x00B"  # line prefix: print this line bold and double height
CUT = "\f"  # a line that is exactly this: a full cut, the job goes on after it
COLUMNS = 32
STATUS_TIMEOUT = 2.0  # at most, per real-time status request

_DLE_EOT = b"\x10\x04"
_GS_R_PAPER = b"\x1dr\x01"  # transmit paper sensor status, answered in sequence
_PRINTER, _OFFLINE_CAUSE, _PAPER = 1, 2, 4

_import_lock = threading.Lock()
T = TypeVar("T")


def _load_escpos(cache_dir: str) -> ModuleType:
    """Import escpos.printer once, keeping its files inside `cache_dir`."""
    with _import_lock:
        if "escpos.printer" in sys.modules:
            return sys.modules["escpos.printer"]
        if "escpos.capabilities" in sys.modules:
            log.warning("escpos was imported elsewhere first; its cache may be in a temp folder")
        try:
            os.makedirs(cache_dir, exist_ok=True)
            os.environ["ESCPOS_CAPABILITIES_PICKLE_DIR"] = cache_dir
            scratch = tempfile.mkdtemp(prefix="escpos-import-", dir=cache_dir)
        except OSError as exc:
            raise PrinterError(f"printer: cannot use cache folder {cache_dir}: {exc}") from exc
        root = logging.getLogger()
        had_handlers = bool(root.handlers)
        saved_tempdir = tempfile.tempdir
        tempfile.tempdir = scratch  # the stray mkdtemp() lands here, then goes
        try:
            import escpos.exceptions  # noqa: F401
            import escpos.printer
        except Exception as exc:  # broken install, unwritable cache, missing yaml...
            raise PrinterError(f"printer: cannot load python-escpos: {exc}") from exc
        finally:
            tempfile.tempdir = saved_tempdir
            shutil.rmtree(scratch, ignore_errors=True)
            if not had_handlers:  # logging belongs to the application, not to escpos
                for handler in list(root.handlers):
                    root.removeHandler(handler)
        module: ModuleType = escpos.printer
        return module


class _Renderer:
    """Builds whole print jobs with python-escpos into a `Dummy` printer."""

    def __init__(self, cache_dir: str) -> None:
        printers = _load_escpos(cache_dir)
        try:
            self._dummy: Any = printers.Dummy()  # loads the capabilities profile
        except Exception as exc:  # a capabilities cache or profile escpos cannot read
            raise PrinterError(f"printer: cannot set up python-escpos: {exc}") from exc

    def job(self, lines: Sequence[str]) -> bytes:
        """ESC @, the lines (BIG ones bold and double height, CUT a full cut), a cut."""
        from escpos.exceptions import Error as EscposError

        d = self._dummy
        d.clear()
        try:
            d.hw("INIT")
            d.magic.encoding = None  # escpos now sends ESC t before the next text
            d.set(align="left", font="a", bold=False, underline=0, normal_textsize=True)
            for i, line in enumerate(lines):
                if line == CUT:  # two receipts in one job (a refund's two copies)
                    d.cut()
                    continue
                big = line.startswith(BIG)
                text = line[len(BIG):] if big else line
                text = "".join(ch if ch >= " " else " " for ch in text)
                if len(text) > COLUMNS:
                    log.warning("printer: line %d has %d characters, wider than %d", i,
                                len(text), COLUMNS)
                if big:
                    d.set(bold=True, double_height=True)
                d.textln(text)
                if big:
                    d.set(bold=False, normal_textsize=True)
            d.cut()
            job: bytes = d.output
        except (EscposError, ValueError, LookupError) as exc:
            raise PrinterError(f"printer: cannot lay out the receipt: {exc}") from exc
        finally:
            d.clear()
        return job


class _Link:
    """The open socket or serial port: whole writes, and byte reads for status answers."""

    def __init__(self, device: Any, timeout: float) -> None:
        self._device = device
        self._timeout = timeout
        self._is_socket = isinstance(device, socket.socket)

    def write(self, data: bytes) -> None:
        """All of `data` in one write; on a serial port, wait until it is transmitted."""
        if self._is_socket:
            self._device.sendall(data)
        else:
            self._device.write(data)
            self._device.flush()

    def drain(self) -> None:
        if not self._is_socket:
            self._device.reset_input_buffer()
            return
        self._device.settimeout(0.0)  # with a timeout set, recv() would wait first
        try:
            while True:
                try:
                    chunk = self._device.recv(256)
                except (BlockingIOError, InterruptedError):
                    return
                if not chunk:
                    raise ConnectionError("the printer closed the connection")
                log.debug("printer: drained %d stale bytes", len(chunk))
        finally:
            self._device.settimeout(self._timeout)

    def read_byte(self, timeout: float) -> int | None:
        """One byte, or None if nothing came within `timeout` seconds."""
        timeout = max(timeout, 0.001)
        try:
            if self._is_socket:
                self._device.settimeout(timeout)
                try:
                    data = self._device.recv(1)
                except TimeoutError:
                    return None
                if not data:
                    raise ConnectionError("the printer closed the connection")
            else:
                self._device.timeout = timeout
                data = self._device.read(1)
                if not data:
                    return None
        finally:
            if self._is_socket:
                self._device.settimeout(self._timeout)
            else:
                self._device.timeout = self._timeout
        return int(data[0])

    def close(self) -> None:
        if self._is_socket:
            try:
                self._device.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already reset by the printer
        self._device.close()


class EscposPrinter:
    """`PrinterPort` for an ESC/POS printer on TCP ("network") or a serial line ("serial")."""

    def __init__(
        self,
        backend: str,
        *,
        host: str = "",
        port: int = 9100,
        device: str = "",
        baudrate: int = 19200,
        timeout: float = 2.0,
        cache_dir: str,
        confirm_print: bool = True,
        print_timeout: float = 30.0,
    ) -> None:
        if backend not in ("network", "serial"):
            raise PrinterError(f"printer: unknown backend {backend!r} (network or serial)")
        self._backend = backend
        self._host, self._port = host, port
        self._device, self._baudrate = device, baudrate
        self._timeout = timeout
        self._cache_dir = cache_dir
        self._confirm = confirm_print
        self._print_timeout = print_timeout
        self._status_timeout = min(timeout, STATUS_TIMEOUT)
        self._renderer: _Renderer | None = None
        self._link: _Link | None = None
        self._printed_ack = False
        self._unreachable = ""  # why the last status request got no answer, logged once
        self._lock = threading.RLock()

    @property
    def address(self) -> str:
        if self._backend == "network":
            return f"{self._host}:{self._port}"
        return self._device

    # -- PrinterPort ------------------------------------------------------------

    def open(self) -> None:
        """Connect; a second call reconnects. Raises PrinterError naming the address."""
        with self._lock:
            self._drop()
            if self._backend == "network":
                device: Any = self._connect_socket()
            else:
                device = self._open_serial()
            self._link = _Link(device, self._timeout)
            log.info("printer: connected to %s", self.address)

    def warm_up(self) -> None:
        """Import python-escpos and load its profile now rather than at the first receipt
        (about 0.1 s); meant for the printer's own thread once the terminal is ready."""
        with self._lock:
            self._job_renderer()

    def status(self) -> PrinterStatus:
        """The printer's state; one that cannot be reached or does not answer is offline."""
        with self._lock:
            try:
                status = self._guard("status request", self._read_status)
            except PrinterError as exc:
                if str(exc) != self._unreachable:
                    log.warning("printer: offline: %s", exc)
                self._unreachable = str(exc)
                return PrinterStatus(online=False)
            if self._unreachable:
                log.info("printer: answering again on %s", self.address)
            self._unreachable = ""
            return status

    def print_lines(self, lines: Sequence[str]) -> None:
        with self._lock:
            job = self._job_renderer().job(lines)
            status = self.status()
            if not status.ready:
                raise PrinterError(status.problem())
            if status.paper_near_end:  # a warning the print queue shows (PAPER LOW)
                log.debug("printer: paper near end")
            self._guard("printing", lambda: self._send_job(job, len(lines)))
            if self._confirm:
                self._guard("print confirmation", lambda: self._await_printed(len(lines)))

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- internals --------------------------------------------------------------

    def _connect_socket(self) -> socket.socket:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        except (OSError, ValueError) as exc:
            raise PrinterError(f"printer: cannot connect to {self.address}: {exc}") from exc
        try:
            # a job is one write, but the status requests are small ones: none of them may
            # wait for the printer's delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            raise PrinterError(f"printer: cannot set up {self.address}: {exc}") from exc
        return sock

    def _open_serial(self) -> Any:
        import serial  # pyserial

        try:
            # the settings python-escpos's Serial printer used: 8N1, DSR/DTR flow control
            return serial.Serial(port=self._device, baudrate=self._baudrate,
                                 bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
                                 stopbits=serial.STOPBITS_ONE, timeout=self._timeout,
                                 xonxoff=False, dsrdtr=True)
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            raise PrinterError(f"printer: cannot connect to {self.address}: {exc}") from exc

    def _job_renderer(self) -> _Renderer:
        if self._renderer is None:
            self._renderer = _Renderer(self._cache_dir)
        return self._renderer

    def _guard(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` connected; OS errors become PrinterError."""
        if self._link is None:
            self.open()
        try:
            return action()
        except PrinterError:
            raise
        except (OSError, ValueError) as exc:  # ConnectionError, TimeoutError, SerialException
            self._drop()  # reconnect on the next call
            raise PrinterError(f"printer: {what} on {self.address} failed: {exc}") from exc

    def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.close()
            except Exception as exc:  # closing a dead connection: nothing left to do
                log.debug("printer: close failed: %s", exc)

    def _request(self, n: int, drain: bool = True) -> int:
        """Send DLE EOT n and return its answer byte; stale input is drained first."""
        assert self._link is not None
        if drain:
            self._link.drain()
        self._link.write(_DLE_EOT + bytes([n]))
        wire.debug(">>> DLE EOT %d", n)
        answer = self._await_realtime_answer()
        wire.debug("<<< 0x%02X", answer)
        return answer

    def _await_realtime_answer(self) -> int:
        assert self._link is not None
        deadline = time.monotonic() + self._status_timeout
        while (left := deadline - time.monotonic()) > 0:
            byte = self._link.read_byte(left)
            if byte is None:
                break
            if byte & 0x93 == 0x12:  # bits 1 and 4 set, 0 and 7 clear: a DLE EOT answer
                return byte
            if byte & 0x90 == 0:  # a GS r answer overtaken by this request
                wire.debug("<<< 0x%02X (GS r)", byte)
                self._printed_ack = True
            else:
                log.warning("printer: unexpected status byte 0x%02X ignored", byte)
        raise PrinterError(f"printer: no status answer within {self._status_timeout:g} s")

    def _read_status(self, drain: bool = True) -> PrinterStatus:
        printer = self._request(_PRINTER, drain)
        cause = self._request(_OFFLINE_CAUSE, drain)
        paper = self._request(_PAPER, drain)
        return PrinterStatus(
            online=not printer & 0x08,
            cover_open=bool(cause & 0x04),
            paper_out=paper & 0x60 == 0x60 or bool(cause & 0x20),
            paper_near_end=paper & 0x0C == 0x0C,
        )

    def _send_job(self, job: bytes, line_count: int) -> None:
        """The whole job, and GS r 1 after it, in one write."""
        assert self._link is not None
        self._printed_ack = False
        if self._confirm:
            self._link.drain()  # no stale GS r answer may pass for this job's
            job += _GS_R_PAPER
        self._link.write(job)
        wire.debug(">>> receipt of %d lines, cut%s: %d bytes in one write", line_count,
                   ", GS r 1" if self._confirm else "", len(job))

    def _await_printed(self, line_count: int) -> None:
        """Wait for the GS r answer; meanwhile make sure the printer is still working."""
        assert self._link is not None
        deadline = time.monotonic() + self._print_timeout
        while not self._printed_ack:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PrinterError(
                    f"printer: {line_count} lines sent but not confirmed printed "
                    f"within {self._print_timeout:g} s"
                )
            byte = self._link.read_byte(min(left, 1.0))
            if byte is not None and byte & 0x90 == 0:
                wire.debug("<<< 0x%02X (GS r): printed", byte)
                return
            if byte is None:  # still printing, or stopped? Ask without draining.
                status = self._read_status(drain=False)
                if not status.ready:
                    raise PrinterError(status.problem())
