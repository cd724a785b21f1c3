"""Typed, bounded access to one TOML table: the value-level rules of the configuration.

The file-wide limits, the predicates for text, host names and paths, and `Table`, which
reads one table's keys by type and bound and names the table and key in every error.
Which tables and keys exist, with their defaults and bounds, is declared once in
`firmware.config_tables` and `firmware.config_devices` (see `firmware.config_schema`).
"""

from __future__ import annotations

import os
import re
import reprlib
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.errors import ConfigError


# -- limits -------------------------------------------------------------------------------
MAX_FILE_BYTES = 1 << 20  # a configuration is a few kB; more is not a configuration
AMOUNT_MAX = 999_999_999_999  # field 4 holds 12 digits of minor units
RECEIPT_WIDTH = 32  # columns of the 58 mm receipt (font A)
ADDRESS_LINES = 6
PATH_MAX_BYTES = 1024
NAME_MAX_BYTES = 255  # one path component
SOCKET_MAX_BYTES = 107  # sun_path of a Unix socket, without its final NUL
BLOCKED_BINS_MAX = 1000
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)

_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2

_HOSTNAME = re.compile(r"[A-Za-z0-9._:%-]{1,253}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
MISSING: Any = object()


def short(value: Any) -> str:
    """A one-line, bounded repr of a value from the file."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a value no repr can show: still one line
        text = f"<{type(value).__name__}>"
    return text if text.isprintable() else ascii(text)


def key_name(key: str) -> str:
    """A key or table name as the message shows it: bare if it is plain, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else short(key)


def ascii_printable(text: str) -> bool:
    return all(" " <= c <= "~" for c in text)


def receipt_text(text: str) -> bool:
    """Printable, one column per character: what a receipt line may hold."""
    return text.isprintable() and all(
        unicodedata.east_asian_width(c) not in "WF" and not unicodedata.combining(c)
        for c in text)


def hostname(text: str) -> bool:
    return bool(_HOSTNAME.fullmatch(text)) and not text.startswith(("-", "."))


HOSTNAME_WHAT = ("must be a host name or IP address (1 to 253 ASCII letters, digits, "
                 "'.', '-', '_', ':', '%')")


class Table:
    """Typed, bounded access to one TOML table, naming the key in every error."""

    def __init__(self, source: str, name: str, data: Any) -> None:
        if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
            raise ConfigError(f"{source}: [{name}]: must be one table [{name}], "
                              f"not an array of tables [[{name}]]")
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}]: must be a table, got {short(data)}")
        self.source, self.name, self.data = source, name, data
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        """How a message names the key: "posterm.toml: [host] port"."""
        return f"{self.source}: [{self.name}] {key_name(key)}"

    def error(self, key: str, what: str, value: Any = MISSING) -> ConfigError:
        got = self.data.get(key) if value is MISSING else value
        return ConfigError(f"{self.where(key)}: {what}, got {short(got)}")

    def fail(self, key: str, text: str) -> ConfigError:
        """An error in words of its own, without the value (a long or secret one)."""
        return ConfigError(f"{self.where(key)}: {text}")

    def entry(self, key: str, index: int, data: Any) -> Entry:
        """One table of the array of tables under `key` ([[chip.aids]])."""
        return Entry(self.source, f"{self.name}.{key}[{index}]", data)

    def lookup(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is MISSING:
                raise ConfigError(f"{self.where(key)}: missing (required)")
            return default
        return self.data[key]

    def integer(self, key: str, default: Any, *, lo: float, hi: float, what: str = "") -> int:
        value = self.lookup(key, default)
        if not (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi):
            raise self.error(key, what or f"must be an integer from {lo:.0f} to {hi:.0f}", value)
        return value

    def one_of(self, key: str, default: Any, allowed: tuple[int, ...], what: str) -> int:
        value = self.lookup(key, default)
        if not (isinstance(value, int) and not isinstance(value, bool) and value in allowed):
            raise self.error(key, f"{what}: " + ", ".join(map(str, allowed)), value)
        return value

    def number(self, key: str, default: Any, *, lo: float, hi: float,
               unit: str = "seconds") -> float:
        value = self.lookup(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        # Compare before converting: a huge integer has no float, NaN fails every comparison.
        if not (ok and lo <= value <= hi):
            raise self.error(key, f"must be a number of {unit} from {lo:g} to {hi:g}", value)
        return float(value)

    def boolean(self, key: str, default: Any = MISSING) -> bool:
        value = self.lookup(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false", value)
        return value

    def text(self, key: str, default: Any = MISSING, *, check: Callable[[str], bool],
             what: str) -> str:
        value = self.lookup(key, default)
        if not isinstance(value, str) or not check(value):
            raise self.error(key, what, value)
        return value

    def path(self, key: str, default: Any = MISSING, *, optional: bool = False,
             socket: bool = False) -> str:
        """A file system path (or pyserial URL): no control characters, bounded length."""
        value = self.lookup(key, default)
        if optional and value == "":
            return ""
        limit = SOCKET_MAX_BYTES if socket else PATH_MAX_BYTES
        what = (f"must be a {'Unix socket ' if socket else ''}path of 1 to {limit} bytes "
                "without control characters")
        if not isinstance(value, str) or not value or not value.isprintable():
            raise self.error(key, what, value)
        if len(value.encode()) > limit:
            raise self.error(key, what, value)
        if any(len(part.encode()) > NAME_MAX_BYTES for part in value.split("/")):
            raise self.error(key, f"has a path component longer than {NAME_MAX_BYTES} bytes",
                             value)
        return value

    def command(self, key: str, default: list[str]) -> list[str]:
        """A command as a list of words (program first), no control characters."""
        value = self.lookup(key, default)
        if not (isinstance(value, list) and 1 <= len(value) <= 32 and all(
                isinstance(w, str) and w and w.isprintable() and len(w) <= 1024 for w in value)):
            raise self.error(key, "must be a command: a list of 1 to 32 non-empty printable "
                             "strings, the program first", value)
        return value

    def finish(self, known_keys: set[str] | None = None) -> None:
        """Refuse a key that was not read (`known_keys`: every key the table accepts)."""
        unknown = sorted(set(self.data) - self.used, key=str)
        if unknown:
            known = ", ".join(sorted(self.used if known_keys is None else known_keys))
            raise ConfigError(f"{self.where(unknown[0])}: unknown key (known keys: {known})")


class Entry(Table):
    """One table of an array of tables, named by its path as TOML would dot it:
    "posterm.toml: chip.ca_keys[1].exponent: 5 is not 3 or 65537" (entries count from 0).
    A value that "must be" something is told what it "is not"."""

    def __init__(self, source: str, path: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {path}: must be a table, got {short(data)}")
        self.source, self.name, self.data = source, path, data
        self.used = set()

    def where(self, key: str) -> str:
        return f"{self.source}: {self.name}.{key_name(key)}"

    def error(self, key: str, what: str, value: Any = MISSING) -> ConfigError:
        got = self.data.get(key) if value is MISSING else value
        if what.startswith("must be "):
            return ConfigError(f"{self.where(key)}: {short(got)} is not "
                               f"{what.removeprefix('must be ')}")
        return ConfigError(f"{self.where(key)}: {what}, got {short(got)}")


# -- paths on disk ------------------------------------------------------------------------
def why_unreadable(path: Path) -> str:
    """Why `path` is not a readable regular file, or ''."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    return ""


def why_no_directory(path: Path) -> str:
    """Why no directory can be at `path` (it exists as something else, or a parent is a
    file), or '' when it is or may be created: permissions are the start's to check."""
    for p in (path, *path.absolute().parents):
        try:
            info = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:  # e.g. no permission to look (check-config as another user)
            return ""
        if stat.S_ISDIR(info.st_mode):
            return ""
        if p == path:
            return "exists and is not a directory"
        return f"cannot be created: {short(str(p))} is not a directory"
    return ""
