"""Stand-ins for smbus2, RPi.GPIO and an evdev device that forward to a running hwsim.

Where the kernel offers nothing to simulate against (I2C, GPIO, input events),
the firmware's real drivers are given these objects instead of the library's.
Each has the library's own method names and forwards every call, unchanged,
over hwsim's control socket (JSON lines); all device behaviour lives in hwsim.

The blocking stand-ins keep one socket each and reconnect after hwsim restarts.
A connection problem or a device that does not answer raises OSError, as a real
bus would. The key source turns hwsim's event stream back into
events with the fields of `evdev.InputEvent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from firmware.errors import KeypadError
from drivers.osthread import set_os_name as _os_thread_name

log = logging.getLogger(__name__)

I2C_M_RD = 0x0001  # smbus2 / Linux i2c_msg read flag


class _Channel:
    """One blocking JSON-lines connection to hwsim's control socket."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        """Send one request; the answer. OSError if hwsim cannot be reached.

        An answer `{"ok": false}` is returned as is for the caller to translate.
        """
        line = json.dumps({"op": op, **params}, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            try:
                self._send(line)
                return self._receive(op)
            except OSError:
                self.close()
                raise

    def _send(self, line: bytes) -> None:
        fresh = self._sock is None
        try:
            self._connected().sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            if fresh:
                raise
            # hwsim restarted since the last call: nothing was delivered, so retry once.
            self.close()
            self._connected().sendall(line)

    def _receive(self, op: str) -> dict[str, Any]:
        sock = self._connected()
        while b"\n" not in self._buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(
                    errno.ECONNRESET, f"hwsim closed the connection during {op}"
                )
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise OSError(errno.EPROTO, f"hwsim answered {op} with something not JSON") from None
        if not isinstance(reply, dict):
            raise OSError(errno.EPROTO, f"hwsim answered {op} with something not an object")
        return reply

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except OSError as exc:
                sock.close()
                raise OSError(
                    exc.errno, f"hwsim not reachable at {self.socket_path}: {exc.strerror}"
                ) from None
            self._sock, self._buffer = sock, b""
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""


class RemoteSMBus:
    """The smbus2.SMBus subset the display and gauge drivers use."""

    def __init__(self, socket_path: str, bus: int = 1, timeout: float = 5.0) -> None:
        self.bus = bus
        self._channel = _Channel(socket_path, timeout)

    def _call(self, op: str, addr: int, **params: Any) -> dict[str, Any]:
        reply = self._channel.call(op, bus=self.bus, addr=addr, **params)
        if not reply.get("ok"):
            # A missing device NACKs; the kernel reports that as EREMOTEIO.
            raise OSError(errno.EREMOTEIO, str(reply.get("error", "I2C transfer failed")))
        return reply

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._call("i2c_write", i2c_addr, data=[value])

    def i2c_rdwr(self, *i2c_msgs: Any) -> None:
        """Combined transfers; only write messages (smbus2.i2c_msg.write) for now."""
        for msg in i2c_msgs:
            if msg.flags & I2C_M_RD:
                raise NotImplementedError("RemoteSMBus.i2c_rdwr: read messages are not forwarded")
            self._call("i2c_write", msg.addr, data=list(msg))

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        reply = self._call("i2c_read", i2c_addr, reg=register, n=length)
        return [int(b) for b in reply["data"]]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RemoteSMBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteGPIO:
    """The RPi.GPIO module API subset the firmware uses, as an object.

    Rejected calls raise RuntimeError with the simulator's message, as RPi.GPIO does.
    """

    BCM = 11
    BOARD = 10
    OUT = 0
    IN = 1
    HIGH = 1
    LOW = 0
    PUD_OFF = 20
    PUD_DOWN = 21
    PUD_UP = 22
    RISING = 31
    FALLING = 32
    BOTH = 33

    _PULLS = {PUD_OFF: "off", PUD_DOWN: "down", PUD_UP: "up"}

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self._channel = _Channel(socket_path, timeout)
        self._mode: str | None = None
        self._socket_path, self._timeout = socket_path, timeout
        self._edges: dict[int, socket.socket] = {}  # pin -> its edge stream

    def add_event_detect(self, channel: int, edge: int, callback: Any = None,
                         bouncetime: int | None = None) -> None:
        """RPi.GPIO's edge detection: `callback(channel)` in a thread of its own at each
        edge of `edge` (RISING, FALLING or BOTH). The thread sleeps in `recv` on hwsim's
        edge stream, as RPi.GPIO's sleeps in `epoll` on the pin: nothing polls."""
        if edge not in (self.RISING, self.FALLING, self.BOTH):
            raise ValueError("The edge must be set to RISING, FALLING or BOTH")
        if channel in self._edges:
            raise RuntimeError("Conflicting edge detection already enabled for this GPIO "
                               "channel")  # fmt: skip
        if self._mode is None:
            raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) "
                               "or GPIO.setmode(GPIO.BCM)")  # fmt: skip
        request = {"op": "gpio_listen", "pin": channel, "mode": self._mode}
        try:
            sock, reply = _subscribe(self._socket_path, self._timeout, request)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"Failed to add edge detection: hwsim at {self._socket_path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        if not reply.get("ok"):
            sock.close()
            raise RuntimeError(f"Failed to add edge detection: {reply.get('error')}")
        sock.settimeout(None)  # from now on the thread sleeps until an edge comes
        self._edges[channel] = sock
        rising = {self.RISING: 1, self.FALLING: 0}.get(edge)
        threading.Thread(target=self._edge_thread, args=(channel, sock, rising, callback),
                         name=f"hwsim-gpio-{channel}", daemon=True).start()

    def remove_event_detect(self, channel: int) -> None:
        sock = self._edges.pop(channel, None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _edge_thread(self, channel: int, sock: socket.socket, level: int | None,
                     callback: Any) -> None:
        _os_thread_name(f"hwsim-gpio{channel}")
        buffer = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                if self._edges.get(channel) is sock:
                    log.warning("gpio: hwsim's edge stream for pin %d ended", channel)
                    self._edges.pop(channel, None)
                return
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                try:
                    _pin, new = json.loads(line)["edge"]
                except (ValueError, KeyError, TypeError):
                    continue
                if callback is not None and (level is None or new == level):
                    try:
                        callback(channel)
                    except Exception:  # as RPi.GPIO: a callback's error stays in its thread
                        log.exception("gpio: edge callback for pin %d failed", channel)

    def setmode(self, mode: int) -> None:
        if mode not in (self.BCM, self.BOARD):
            raise ValueError("An invalid mode was passed to setmode()")
        self._mode = "BCM" if mode == self.BCM else "BOARD"

    def getmode(self) -> int | None:
        return None if self._mode is None else getattr(self, self._mode)

    def setwarnings(self, flag: bool) -> None:
        pass  # warnings are about other users of the pins; the simulator has none

    def setup(self, channel: int | Iterable[int], direction: int,
              pull_up_down: int = PUD_OFF, initial: int | None = None) -> None:  # fmt: skip
        if direction not in (self.IN, self.OUT):
            raise ValueError("An invalid direction was passed to setup()")
        if pull_up_down not in self._PULLS:
            raise ValueError("Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP "
                             "or PUD_DOWN")  # fmt: skip
        for pin in _pins(channel):
            self._call("gpio_setup", pin=pin, direction="out" if direction == self.OUT else "in",
                       pull=self._PULLS[pull_up_down],
                       initial=None if initial is None else int(bool(initial)))  # fmt: skip

    def output(self, channel: int | Iterable[int], value: int | bool | Iterable[int]) -> None:
        pins = _pins(channel)
        values = [value] * len(pins) if isinstance(value, int | bool) else list(value)
        if len(values) != len(pins):
            raise RuntimeError("Number of channels != number of values")
        for pin, level in zip(pins, values, strict=True):
            self._call("gpio_output", pin=pin, level=int(bool(level)))

    def input(self, channel: int) -> int:
        return int(self._call("gpio_input", pin=channel)["level"])

    def cleanup(self, channel: int | Iterable[int] | None = None) -> None:
        for pin in list(self._edges) if channel is None else _pins(channel):
            self.remove_event_detect(pin)
        if channel is not None:
            for pin in _pins(channel):
                self._call("gpio_cleanup", pin=pin)
            return
        try:
            self._call("gpio_cleanup", need_mode=False)
        finally:
            self._channel.close()

    def close(self) -> None:
        """Drop the connection to hwsim (not in RPi.GPIO: the module has nothing to close)."""
        self._channel.close()

    def _call(self, op: str, need_mode: bool = True, **params: Any) -> dict[str, Any]:
        if need_mode and self._mode is None:
            raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) "
                               "or GPIO.setmode(GPIO.BCM)")  # fmt: skip
        reply = self._channel.call(op, mode=self._mode or "BCM", **params)
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error", f"GPIO {op} failed")))
        return reply


