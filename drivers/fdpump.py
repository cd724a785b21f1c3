"""Bytes in and out of one non-blocking file descriptor on the running asyncio loop.

`loop.add_reader` hands every burst that arrives straight to `on_data`, on the
loop, with no thread. `write` sends what the descriptor takes at once and keeps
the rest, which goes out through `loop.add_writer` as the descriptor drains
(the writer is watched only while bytes wait). A read or write that fails, or
the end of the stream, is told to `on_lost(why, exc)` (`exc` None at the end
of the stream); what was not yet written is dropped then. The pump never
closes the descriptor: its owner does, after `close()`.

Two ends use it: the modem driver on its serial port (drivers/modemport.py) and
hwsim's modem model on the master side of its pseudo-terminal
(hw-sim/modem.py). It moves bytes and knows no protocol, so it imports nothing
from the project (docs/architecture.md: the one module of `drivers` that hwsim
may import).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

READ_SIZE = 4096


class FdPump:
    """One descriptor's reads and writes on the running loop (see the module docstring)."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None],
                 on_lost: Callable[[str, OSError | None], None]) -> None:  # fmt: skip
        self.fd = fd
        self._on_data, self._on_lost = on_data, on_lost
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self._writing = False
        self._reading = True
        self.closed = False
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    @property
    def pending(self) -> int:
        """Bytes written but not yet taken by the descriptor."""
        return len(self._out)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._out += data
        self._flush()

    def discard(self) -> None:
        """Drop what is not yet written."""
        self._out.clear()
        self._watch_writes(False)

    def close(self) -> None:
        """Stop watching the descriptor (its owner closes it); nothing more is written."""
        if self.closed:
            return
        self.closed = True
        self._out.clear()
        self._watch_writes(False)
        self._stop_reading()

    def _flush(self) -> None:
        if self.closed:
            return
        try:
            while self._out:
                written = os.write(self.fd, self._out)
                del self._out[:written]
        except BlockingIOError:
            pass
        except OSError as exc:
            self.discard()
            self._on_lost(f"write failed: {exc.strerror or exc}", exc)
            return
        self._watch_writes(bool(self._out))

    def _watch_writes(self, on: bool) -> None:
        if on and not self._writing and not self.closed:
            self._loop.add_writer(self.fd, self._flush)
            self._writing = True
        elif not on and self._writing:
            self._loop.remove_writer(self.fd)
            self._writing = False

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._on_lost(f"read failed: {exc.strerror or exc}", exc)
            return
        if not data:  # the end of the stream: nothing more will come
            self._stop_reading()
            self.discard()
            self._on_lost("the port was closed (device gone)", None)
            return
        self._on_data(data)
