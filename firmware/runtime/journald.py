"""Logging to systemd's journal with structured fields, or plain lines on stderr.

Under systemd (stderr is the journal stream: JOURNAL_STREAM names its device and
inode) records go to the journal's native socket as datagrams of fields
(systemd.journal-fields(7), the native protocol of systemd-journald.service(8)):
MESSAGE, PRIORITY (the syslog level of the record's level), SYSLOG_IDENTIFIER,
LOGGER, and any fields a record carries in `extra={"journal": {...}}`, e.g.
SALE_ID, STAN, OUTCOME, AMOUNT, PAN (masked), so that
`journalctl -u posterm SALE_ID=42` finds a sale. The protocol is written out
here (a few lines; values with a newline use the length-prefixed form). If the
socket cannot be reached or is full, the record goes to stderr (the socket is
non-blocking: logging never stalls the terminal). Outside systemd nothing
changes: plain lines on stderr.

Callers pass only masked card numbers; no field ever holds track data.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from typing import Any

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "posterm"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """syslog priority of a logging level: 2 crit, 3 err, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def encode(fields: dict[str, Any]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode("utf-8", "replace")
        name = key.upper().encode("ascii", "replace")
        if b"\n" in data:
            out += name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    def __init__(self, path: str = JOURNAL_SOCKET, fallback: logging.Handler | None = None
                 ) -> None:
        super().__init__()
        self.path = path
        self.fallback = fallback or _stderr_handler()
        # never blocks: a journal that is behind must not stall the terminal's loop; the
        # record then goes to stderr (which systemd also reads) instead of waiting
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC |
                                   socket.SOCK_NONBLOCK)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            fields: dict[str, Any] = {
                "MESSAGE": message, "PRIORITY": priority(record.levelno),
                "SYSLOG_IDENTIFIER": IDENTIFIER, "LOGGER": record.name,
                "CODE_FUNC": record.funcName, "CODE_LINE": record.lineno,
            }
            extra = getattr(record, "journal", None)
            if isinstance(extra, dict):
                fields.update({str(k).upper(): v for k, v in extra.items()})
            self._sock.sendto(encode(fields), self.path)
        except OSError:
            self.fallback.handle(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM=dev:inode)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup(level: str) -> None:
    """The process's logging: the journal with fields under systemd, else stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    use_journal = stderr_is_journal() and os.path.exists(
        os.environ.get("POSTERM_JOURNAL_SOCKET", JOURNAL_SOCKET))
    if use_journal:
        root.addHandler(JournalHandler(os.environ.get("POSTERM_JOURNAL_SOCKET",
                                                      JOURNAL_SOCKET)))
    else:
        root.addHandler(_stderr_handler())
    root.setLevel(getattr(logging, level, logging.INFO))
