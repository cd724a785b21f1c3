"""Each configuration key is declared once: a default cannot be written twice.

A key exists only as a field of its table's dataclass declared with one of
firmware.config_schema's helpers, which hold the default as the file would give
it; the field's own default is derived from that declaration, and the loader reads
every table from the declarations alone (it names no key and holds no default).
These tests make the other ways of writing a default fail: a plain field default
(no declaration), a field default that is not the declaration's, a key read by
name in the loader, a default in `Config` itself. They replace the check that
the dataclass defaults and the loader's defaults agree (there is only one now).

The core (CoreConfig, OfflineRules, LinkPolicy) and the print queue (Settings)
keep defaults of their own for code that builds them without a file; they may not
import the configuration, so the last test checks they say the same.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
from typing import Any

import pytest

from firmware import config
from firmware.config_schema import KEY, REQUIRED, Key, keys, read_table

ROOT = pathlib.Path(__file__).resolve().parent.parent
MINIMAL: dict[str, Any] = {
    "terminal": {"id": "TERM0001", "merchant_id": "MERCHANT0000001", "merchant_name": "SHOP",
                 "currency": "978"},
    "host": {"host": "127.0.0.1", "port": 5000, "ca_file": "/etc/ssl/certs/ca-certificates.crt"},
    "card_reader": {"backend": "serial", "port": "/dev/ttyUSB0"},
    "keypad": {"backend": "evdev", "path": "/dev/input/event0"},
    "printer": {"backend": "network", "host": "127.0.0.1"},
    "display": {"backend": "smbus2"},
}
TABLE_READERS = {"lookup", "integer", "number", "boolean", "text", "path", "command", "one_of"}


def _fields() -> list[tuple[str, dataclasses.Field[Any]]]:
    return [(decl.name, f) for decl in config.TABLES for f in dataclasses.fields(decl.schema)]


@pytest.mark.parametrize("table,field", _fields(), ids=lambda x: getattr(x, "name", x))
def test_every_field_of_every_table_is_a_declared_key(table: str,
                                                      field: dataclasses.Field[Any]) -> None:
    spec = field.metadata.get(KEY)
    assert isinstance(spec, Key), f"[{table}] {field.name}: a field without a declaration"
    assert spec.help, f"[{table}] {field.name}: no help text"
    if spec.default is REQUIRED and not spec.backends:
        assert field.default is dataclasses.MISSING
        assert field.default_factory is dataclasses.MISSING
    else:  # the field's default is the declaration's, converted: nothing else
        assert field.default_factory is dataclasses.MISSING
        assert field.default == spec.field_default()


def test_a_backend_is_declared_before_the_keys_that_depend_on_it() -> None:
    for decl in config.TABLES:
        specs = [spec for _, _, spec in keys(decl.schema)]
        kinds = [spec.kind for spec in specs]
        if "backend" in kinds:
            assert kinds.index("backend") == 0, decl.name
        else:
            assert not any(spec.backends for spec in specs), decl.name


def test_the_loader_reads_no_key_by_name() -> None:
    """No configuration module calls a Table reader with a key written out (such a call
    is where a second default would be written: `t.number("card", 30.0)`)."""
    found = []
    for path in sorted((ROOT / "firmware").glob("config*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in TABLE_READERS and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                found.append(f"{path.name}:{node.lineno} {node.func.attr}({node.args[0].value!r})")
    assert found == []


def test_config_itself_declares_no_default() -> None:
    """Config gathers the tables; a default there would be a second one."""
    with_default = [f.name for f in dataclasses.fields(config.Config)
                    if f.default is not dataclasses.MISSING
                    or (f.default_factory is not dataclasses.MISSING and f.name != "raw")]
    assert with_default == []


def test_a_declared_default_cannot_be_given_as_a_mutable_value() -> None:
    from firmware.config_schema import text

    with pytest.raises(TypeError, match="mutable default"):
        @dataclasses.dataclass(frozen=True)
        class Bad:  # noqa: F841
            names: tuple[str, ...] = text(["a"], check=bool, what="x", help="x")


@pytest.mark.parametrize("decl", config.TABLES, ids=lambda d: d.name)
def test_a_key_left_out_takes_its_declared_default(decl: config.TableDecl) -> None:
    """The loader takes each default from the declaration (read through `parse`)."""
    from firmware.config_values import Table

    given = dict(MINIMAL.get(decl.name, decl.absent))
    values, _ = read_table(Table("posterm.toml", decl.name, given), decl.schema)
    for name, key, spec in keys(decl.schema):
        if key not in given and spec.default is not REQUIRED:
            assert getattr(values, name) == spec.field_default(), (decl.name, key)
    parsed = config.parse(MINIMAL)
    assert parsed.core.card_timeout == 30.0 and parsed.modem.apn == "internet"


def _declared(table: str, key: str) -> Any:
    schema = dict((d.name, d.schema) for d in config.TABLES)[table]
    return next(spec.field_default() for _, k, spec in keys(schema) if k == key)


def test_the_core_and_the_print_queue_defaults_agree_with_the_declarations() -> None:
    from firmware.core.link import LinkPolicy
    from firmware.core.model import CoreConfig
    from firmware.core.risk import OfflineRules
    from firmware.runtime.printqueue import Settings

    own: dict[tuple[str, str], Any] = {}
    for cls, table, names in (
            (CoreConfig, "timeouts", {"amount_timeout": "amount_entry", "card_timeout": "card",
                                      "result_timeout": "result",
                                      "busy_retries": "busy_retries",
                                      "busy_backoff": "busy_backoff",
                                      "sale_budget": "sale_budget"}),
            (CoreConfig, "operator", {"protect": "protect",
                                      "duplicate_minutes": "duplicate_minutes"}),
            (OfflineRules, "offline", {n: n for n in ("enabled", "floor_limit", "total_limit",
                                                      "max_count", "max_age_hours",
                                                      "blocked_bins")}),
            (LinkPolicy, "offline", {n: n for n in ("down_after", "probe_base", "probe_cap")}),
            (Settings, "printer", {n: n for n in ("status_interval", "retry_max",
                                                  "job_timeout")})):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for attr, key in names.items():
            own[(table, key)] = defaults[attr]
    drift = {k: (v, _declared(*k)) for k, v in own.items() if v != _declared(*k)}
    assert drift == {}
