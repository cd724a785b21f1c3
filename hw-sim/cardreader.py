"""The simulated magnetic stripe reader: a pseudo-terminal the firmware opens like a port.

The simulator holds the master side and writes what a reader would send; the
firmware opens the slave path with pyserial. The slave is put in raw mode so the
line discipline neither echoes nor turns CR into LF, and the simulator keeps its
own slave descriptor open so the master never sees EIO while the firmware closes
and reopens the port (a restart).
"""

from __future__ import annotations

import logging
import os
import tty

from hwsim.cards import bad_swipe, swipe_line

log = logging.getLogger(__name__)


class CardReaderSim:
    def __init__(self) -> None:
        self._master: int | None = None
        self._slave: int | None = None
        self._path = ""

    @property
    def path(self) -> str:
        """The port path for the firmware ("" until opened)."""
        return self._path

    def open(self) -> str:
        """Create the pseudo-terminal and return the slave path the firmware opens."""
        if self._master is not None:
            return self._path
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            path = os.ttyname(slave)
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._path = master, slave, path
        log.info("card reader on %s", path)
        return path

    def write(self, data: bytes) -> None:
        """Send bytes to the firmware, as the reader's serial output."""
        if self._master is None:
            raise RuntimeError("card reader simulator is not open")
        view = memoryview(data)
        while view:
            written = os.write(self._master, view)
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
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
