"""systemd's service notification protocol (sd_notify(3)), written out in full.

The protocol is one datagram of newline-separated `KEY=value` assignments sent
to the AF_UNIX socket named by NOTIFY_SOCKET (a path, or an abstract socket when
it starts with '@'). It is a dozen lines, so posterm implements it here rather
than depend on a library: READY=1, STATUS=..., WATCHDOG=1, STOPPING=1.
WATCHDOG_USEC (and WATCHDOG_PID, when set, must be ours) gives the watchdog
period. Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("posterm.systemd")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_seconds = _watchdog(env)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str) -> bool:
        """Send `KEY=value` lines (keys upper-cased); False when not sent."""
        if self.address is None:
            return False
        payload = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload.encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._failed:  # said once: systemd may be gone while we stop
                log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"),
                            exc.strerror or exc)
            self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready="1", status=status)

    def status(self, status: str) -> bool:
        return self.notify(status=status)

    def watchdog(self) -> bool:
        return self.notify(watchdog="1")

    def stopping(self, status: str) -> bool:
        return self.notify(stopping="1", status=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET %r is neither a path nor an abstract socket: ignored", value)
    return None


def _watchdog(env: os._Environ[str] | dict[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


def _one_line(value: str) -> str:
    return " ".join(str(value).split())
