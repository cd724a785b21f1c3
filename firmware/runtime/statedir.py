"""The state directory: private, writable, and used by one firmware process at a time.

- Files are private whatever the umask the terminal was started with: the
  process umask becomes 077, the directory is created with mode 700 (and an
  existing one open to others is tightened), and the journal's files are
  tightened to 600 if an earlier start left them readable.
- A lock (`posterm.lock`, flock) is held for the life of the process: a second
  firmware on the same state directory refuses to start, naming the first one's
  pid, so two processes never drive one journal and one display.
- A directory that cannot be created or written is one clear line naming
  `[terminal] state_dir`, not a traceback.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path

from firmware.errors import JournalError

log = logging.getLogger("posterm.state")

LOCK_NAME = "posterm.lock"
PRIVATE_FILES = ("journal.sqlite3", "journal.sqlite3-wal", "journal.sqlite3-shm", "card.key")


class StateLock:
    """The flock on `state_dir/posterm.lock`; released when the process ends."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def prepare(state_dir: Path) -> StateLock:
    """Make the state directory private and take its lock. Raises JournalError."""
    os.umask(0o077)
    where = f"[terminal] state_dir {state_dir}"
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise JournalError(f"{where}: cannot be created: {_why(exc)}") from None
    if not state_dir.is_dir():
        raise JournalError(f"{where}: is not a directory")
    _tighten(state_dir, 0o700)
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise JournalError(f"{where}: is not writable by this user (uid {os.getuid()})")
    for name in PRIVATE_FILES:
        path = state_dir / name
        if path.exists() and name != "card.key":  # the vault refuses an open key itself
            _tighten(path, 0o600)
    return _lock(state_dir / LOCK_NAME, where)


def _tighten(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & 0o077:
            os.chmod(path, mode)
            log.warning("%s was open to other users (mode %o): now %o", path, current, mode)
    except OSError as exc:
        log.warning("cannot make %s private: %s", path, _why(exc))


def _lock(path: Path, where: str) -> StateLock:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(f"{where}: cannot create the lock file {path.name}: "
                           f"{_why(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise JournalError(f"{where}: another posterm process (pid {holder}) is already "
                           "running on this state directory; stop it first (two processes "
                           "must never share one journal)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(fd, path)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


def write_private(path: Path, data: bytes, *, owner_dir: Path | None = None) -> None:
    """Write a private file whole or not at all, and durably: a temporary file (mode 600)
    written and fsynced, renamed over `path`, the directory fsynced. As root, the file is
    given to `owner_dir`'s owner (the service user owns the state directory). OSError
    for the caller to put in its own words."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            if owner_dir is not None and os.geteuid() == 0:
                owner = owner_dir.stat()
                os.fchown(fd, owner.st_uid, owner.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