def _subscribe(socket_path: str, timeout: float,
               request: dict[str, Any]) -> tuple[socket.socket, dict[str, Any]]:
    """Open one of hwsim's streams (keypad_listen, gpio_listen): send the request and read
    its one-line answer byte by byte, since the stream's lines may follow it at once. The
    connected socket and the answer; OSError, or ValueError for an answer that is not a
    JSON object (the socket is closed then)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "connection closed")
            answer += chunk
        reply = json.loads(answer)
        if not isinstance(reply, dict):
            raise ValueError("its answer is not a JSON object")
    except (OSError, ValueError):
        sock.close()
        raise
    return sock, reply


def _pins(channel: int | Iterable[int]) -> list[int]:
    return [channel] if isinstance(channel, int) else list(channel)


@dataclass(frozen=True)
class KeyEvent:
    """One input event as hwsim streams it: the fields of `evdev.InputEvent` that the
    keypad driver reads (evdev itself is imported only by drivers/keypad.py)."""

    sec: int
    usec: int
    type: int
    code: int
    value: int

    def timestamp(self) -> float:
        """Seconds since the epoch, as `evdev.InputEvent.timestamp()`."""
        return self.sec + self.usec / 1_000_000


class RemoteKeySource:
    """A keypad event source (`open`, `events`, `close`) fed by hwsim's keypad model."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None

    def open(self) -> None:
        """Subscribe to the key events; KeypadError if hwsim is not there."""
        self.close()
        try:
            sock, reply = _subscribe(self.socket_path, self.timeout, {"op": "keypad_listen"})
        except OSError as exc:
            raise KeypadError(
                f"keypad: hwsim not reachable at {self.socket_path}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:  # garbage instead of an answer: said, never a traceback
            raise KeypadError(f"keypad: hwsim at {self.socket_path}: {exc}") from None
        if not reply.get("ok"):
            sock.close()
            raise KeypadError(f"keypad: hwsim refused to stream keys: {reply.get('error')}")
        sock.setblocking(False)
        self._sock = sock
        log.info("keypad: listening to hwsim at %s", self.socket_path)

    async def events(self) -> AsyncIterator[KeyEvent]:
        """The key events as they come; KeypadError if hwsim goes away (not after close())."""
        if self._sock is None:
            raise KeypadError("keypad: events() before open()")
        reader, self._writer = await asyncio.open_unix_connection(sock=self._sock)
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError) as exc:
                line, problem = b"", str(exc)
            else:
                problem = "it stopped sending keys"
            if self._writer is None:
                return  # closed on purpose
            if not line:
                raise KeypadError(f"keypad: hwsim at {self.socket_path}: {problem}")
            try:
                sec, usec, type_, code, value = json.loads(line)["event"]
            except (ValueError, KeyError, TypeError):
                log.warning("keypad: ignored a line from hwsim that is not an event")
                continue
            yield KeyEvent(int(sec), int(usec), int(type_), int(code), int(value))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        elif self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
