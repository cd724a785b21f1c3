"""Each configuration key declared once, and the one loader that reads any table from it.

A table is a frozen dataclass; each of its fields is declared with one of the helpers
below (`integer`, `number`, `boolean`, `text`, `path`, `command`, `custom`, `backend`,
`entries`),
which put a `Key` in the field's metadata: the key's default as the file would hold it
(or REQUIRED), its type and bounds or choices, the message a wrong value gets, its help
text, and for a device table the backends it belongs to. The field's own default is
derived from that one declaration (`convert` turns the file's value into the field's), so
a default is written once; `read_table` reads a whole table from the declarations alone
(types, bounds, required and unknown keys), and `firmware.config_doc` prints the README's
table from the same declarations.

An array of tables ([[chip.aids]]) is one key of its table, declared with `entries`: the
dataclass of one entry (whose keys are declared like any table's), the least valid entry
(its required keys, for the tests that read each table alone) and a check of one entry
across its keys. Each entry is read by the same loader and named by its path in errors:
"posterm.toml: chip.aids[0].aid: ...".

In a table with a `backend` key, a key declared for some backends only is read for those;
under another backend it is still accepted and checked when it has a default, and refused
as unknown when it has none (a socket under a backend that has no socket).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from firmware.config_values import MISSING, Table

REQUIRED: Any = MISSING  # the default of a key the file must give
KEY = "posterm.key"  # where a field's metadata holds its Key
T = TypeVar("T")


@dataclass(frozen=True)
class Key:
    """How one key is read, bounded, converted and documented."""

    kind: str  # int, number, bool, text, path, socket, command, custom, backend, entries
    default: Any  # as the file would hold it; REQUIRED when the file must give it
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] = ()
    what: str = ""  # what a wrong value is told it must be ("must be ...")
    check: Callable[[Any], bool] | None = None  # text: the value is acceptable
    read: Callable[[Table, str, Any], Any] | None = None  # custom: check, return the value
    convert: Callable[[Any], Any] | None = None  # the file's value -> the field's value
    toml: str = ""  # the key in the file, when it is not the field's name
    backends: tuple[str, ...] = ()  # a device table's backends it belongs to; () for all
    needed: str = ""  # an example: the key has a default but its backends need a value
    unit: str = "seconds"
    optional: bool = False  # a path that may be ""
    hex: bool = False  # shown in hexadecimal (I2C addresses)
    entry: type | None = None  # entries: the dataclass of one entry
    least: tuple[tuple[str, Any], ...] = ()  # entries: the least valid entry's keys
    entry_check: Callable[[Table, Any], None] | None = None  # entries: one entry's check

    def belongs(self, backend: str | None) -> bool:
        return not self.backends or backend in self.backends

    def field_default(self) -> Any:
        """The dataclass field's default, derived from the declaration."""
        if self.default is REQUIRED:
            # A key of some backends only: a value for the others, never read from the file.
            return {"int": 0, "number": 0.0, "bool": False}.get(self.kind, "")
        value = self.convert(self.default) if self.convert else self.default
        if isinstance(value, list | dict | set):
            raise TypeError("a mutable default: declare a convert to an immutable value")
        return value


def _field(spec: Key) -> Any:
    meta = {KEY: spec}
    if spec.default is REQUIRED and not spec.backends:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=spec.field_default(), metadata=meta)


def integer(default: Any, *, lo: int, hi: int, help: str, what: str = "",
            choices: tuple[int, ...] = (), backends: tuple[str, ...] = (), toml: str = "",
            hex: bool = False) -> Any:
    return _field(Key("int", default, help, lo=lo, hi=hi, what=what, choices=choices,
                      backends=backends, toml=toml, hex=hex))


def choice(default: Any, *, choices: tuple[int, ...], what: str, help: str,
           backends: tuple[str, ...] = ()) -> Any:
    """An integer from a list (baud rates)."""
    return _field(Key("int", default, help, choices=choices, what=what, backends=backends))


def number(default: Any, *, lo: float, hi: float, help: str, unit: str = "seconds",
           toml: str = "", convert: Callable[[Any], Any] | None = float) -> Any:
    return _field(Key("number", default, help, lo=float(lo), hi=float(hi), unit=unit, toml=toml,
                      convert=convert))


def boolean(default: Any, *, help: str) -> Any:
    return _field(Key("bool", default, help))


def text(default: Any, *, check: Callable[[str], bool], what: str, help: str,
         convert: Callable[[Any], Any] | None = None, toml: str = "",
         backends: tuple[str, ...] = ()) -> Any:
    return _field(Key("text", default, help, check=check, what=what, convert=convert,
                      toml=toml, backends=backends))


def path(default: Any, *, help: str, optional: bool = False, socket: bool = False,
         backends: tuple[str, ...] = (), needed: str = "") -> Any:
    return _field(Key("socket" if socket else "path", default, help, optional=optional,
                      backends=backends, needed=needed))


