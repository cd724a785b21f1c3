"""The simulated magnetic stripe reader: a pseudo-terminal the firmware opens like a port.

The simulator holds the master side and writes what a reader would send; the
firmware opens the slave path with pyserial. The slave is put in raw mode so the
line discipline neither echoes nor turns CR into LF, and the simulator keeps its
own slave descriptor open so the master never sees EIO while the firmware closes
and reopens the port (a restart).

Given a `link` path, the reader is found there, at a stable name, as a USB reader
is at /dev/ttyUSB0 or /dev/serial/by-id/...: a symbolic link to the current
pseudo-terminal. `unplug` does what pulling a USB-serial reader does: the device
goes away (the master and the simulator's slave descriptor are closed, so a port
the firmware holds open reads EIO, a hang-up) and its name disappears (the link is
removed). `plug` brings a new reader: a new pseudo-terminal, and the link points
at it. Without a link the pseudo-terminal's own path is the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tty

from hwsim.cards import bad_swipe, swipe_line

log = logging.getLogger(__name__)


class ReaderUnplugged(RuntimeError):
    """A swipe while the simulated reader is unplugged."""


class ReaderPortFull(ValueError):
    """The reader's port holds all it can: nothing reads it. The swipe is not (all) sent,
    and the simulator goes on (a blocking write would stop it)."""


class CardReaderSim:
    def __init__(self, link: str | None = None) -> None:
        self._link = link
        self._master: int | None = None
        self._slave: int | None = None
        self._pty = ""

    @property
    def path(self) -> str:
        """The port path for the firmware: the link if there is one, else the
        pseudo-terminal ("" until opened)."""
        return self._link if self._link is not None else self._pty

    @property
    def link(self) -> str | None:
        return self._link

    @property
    def pty(self) -> str:
        """The pseudo-terminal now behind the port ("" while unplugged)."""
        return self._pty

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def open(self) -> str:
        """Create the pseudo-terminal (and point the link at it); return the port path."""
        if self._master is not None:
            return self.path
        master, slave = os.openpty()
        try:
            os.set_blocking(master, False)  # a full port must not stop the simulator
            tty.setraw(slave)
            pty = os.ttyname(slave)
            if self._link is not None:
                _point(self._link, pty)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._pty = master, slave, pty
        if self._link is not None:
            log.info("card reader on %s -> %s", self._link, pty)
        else:
            log.info("card reader on %s", pty)
        return self.path

    def unplug(self) -> None:
        """Pull the reader out: the port reads EIO and its path is gone."""
        if self._master is None:
            raise ReaderUnplugged("the card reader is already unplugged")
        pty = self._pty
        self.close()
        log.info("card reader unplugged (%s closed)", pty)

    def plug(self) -> str:
        """Plug a reader in again (a new pseudo-terminal, at the same link); the port path."""
        if self._master is not None:
            raise ValueError("the card reader is already plugged in")
        return self.open()

    def write(self, data: bytes) -> None:
        """Send bytes to the firmware, as the reader's serial output."""
        if self._master is None:
            raise ReaderUnplugged("the card reader is unplugged")
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                raise ReaderPortFull(
                    f"the card reader's port is full, nothing reads it (is posterm running?): "
                    f"{len(data) - len(view)} of {len(data)} bytes sent") from None
            view = view[written:]

    def swipe(
        self,
        pan: str,
        *,
        expiry: str = "3012",
        service_code: str | None = None,
        name: str = "CARDHOLDER/TEST",
    ) -> None:
        """Swipe a card (see `hwsim.cards.swipe_line`)."""
        self.write(swipe_line(pan, expiry=expiry, service_code=service_code, name=name))

    def bad_swipe(self, kind: str) -> None:
        """Produce a bad read of the given kind (see `hwsim.cards.bad_swipe`)."""
        self.write(bad_swipe(kind))

    def close(self) -> None:
        """Close the pseudo-terminal and remove the link (if it still points at it)."""
        if self._link is not None and self._pty:
            with contextlib.suppress(OSError):
                if os.readlink(self._link) == self._pty:
                    os.unlink(self._link)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._pty = ""


def _point(link: str, target: str) -> None:
    """Make `link` a symbolic link to `target`, replacing what was there in one step."""
    tmp = f"{link}.new{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
