"""The fleet's `params` command (docs/fleet.md): a signed, versioned parameter set.

`{"version": int, "set": {table: {key: value}}}` may change any setting of the
configuration. It is checked by the same code as the file: the set is put over the running
configuration's data (`Config.raw`: the file with the parameters already applied, and any
set still waiting) and the whole goes through `firmware.config.parse`; its ConfigError is
the refusal's one line, and nothing changes. A version not newer than the one applied (or
waiting) is refused ("old version"); `[terminal] state_dir` cannot be set (the parameters
are kept there).

A valid set is journaled first (note `fleet_params_pending`, durable: the set and its
version), then applied at the terminal's next idle moment by the firmware's own restart
path: the parameters so far, this set over them, are written to
`state_dir/fleet-params.toml` (fsynced, renamed into place, mode 600), which
`firmware.config.load` puts over the file at every start; the version written is journaled
(`fleet_params_written`) and a restart is asked. At the next start, the written version
being the one waiting, it becomes the applied one (`fleet_params_version`, reported in the
telemetry as `device.params_version`) and the event `params` {"version", "applied": true}
says so. A stop between the two writes finds the set still waiting at the next start, and
it is written again at idle: the same file, idempotently.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from firmware import config as config_mod
from firmware.config import Config
from firmware.errors import ConfigError
from firmware.runtime.fleet_words import Refused
from firmware.runtime.journal import Journal
from firmware.runtime.statedir import write_private

PENDING = "fleet_params_pending"  # {"version", "set"}: journaled, not yet written
WRITTEN = "fleet_params_written"  # the version the overlay file holds, a restart asked
APPLIED = "fleet_params_version"  # the version the running configuration holds
VERSION_MAX = 2 ** 53  # what a JSON number holds exactly
SOURCE = "params"  # the refusal's first word, where the file's name would be


def toml_value(value: Any) -> str:
    """A JSON value as TOML (inline); ValueError for what TOML cannot say (null, NaN)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise ValueError(f"{'null' if value is None else type(value).__name__} is not a value")


def toml_text(tables: dict[str, dict[str, Any]], version: int) -> str:
    lines = [f"# posterm: the fleet's parameters, version {version} (docs/fleet.md `params`)",
             "# written by the firmware; delete this file to start with the configuration "
             "file alone"]
    for name, keys in tables.items():
        lines += ["", f"[{toml_value(name)}]"]
        lines += [f"{toml_value(key)} = {toml_value(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


class Params:
    def __init__(self, cfg: Config | None, journal: Journal) -> None:
        self.cfg, self.journal = cfg, journal

    @property
    def path(self) -> Path | None:
        return self.cfg.state_dir / config_mod.OVERLAY if self.cfg is not None else None

    def version(self) -> int | None:
        """The version the running configuration holds; None: none applied yet."""
        text = self.journal.note(APPLIED)
        return int(text) if text.isdigit() else None

    def pending(self) -> dict[str, Any] | None:
        try:
            got = json.loads(self.journal.note(PENDING) or "null")
        except ValueError:
            return None
        return got if isinstance(got, dict) and isinstance(got.get("set"), dict) else None

    def started(self) -> dict[str, Any] | None:
        """At start: the set waiting was written before this start: it is applied now
        (the `params` event's data). Otherwise None (a set still waiting: `due`)."""
        waiting = self.pending()
        if waiting is None or self.journal.note(WRITTEN) != str(waiting["version"]):
            return None
        self.journal.set_note(APPLIED, str(waiting["version"]))
        self.journal.set_note(PENDING, "")
        self.journal.set_note(WRITTEN, "")
        return {"version": waiting["version"], "applied": True}

    def due(self) -> bool:
        return self.pending() is not None

    def check(self, args: dict[str, Any]) -> tuple[int, dict[str, dict[str, Any]]]:
        """The set's shape, its version, then the whole configuration as the file's code
        reads it; Refused with one line if anything is wrong (nothing changes)."""
        if self.cfg is None:
            raise Refused("not implemented")  # a channel made without the configuration
        version, tables = args.get("version"), args.get("set")
        if not isinstance(version, int) or isinstance(version, bool) \
                or not 0 < version <= VERSION_MAX:
            raise Refused("version: must be a positive integer")
        if not isinstance(tables, dict) or not tables:
            raise Refused("set: must be an object {table: {key: value}}, not empty")
        for name, keys in tables.items():
            if not isinstance(keys, dict) or not keys:
                raise Refused(f"set: [{str(name)[:40]}] must be an object {{key: value}}, "
                              "not empty")
        if "state_dir" in tables.get("terminal", {}):
            raise Refused("[terminal] state_dir: cannot be set by the fleet (the parameters "
                          "are kept there)")
        waiting = self.pending()
        newest = max(self.version() or 0, int(waiting["version"]) if waiting else 0)
        if version <= newest:
            raise Refused(f"old version: {version} is not newer than {newest}")
        so_far = config_mod.merge(self.cfg.raw, waiting["set"]) if waiting else self.cfg.raw
        try:
            config_mod.parse(config_mod.merge(so_far, tables), source=SOURCE,
                             path=self.cfg.path)
        except ConfigError as exc:
            raise Refused(" ".join(str(exc).split())) from None
        try:
            whole = self._tables(tables)
            if tomllib.loads(toml_text(whole, version)) != whole:
                raise ValueError("a value TOML does not keep as it is")
        except (ValueError, RecursionError) as exc:
            raise Refused(f"set: {exc}") from None
        return version, tables

    def take(self, version: int, tables: dict[str, dict[str, Any]]) -> None:
        """Journal the set (durable), over any set still waiting."""
        waiting = self.pending()
        merged = config_mod.merge(waiting["set"], tables) if waiting else tables
        self.journal.set_note(PENDING, json.dumps({"version": version, "set": merged},
                                                  sort_keys=True))

    def _tables(self, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The parameters written so far, the waiting set and `extra` over them."""
        current: dict[str, Any] = {}
        if self.path is not None:
            try:
                current = tomllib.loads(self.path.read_text("utf-8"))
            except FileNotFoundError:
                pass
        waiting = self.pending()
        if waiting:
            current = config_mod.merge(current, waiting["set"])
        return config_mod.merge(current, extra)

    def write(self) -> int | None:
        """Write the parameters with the waiting set to the overlay (durably) and journal
        its version; the version, or None if nothing waits. The caller restarts."""
        waiting = self.pending()
        if waiting is None or self.path is None:
            return None
        version = int(waiting["version"])
        text = toml_text(self._tables({}), version)
        write_private(self.path, text.encode("utf-8"))
        self.journal.set_note(WRITTEN, str(version))
        return version
