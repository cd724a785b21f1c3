"""The DUKPT key store: the terminal's initial key, its transaction counter, online PIN blocks.

The key file (`[pin] key_file`, written by `posterm key-load`, or by hwsim for tests)
holds the initial key with its initial key ID (AES DUKPT) or initial KSN (TDES DUKPT)
and their check value (firmware/dukpt.py `key_text`). Like the card-data key
(vault.py) it must be readable by the service alone: a file open to the group or
others is refused, never used.

The transaction counter lives in the journal's meta table, under the key's own ID
(`dukpt:<method>:<ID>`: a new key starts its own count, the same key loaded again
goes on from where it was). Before a PIN block is made, the next counter is written
in one durable transaction (one fsync, `Journal.advance_counter`); only then is the
key derived and the block made. A crash in between skips a counter, never reuses
one, so a KSN never leaves the terminal twice (host-interface 9.1). A counter with
too many one-bits is skipped as X9.24 says; when none is left (AES: past FFFF0000,
TDES: past 1FF800) `online_block` raises PinKeyError and the terminal takes no more
online PINs until a new key is loaded.

The PIN is a bytearray of ASCII digits that `online_block` overwrites with zeros,
whatever happens; neither the PIN nor the key appear in a log, an error or a repr.
The key's material is held in a bytearray that `close` overwrites.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from firmware import dukpt, pinkeyfile
from firmware.errors import PinKeyError
from firmware.runtime import failpoints
from firmware.runtime.statedir import LOCK_NAME, write_private

log = logging.getLogger("posterm.pinkeys")

KEY_FILE_NAME = "pin.key"  # in the state directory, when [pin] key_file is ""
MAX_KEY_FILE_BYTES = 4096


class CounterStore(Protocol):
    """What the key store needs of the journal (firmware/runtime/journal_base.py)."""

    def counter(self, key: str) -> int: ...

    def advance_counter(self, key: str, advance: Callable[[int], int | None]) -> int | None: ...


def key_path(key_file: str, state_dir: Path) -> Path:
    """The configured key file, else `pin.key` in the state directory."""
    return Path(key_file) if key_file else Path(state_dir) / KEY_FILE_NAME


def counter_name(method: str, key_id: str) -> str:
    return f"dukpt:{method}:{key_id}"


def read_key_file(path: Path, method: str | None = None) -> tuple[str, bytearray, bytes]:
    """(method, initial key, initial key ID or KSN) of a private key file. PinKeyError
    says what is wrong (missing, open to others, damaged), never a key."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PinKeyError(f"no DUKPT key: {path} does not exist (load one with `posterm "
                          "key-load`)") from None
    except OSError as exc:
        raise PinKeyError(f"cannot read the DUKPT key file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PinKeyError(f"DUKPT key file {path} is open to other users (mode "
                          f"{stat.S_IMODE(info.st_mode):o}): it must be 600; load the key "
                          "again, it may have been copied")
    try:
        with open(path, "rb") as f:
            raw = bytearray(f.read(MAX_KEY_FILE_BYTES + 1))
    except OSError as exc:
        raise PinKeyError(f"cannot read the DUKPT key file {path}: {exc.strerror}") from None
    try:
        if len(raw) > MAX_KEY_FILE_BYTES:
            raise PinKeyError(f"DUKPT key file {path} is damaged (too large)")
        try:
            return pinkeyfile.parse_key_text(raw.decode("ascii"), method)
        except (UnicodeDecodeError, dukpt.DukptError) as exc:
            why = "not ASCII text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise PinKeyError(f"DUKPT key file {path} is damaged: {why}") from None
    finally:
        raw[:] = bytes(len(raw))


class PinKeys:
    """One terminal's DUKPT key and counter; `online_block` makes fields 52 and 53."""

    def __init__(self, method: str, initial_key: bytearray, ident: bytes,
                 journal: CounterStore) -> None:
        self.method = method
        self._key = initial_key
        self._ident = ident  # AES: the initial key ID; TDES: the initial KSN (counter 0)
        self._journal = journal
        self._lock = threading.Lock()  # one counter step and one block at a time
        self._name = counter_name(method, self.key_id())

    @classmethod
    def load(cls, path: Path, journal: CounterStore, method: str | None = None) -> PinKeys:
        """The key file at `path` (of `method`, when given: the configuration's)."""
        found, key, ident = read_key_file(path, method)
        keys = cls(found, key, ident, journal)
        if keys.exhausted:
            log.error("DUKPT key %s: its transaction counter is exhausted; no online PIN "
                      "until a new key is loaded (posterm key-load)", keys.key_id())
        return keys

    def __repr__(self) -> str:
        return f"PinKeys({self.method}, key ID {self.key_id()}, counter {self.counter()})"

    def key_id(self) -> str:
        """The initial key ID (AES) or initial KSN (TDES), hex: for status, never the key."""
        return self._ident.hex().upper()

    def counter(self) -> int:
        """The last transaction counter used (0: none yet)."""
        return self._journal.counter(self._name)

    @property
    def exhausted(self) -> bool:
        return dukpt.next_counter(self.method, self.counter()) is None

    def online_block(self, pin: bytearray, pan: str,
                     fill: bytes | None = None) -> tuple[bytes, bytes]:
        """(field 52, field 53): the PIN enciphered under the next KSN's PIN key, format 4
        (AES) or 0 (TDES), and that KSN. The counter is on disk first. `fill`: format 4's
        8 random bytes (os.urandom when None; a test gives its own). `pin` (ASCII digits)
        is overwritten with zeros, whatever happens."""
        try:
            if not self._key:
                raise PinKeyError("the DUKPT key store is closed")
            with self._lock:
                counter = self._journal.advance_counter(
                    self._name, lambda last: dukpt.next_counter(self.method, last))
                if counter is None:
                    raise PinKeyError(
                        f"DUKPT key {self.key_id()}: transaction counter exhausted; no more "
                        "online PINs until a new key is loaded (posterm key-load)")
                failpoints.hit("after_pin_counter")  # the counter on disk, no block yet
                if self.method == dukpt.AES:
                    pin_key = dukpt.aes_pin_key(bytes(self._key), self._ident, counter)
                    block = dukpt.format4_encipher(pin_key, pin, pan,
                                                   os.urandom(8) if fill is None else fill)
                    return block, dukpt.aes_ksn(self._ident, counter)
                ksn = dukpt.tdes_ksn(self._ident, counter)
                pin_key = dukpt.tdes_pin_key(bytes(self._key), ksn)
                return dukpt.format0_encipher(pin_key, pin, pan), ksn
        except dukpt.DukptError as exc:  # a PIN or PAN of the wrong shape: says which
            raise PinKeyError(f"no PIN block made: {exc}") from None
        finally:
            pin[:] = bytes(len(pin))

    def close(self) -> None:
        """Overwrite the key in memory; the store makes no block after this."""
        self._key[:] = bytes(len(self._key))
        self._key.clear()


# -- for `posterm status` -------------------------------------------------------------------
@dataclass(frozen=True)
class PinKeyFacts:
    """What status tells of the DUKPT key: never the key itself."""

    method: str
    loaded: bool
    key_id: str = ""
    counter: int = 0
    exhausted: bool = False
    problem: str = ""


def facts(path: Path, method: str, db: sqlite3.Connection | None) -> PinKeyFacts:
    """The key's ID (from its file) and counter (from the journal opened read-only)."""
    try:
        found, key, ident = read_key_file(path, method)
    except PinKeyError as exc:
        return PinKeyFacts(method, loaded=False, problem=str(exc))
    key[:] = bytes(len(key))
    key_id = ident.hex().upper()
    counter = 0
    if db is not None:
        try:
            row = db.execute("SELECT value FROM meta WHERE key=?",
                             (counter_name(found, key_id),)).fetchone()
            counter = int(row[0]) if row else 0
        except (sqlite3.Error, ValueError):
            pass
    return PinKeyFacts(found, loaded=True, key_id=key_id, counter=counter,
                       exhausted=dukpt.next_counter(found, counter) is None)


def facts_doc(f: PinKeyFacts | None) -> dict[str, Any] | None:
    return None if f is None else {
        "method": f.method, "loaded": f.loaded, "key_id": f.key_id, "counter": f.counter,
        "exhausted": f.exhausted, "problem": f.problem}


# -- key injection: `posterm key-load` --------------------------------------------------
def read_source(source: str) -> str:
    """The key's text from a file (readable by its owner alone) or "-", standard input.

    This is the clear-text key injection of a key loading device or a key ceremony. A
    remote key transport (TR-34: the key distribution host's signed, enveloped key block,
    checked against the terminal's credentials and opened with its private key) would be
    another source giving the same text, the same (method, key, ID) through `install`;
    it is not implemented."""
    import sys

    if source == "-":
        return sys.stdin.read(MAX_KEY_FILE_BYTES + 1)[:MAX_KEY_FILE_BYTES + 1]
    path = Path(source)
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PinKeyError(f"{source} is open to other users (mode "
                              f"{stat.S_IMODE(info.st_mode):o}): a key's source must be "
                              "readable by its owner alone (chmod 600), or given on "
                              "standard input")
        with open(path, encoding="ascii") as f:
            return f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise PinKeyError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PinKeyError(f"{source} is not ASCII text") from None


def unfinished_sales(journal: Path) -> int:
    """Sales the journal shows as not final (a PIN block may be in flight for them)."""
    if not journal.exists():
        return 0
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT count(*) FROM sales WHERE status='AUTHORIZING'").fetchone()
        return int(row[0])
    except sqlite3.Error:
        return 0  # no sales table yet
    finally:
        db.close()


def install(text: str, path: Path, method: str, state_dir: Path) -> str:
    """Check the key's text and write it to `path` (mode 600; owned by the state
    directory's owner, the service user, when run as root); the line to print.
    PinKeyError when refused: nothing is written then. The firmware must be stopped (its
    state directory's lock is taken for the while), and a key already there is replaced
    only when no sale is unfinished in the journal."""
    if len(text) > MAX_KEY_FILE_BYTES:
        raise PinKeyError("the key's text is too long: it is not a key")
    try:
        found, key, ident = pinkeyfile.parse_key_text(text, method)
    except dukpt.DukptError as exc:
        raise PinKeyError(str(exc)) from None
    journal = state_dir / "journal.sqlite3"
    try:
        with _firmware_stopped(state_dir):
            if path.exists():
                pending = unfinished_sales(journal)
                if pending:
                    raise PinKeyError(f"{pending} sale(s) in the journal are not finished: "
                                      "start posterm to finish them, stop it, then load the "
                                      "new key")
            owner = state_dir if state_dir.is_dir() else path.parent
            _write_private(path, pinkeyfile.key_text(found, key, ident).encode("ascii"), owner)
        kcv = dukpt.check_value(found, key).hex().upper()
    finally:
        key[:] = bytes(len(key))
    key_id = ident.hex().upper()
    used = 0
    if journal.exists():
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key=?",
                             (counter_name(found, key_id),)).fetchone()
            used = int(row[0]) if row else 0
        except sqlite3.Error:
            pass
        finally:
            db.close()
    goes_on = f"; its transaction counter goes on from {used}" if used else ""
    return (f"DUKPT key loaded into {path}: {found.upper()}, key ID {key_id}, check value "
            f"{kcv}{goes_on}")


@contextlib.contextmanager
def _firmware_stopped(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's lock (statedir.py) if it exists; a running firmware
    holds it, and keeps its key in memory: refused then. The lock file is never created
    here (root's would lock the service out)."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise PinKeyError(f"cannot open {state_dir / LOCK_NAME}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PinKeyError("posterm is running on this state directory: stop it first "
                              "(systemctl stop posterm), load the key, start it") from None
        yield
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes, owner_dir: Path) -> None:
    try:
        write_private(path, data, owner_dir=owner_dir)
    except OSError as exc:
        raise PinKeyError(f"cannot write the key file {path}: {exc.strerror}") from None