def command(default: list[str], *, help: str) -> Any:
    return _field(Key("command", default, help, convert=tuple))


def custom(default: Any, *, read: Callable[[Table, str, Any], Any], what: str, help: str,
           convert: Callable[[Any], Any] | None = None) -> Any:
    """A key with its own check (`read` raises the table's error or returns the value)."""
    return _field(Key("custom", default, help, read=read, what=what, convert=convert))


def backend(choices: tuple[str, ...], *, help: str, default: Any = REQUIRED,
            what: str = "") -> Any:
    """A device table's `backend`: which driver opens the device (names a factory that the
    runtime registers, firmware/runtime/wiring.py)."""
    return _field(Key("backend", default, help, choices=choices,
                      what=what or "must be one of " + ", ".join(sorted(choices))))


def entries(schema: type, *, least: dict[str, Any], help: str, what: str,
            check: Callable[[Table, Any], None] | None = None) -> Any:
    """An array of tables ([[chip.aids]]): a tuple of `schema`, one per entry, each read from
    `schema`'s declarations and then checked by `check(entry's table, entry)`."""
    return _field(Key("entries", [], help, what=what, convert=tuple, entry=schema,
                      least=tuple(least.items()), entry_check=check))


def read_entries(t: Table, key: str, spec: Key) -> list[Any]:
    """Each table of the array under `key`, read from the entry's declarations."""
    value = t.lookup(key, spec.default)
    if not (isinstance(value, list) and all(isinstance(x, dict) for x in value)):
        raise t.error(key, spec.what, value)
    assert spec.entry is not None, key
    out: list[Any] = []
    for i, data in enumerate(value):
        e = t.entry(key, i, data)
        item: Any
        item, _ = read_table(e, spec.entry)
        if spec.entry_check:
            spec.entry_check(e, item)
        out.append(item)
    return out


# -- reading the declarations ------------------------------------------------------------
def keys(schema: type) -> Iterator[tuple[str, str, Key]]:
    """(field name, key in the file, Key) of each field, in declaration order."""
    for f in dataclasses.fields(schema):
        spec: Key = f.metadata[KEY]
        yield f.name, spec.toml or f.name, spec


def backends(schema: type) -> tuple[str, ...]:
    """The backend names a device table declares; () for a table without backends."""
    return next((spec.choices for _, _, spec in keys(schema) if spec.kind == "backend"), ())


def limits(schema: type) -> dict[str, tuple[float, float]]:
    """key -> (lowest, highest) of each bounded number of the table."""
    return {key: (spec.lo, spec.hi) for _, key, spec in keys(schema)
            if spec.lo is not None and spec.hi is not None}


def read_value(t: Table, key: str, spec: Key) -> Any:
    """One key, checked by its declaration; the file's value (not yet converted)."""
    d = spec.default
    if spec.kind == "backend":
        return t.text(key, d, check=lambda v: v in spec.choices, what=spec.what)
    if spec.kind == "int":
        if spec.lo is not None and spec.hi is not None:
            value = t.integer(key, d, lo=spec.lo, hi=spec.hi, what=spec.what)
            if spec.choices and value not in spec.choices:
                raise t.error(key, "must be one of " + ", ".join(map(str, spec.choices)), value)
            return value
        return t.one_of(key, d, spec.choices, spec.what)
    if spec.kind == "number":
        assert spec.lo is not None and spec.hi is not None
        return t.number(key, d, lo=spec.lo, hi=spec.hi, unit=spec.unit)
    if spec.kind == "bool":
        return t.boolean(key, d)
    if spec.kind == "text":
        assert spec.check is not None
        return t.text(key, d, check=spec.check, what=spec.what)
    if spec.kind in ("path", "socket"):
        return t.path(key, d, optional=spec.optional, socket=spec.kind == "socket")
    if spec.kind == "command":
        return t.command(key, d)
    if spec.kind == "entries":
        return read_entries(t, key, spec)
    assert spec.read is not None, key
    return spec.read(t, key, t.lookup(key, d))


def read_table(t: Table, schema: type[T]) -> tuple[T, dict[str, Any]]:
    """The table as its dataclass, and the values of the keys that belong to its backend
    (by key in the file, the backend left out): a device's options."""
    chosen: str | None = None
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    accepted: set[str] = set()
    for name, key, spec in keys(schema):
        belongs = spec.belongs(chosen)
        if not belongs and spec.default is REQUIRED:
            continue  # another backend's key: unknown here
        accepted.add(key)
        value = read_value(t, key, spec)
        if spec.kind == "backend":
            chosen = value
        elif belongs and spec.needed and value == "":
            raise t.error(key, f'is needed with backend = "{chosen}" (e.g. "{spec.needed}")')
        values[name] = spec.convert(value) if spec.convert else value
        if belongs and spec.kind != "backend":
            options[key] = values[name]
    t.finish(accepted)
    return schema(**values), options
