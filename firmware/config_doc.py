"""The README's configuration table, printed from the declarations of the keys.

`python -m firmware.config_doc` prints it as Markdown, one row per key of every table,
in the order the tables are read: the default as the file would hold it, the bounds
or choices the loader checks, and the key's help (for a key of some backends only,
which backends). tests/test_config_doc.py checks that README.md holds exactly this
table, so the README cannot say other than the code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from firmware.config import TABLES
from firmware.config_schema import REQUIRED, Key, keys

HEADER = ("| table | key | default | bounds | meaning |\n"
          "|---|---|---|---|---|\n")
UNITS = {"seconds": "s", "hours": "hours", "minutes": "minutes"}


def literal(value: Any, *, hex: bool = False) -> str:
    """A value as TOML writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"0x{value:02x}" if hex else str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def default(spec: Key) -> str:
    if spec.default is REQUIRED or spec.needed:
        return "required"
    return f"`{literal(spec.default, hex=spec.hex)}`"


def bounds(spec: Key) -> str:
    if spec.kind == "backend":
        return ", ".join(f"`{c}`" for c in spec.choices)
    if spec.kind in ("int", "number") and spec.choices:
        return ", ".join(map(str, spec.choices))
    if spec.kind == "int" and spec.lo is not None and spec.hi is not None:
        return f"{literal(int(spec.lo), hex=spec.hex)}-{literal(int(spec.hi), hex=spec.hex)}"
    if spec.kind == "number":
        return f"{spec.lo:g}-{spec.hi:g} {UNITS[spec.unit]}"
    if spec.kind in ("path", "socket"):
        what = "a Unix socket path" if spec.kind == "socket" else "a path"
        return what + (', or ""' if spec.optional else "")
    if spec.kind == "command":
        return "a list of words, the program first"
    return spec.what.removeprefix("must be ")


def meaning(spec: Key) -> str:
    if not spec.backends:
        return spec.help
    names = " or ".join(f'`"{b}"`' for b in spec.backends)
    return f"with backend = {names}: {spec.help}"


def rows() -> list[tuple[str, str, str, str, str]]:
    return [(decl.name, key, default(spec), bounds(spec), meaning(spec))
            for decl in TABLES for _, key, spec in keys(decl.schema)]


def markdown() -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")
    return HEADER + "".join("| " + " | ".join(cell(c) for c in row) + " |\n"
                            for row in rows())


def main() -> int:
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
