"""Configuration fuzz: several hundred deterministic variants of a valid configuration.

Each variant is a complete, valid configuration (tls = false, every path inside
tmp_path) with one to three mutations: types swapped, numbers out of range,
strange text, a wrong structure, or raw bytes (truncation, BOM, invalid UTF-8,
deep nesting, duplicate keys, garbage). `posterm check-config` runs in-process on
every one of them and must answer exit 0, or exit 2 with one line that names the
table and key (or the file). A sample also goes through `posterm run` as a real
process, whose devices do not exist: it must stop with one line, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import math
import pathlib
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from firmware import config as config_mod
from firmware.__main__ import main
from firmware.core import iso
from firmware.core.card import CardData
from firmware.errors import ConfigError
from tests.rig import _env

SEED = 8583
VARIANTS = 600
RUN_SAMPLE = 30

PREFIX = "posterm: configuration error: "
# What follows the prefix: the file and a table (and key), or the file and what is wrong
# with it as a whole, or a file that cannot be read.
SHAPE = re.compile(
    r"posterm\.toml: (?:\[(?P<table>.+?)\](?:: | (?P<key>'[^']*'|\"[^\"]*\"|[A-Za-z0-9_-]+): )"
    r"|(?P<file>no settings|not valid TOML: |not valid UTF-8|starts with a UTF-8 byte order)"
    r"|(?P<top>'[^']*'|\"[^\"]*\"|[A-Za-z0-9_-]+): a setting outside any table)")

UTC = dt.timezone.utc


# -- a small TOML writer -----------------------------------------------------------------
def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _string(name)


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps(doc: dict[str, Any]) -> str:
    """TOML text: top-level values, then [tables] (nested tables inline), then [[arrays]]."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not _is_table_array(v)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"\n[{_key(name)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
        elif _is_table_array(table):
            for item in table:
                lines.append(f"\n[[{_key(name)}]]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def test_writer_round_trips() -> None:
    import tomllib

    doc = {"top": 1, "t": {"s": "a\"\\\x00\x7fé😀", "f": -0.0, "i": 10**30 // 10**12,
                           "b": True, "l": [1, "x", [2.5]], "d": {"x y": 1},
                           "when": dt.datetime(1979, 5, 27, 7, 32, tzinfo=UTC)},
           "arr": [{"a": 1}, {"a": 2}]}
    assert tomllib.loads(dumps(doc)) == doc
    assert math.isnan(tomllib.loads(dumps({"t": {"n": math.nan}}))["t"]["n"])


# -- the base configuration --------------------------------------------------------------
def base_config(tmp: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Complete and valid, like hwsim's render_config, every documented key given; the
    devices point at paths that do not exist, so `posterm run` stops with a device error."""
    socket = str(tmp / "hwsim.sock")
    return {
        "terminal": {
            "id": "TERM0001", "merchant_id": "MERCHANT0000001",
            "merchant_name": "POSTERM DEMO SHOP", "address": ["1 MARKET STREET", "SPRINGFIELD"],
            "currency": "978", "currency_code": "EUR", "max_amount": 500000,
            "state_dir": str(tmp / "state"),
        },
        "timeouts": {"amount_entry": 60, "card": 30, "result": 4.0, "busy_retries": 2,
                     "busy_backoff": 0.5, "sale_budget": 60.0},
        "host": {
            "host": "127.0.0.1", "port": 5000, "tls": False, "ca_file": "", "server_name": "",
            "client_cert": "", "client_key": "", "connect_timeout": 5.0,
            "response_timeout": 30.0, "repeat_backoff_base": 5.0, "repeat_backoff_cap": 300.0,
            "echo_interval": 60.0,
        },
        "offline": {"enabled": True, "floor_limit": 5000, "total_limit": 50000, "max_count": 20,
                    "max_age_hours": 24.0, "blocked_bins": ["541333"], "down_after": 3,
                    "probe_base": 5.0, "probe_cap": 120.0},
        "card_reader": {"backend": "serial", "port": str(tmp / "dev" / "ttyNOSUCH0"),
                        "baudrate": 9600},
        "keypad": {"backend": "hwsim", "socket": socket},
        "printer": {"backend": "network", "host": "127.0.0.1", "port": 9100,
                    "confirm_print": True},
        "display": {"backend": "hwsim", "socket": socket, "bus": 1, "address": 0x27},
        "gpio": {"backend": "hwsim", "socket": socket},
        "log": {"level": "INFO"},
    }


# -- variants ----------------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    doc: dict[str, Any] | None = None  # None: `raw` is the file
    raw: bytes = b""
    tables: set[str] = field(default_factory=set)  # tables a mutation touched
    key: str | None = None  # the one key mutated, when there is exactly one
    named: bool = True  # False when a mutation's error names no table (a top-level key)
    expect: int | None = None  # 0 or 2 when the mutation decides it, None when it depends

    def content(self) -> bytes:
        return dumps(self.doc).encode() if self.doc is not None else self.raw


TEXTS = ["", " ", "TÉRM", "é", "€", "😀", "店", "x" * 5000, "\x00", "a\x00b", "\x1b[2J", "\x7f",
         "tab\there", "line\nbreak", "\u2028", "\u202eevil", "e\u0301", "\ufeff", "ok",
         "/dev/null", "127.0.0.1", "EUR", "978", "serial", "hwsim", "DEBUG", "   x   ",
         "C:\\\\con", "../../etc/passwd", "%s%n", "1e3", "nan", "true"]
NUMBERS: list[Any] = [0, -1, 1, 2, 3, 7, 9600, 0x27, 65535, 65536, 10**30, -10**30,
                      2**63 - 1, -(2**63), 0.0, -0.0, 1e-300, 0.001, 0.1, 0.5, 1.0, 9.99, 10.0,
                      60.0, 3600.0, 3600.5, 1e308, math.inf, -math.inf, math.nan]
OTHERS: list[Any] = [True, False, [], [1, 2], ["a"], [[1]], {}, {"a": 1}, {"x": {"y": "z"}},
                     dt.datetime(1979, 5, 27, 7, 32, tzinfo=UTC), dt.date(2024, 2, 29),
                     dt.time(7, 32), dt.datetime(2024, 1, 1, 0, 0)]


def _bad_text(value: str) -> bool:
    """Text every string key refuses: a character that is not printable."""
    return not value.isprintable()


def _same_kind(table: str, key: str, old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    lo, _ = config_mod.LIMITS.get((table, key), (0, 0))
    if isinstance(lo, float):  # seconds or hours: an integer will do
        return isinstance(new, int | float)
    return type(old) is type(new)


# Keys the base cannot do without: required ones, and tls (its default, true, needs a CA).
REQUIRED = {("terminal", "id"), ("terminal", "merchant_id"), ("terminal", "merchant_name"),
            ("terminal", "currency"), ("host", "host"), ("host", "port"), ("host", "tls"),
            ("card_reader", "port"), ("keypad", "socket"), ("printer", "host"),
            ("display", "socket"), ("gpio", "socket")}


def _expect_for_value(table: str, key: str, old: Any, new: Any) -> int | None:
    if not _same_kind(table, key, old, new):
        return 2  # an integer key given a float, a string key a number...
    if isinstance(new, str) and _bad_text(new):
        return 2
    if isinstance(new, list) and any(isinstance(x, str) and _bad_text(x) for x in new):
        return 2
    if isinstance(new, int | float) and not isinstance(new, bool):
        if not math.isfinite(new) or new < 0 or new > 10**12:
            return 2
        lo, hi = config_mod.LIMITS.get((table, key), (-math.inf, math.inf))
        if not lo <= new <= hi:
            return 2
    return None


def _pick_value(rng: random.Random, old: Any) -> Any:
    pool = rng.choice(["text", "number", "other", "near"])
    if pool == "text":
        return rng.choice(TEXTS)
    if pool == "number":
        return rng.choice(NUMBERS)
    if pool == "other":
        return rng.choice(OTHERS)
    if isinstance(old, str):  # the old text, a little damaged
        damage = rng.choice(["\x00", "\x01", "é", "😀", " ", "\u00a0", "x" * 300])
        at = rng.randrange(len(old) + 1)
        return old[:at] + damage + old[at:]
    if isinstance(old, bool):
        return not old
    if isinstance(old, int | float):
        return rng.choice([old * 2, old / 2, -old, old + 1, old - 1, old * 1000, old * 1e-6])
    if isinstance(old, list):
        return [*old, rng.choice(TEXTS)]
    return rng.choice(TEXTS)


def _mutate_doc(rng: random.Random, doc: dict[str, Any], v: Variant, tmp: pathlib.Path) -> None:
    tables = [t for t in doc if isinstance(doc[t], dict) and doc[t]]
    table = rng.choice(tables)
    kind = rng.choices(["value", "remove_key", "add_key", "table_to_value", "value_to_table",
                        "table_array", "unknown_table", "top_level", "remove_table",
                        "nested", "state_dir"],
                       weights=[40, 6, 5, 4, 5, 3, 3, 3, 3, 3, 4])[0]
    if kind == "state_dir" and not isinstance(doc.get("terminal"), dict):
        kind = "value"  # an earlier mutation took the [terminal] table away
    keys = list(doc[table])
    key = rng.choice(keys)
    v.name += f" {kind}:{table}.{key}"
    if kind not in ("unknown_table", "top_level", "state_dir"):
        v.tables.add(table)  # the mutated table, which the error must name
    if kind == "value":
        old, new = doc[table][key], _pick_value(rng, doc[table][key])
        doc[table][key] = new
        v.key, v.expect = key, _expect_for_value(table, key, old, new)
        if key == "backend" or (key == "state_dir" and v.expect is None):
            v.key = None
    elif kind == "remove_key":
        del doc[table][key]
        required = (table, key) in REQUIRED or key == "backend"
        v.key, v.expect = key, 2 if required else 0
    elif kind == "add_key":
        new_key = rng.choice(["colour", "tsl", "Port", "x y", "ключ", "a\nb", "", "id2"])
        doc[table][new_key] = rng.choice(NUMBERS + TEXTS[:5] + OTHERS[:3])
        v.key, v.expect = new_key, 2
    elif kind == "table_to_value":
        doc[table] = rng.choice(NUMBERS[:5] + TEXTS[:5] + OTHERS[:6])
        v.expect = None if doc[table] == {} else 2
    elif kind == "value_to_table":
        doc[table][key] = {"value": doc[table][key]}
        v.key, v.expect = key, 2
    elif kind == "table_array":
        doc[table] = [dict(doc[table]), dict(doc[table])][: rng.choice([1, 2])]
        v.expect = 2
    elif kind == "unknown_table":
        name = rng.choice(["modem", "Terminal", "hosts", "x y", "émv"])
        doc[name] = {"a": 1}
        v.tables.add(name)
        v.expect = 2
    elif kind == "top_level":
        name = rng.choice(["id", "port", "state_dir", "x"])
        doc[name] = rng.choice(["x", 1, [1], True])
        v.named, v.key, v.expect = False, name, 2
    elif kind == "remove_table":
        del doc[table]
        v.expect = None if table in ("timeouts", "offline", "gpio", "log") else 2
    elif kind == "nested":
        doc[table]["sub"] = {"deeper": {"deepest": [1, {"a": "b"}]}}
        v.key, v.expect = "sub", 2
    else:  # state_dir somewhere it cannot be
        afile = tmp / "afile"
        afile.write_text("not a directory")
        doc["terminal"]["state_dir"] = rng.choice([
            str(afile / "state"), str(afile), str(tmp / "st\x00ate"), str(tmp / "st\x1bate"),
            "", str(tmp / ("d" * 300)), str(tmp / "ok" / "state")])
        v.tables.add("terminal")
        v.key = "state_dir"
        v.expect = 0 if doc["terminal"]["state_dir"].endswith("ok/state") else 2
        v.name += f" -> {doc['terminal']['state_dir']!r}"


def _mutate_raw(rng: random.Random, text: str) -> tuple[str, bytes, int | None]:
    data = text.encode()
    kind = rng.choice(["truncate", "bom", "bad_utf8", "garbage", "deep", "deep_tables",
                       "duplicate_key", "duplicate_table", "flip", "empty", "comments", "crlf",
                       "nul", "tabs"])
    if kind == "truncate":
        return kind, data[:rng.randrange(len(data))], None
    if kind == "bom":
        return kind, b"\xef\xbb\xbf" + data, 2
    if kind == "bad_utf8":
        at = rng.randrange(len(data))
        return kind, data[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]) + \
            data[at:], 2
    if kind == "garbage":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))), None
    if kind == "deep":
        depth = rng.choice([50, 500, 5000, 50000])
        open_, close = rng.choice([("[", "]"), ("{a=", "}")])
        return kind, data + f"\n[x]\ny = {open_ * depth}1{close * depth}\n".encode(), 2
    if kind == "deep_tables":
        return kind, data + ("\n[" + ".".join(["t"] * rng.choice([10, 300, 3000])) +
                             "]\nx = 1\n").encode(), 2
    if kind == "duplicate_key":
        return kind, data.replace(b"[host]\n", b"[host]\nport = 1\n", 1), 2
    if kind == "duplicate_table":
        return kind, data + b"\n[terminal]\nid = \"T2\"\n", 2
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return kind, bytes(out), None
    if kind == "empty":
        return kind, rng.choice([b"", b"\n\n", b"# nothing here\n", b"   "]), 2
    if kind == "comments":  # harmless: still valid
        return kind, b"# posterm\n" + data.replace(b"\n[", b"\n# a comment\n[") + b"# end", 0
    if kind == "crlf":  # harmless: still valid
        return kind, data.replace(b"\n", b"\r\n"), 0
    if kind == "nul":
        at = rng.randrange(len(data))
        return kind, data[:at] + b"\x00" + data[at:], 2
    return kind, data.replace(b" = ", b"\t=\t"), 0  # tabs: still valid


def variants(tmp: pathlib.Path) -> list[Variant]:
    rng = random.Random(SEED)
    base = base_config(tmp)
    out = [Variant("base", doc=base_config(tmp), expect=0)]
    for i in range(VARIANTS - 1):
        doc: dict[str, Any] = {t: dict(keys) for t, keys in base.items()}
        if rng.random() < 0.22:
            kind, raw, expect = _mutate_raw(rng, dumps(doc))
            out.append(Variant(f"#{i} raw:{kind}", raw=raw, expect=expect))
            continue
        v = Variant(f"#{i}", doc=doc)
        count = rng.choices([1, 2, 3], weights=[70, 20, 10])[0]
        for _ in range(count):
            _mutate_doc(rng, doc, v, tmp)
        if count > 1:  # which one is reported depends on the order of checks, and a later
            v.key = v.expect = None  # mutation may undo an earlier one (remove its table)
        out.append(v)
    return out


# -- the checks --------------------------------------------------------------------------
def _check_accepted(path: pathlib.Path) -> None:
    """What a configuration that passed must guarantee to the rest of the firmware."""
    cfg = config_mod.load(path)
    ident = cfg.core.identity
    card = CardData("4761739001010010", "3012", "201", "4761739001010010=30122011000000000000")
    when = dt.datetime(2024, 1, 2, 3, 4, 5)
    base = iso.sale_fields(ident, card=card, amount=cfg.core.max_amount,
                           processing_code=iso.PURCHASE, local=when, batch=1, invoice=1)
    iso.encode(iso.financial_request(base, stan=1, utc=when, track2=None))
    iso.encode(iso.network(ident, code="301", stan=2, utc=when))
    assert cfg.core.currency_code.isascii() and cfg.core.currency_code.isupper()
    numbers = [cfg.core.amount_timeout, cfg.core.card_timeout, cfg.core.result_timeout,
               cfg.core.busy_backoff, cfg.core.sale_budget, cfg.host.connect_timeout,
               cfg.host.response_timeout, cfg.host.repeat_backoff_base,
               cfg.host.repeat_backoff_cap, cfg.host.echo_interval, cfg.link.probe_base,
               cfg.link.probe_cap, cfg.core.offline.max_age_hours]
    assert all(math.isfinite(n) and n > 0 for n in numbers), numbers
    assert cfg.host.echo_interval >= 10 and cfg.core.card_timeout >= 5
    assert cfg.link.probe_cap >= cfg.link.probe_base
    assert cfg.host.repeat_backoff_cap >= cfg.host.repeat_backoff_base
    for text in (cfg.core.merchant_name, *cfg.core.address, str(cfg.state_dir)):
        assert text.isprintable()


def _check_error_line(v: Variant, err: str) -> None:
    assert "Traceback" not in err, (v.name, err)
    assert err.endswith("\n") and err.count("\n") == 1, (v.name, err)
    assert err.startswith(PREFIX), (v.name, err)
    message = err[len(PREFIX):].rstrip("\n")
    assert len(message) < 500, (v.name, message)
    match = SHAPE.match(message)
    assert match, (v.name, message)
    if v.doc is not None and v.tables and v.named:  # a mutated table is named
        assert any(f"[{t}]" in message or f"'{t}'" in message for t in v.tables), \
            (v.name, message)
    if v.key is not None:
        assert v.key in message or repr(v.key) in message, (v.name, message)


def test_check_config_fuzz(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = {0: 0, 2: 0}
    for n, v in enumerate(variants(tmp_path)):
        path = tmp_path / f"v{n}" / "posterm.toml"
        path.parent.mkdir()
        path.write_bytes(v.content())
        capsys.readouterr()
        try:
            code = main(["--config", str(path), "check-config"])
        except BaseException as exc:  # noqa: B036 - nothing may escape, not even SystemExit
            pytest.fail(f"{v.name}: {type(exc).__name__} escaped: {exc}")
        out, err = capsys.readouterr()
        assert code in (0, 2), (v.name, code, err)
        if v.expect is not None:
            assert code == v.expect, (v.name, code, err)
        results[code] += 1
        if code == 0:
            assert err == "" and out.endswith("configuration is valid\n"), (v.name, out, err)
            _check_accepted(path)
        else:
            _check_error_line(v, err)
    assert results[0] >= 40 and results[2] >= 300, results  # the mix stays meaningful


def test_variants_are_deterministic(tmp_path: pathlib.Path) -> None:
    first = [v.content() for v in variants(tmp_path)]
    assert first == [v.content() for v in variants(tmp_path)]
    assert len(first) == VARIANTS and len(set(first)) > VARIANTS * 0.8


# -- `posterm run` as a process ----------------------------------------------------------
def _run(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware", "--config", str(path)],
                          capture_output=True, text=True, timeout=10, env=_env())


def _run_sample(tmp: pathlib.Path) -> list[tuple[Variant, bool]]:
    """About RUN_SAMPLE variants, (variant, check-config said valid): the valid ones, the
    state_dir ones, and some of each other kind."""
    rng = random.Random(SEED + 1)
    picked: list[tuple[Variant, bool]] = []
    for v in variants(tmp):
        tmp_v = tmp / "probe.toml"
        tmp_v.write_bytes(v.content())
        try:
            config_mod.load(tmp_v)
            valid = True
        except ConfigError:
            valid = False
        wanted = (valid and sum(ok for _, ok in picked) < 10) or \
            ("state_dir" in v.name and sum("state_dir" in p.name for p, _ in picked) < 8) or \
            rng.random() < 0.03
        if wanted and len(picked) < RUN_SAMPLE:
            picked.append((v, valid))
    return picked


def test_run_fuzz_sample(tmp_path: pathlib.Path) -> None:
    sample = _run_sample(tmp_path)
    # and these, whatever the sample holds: a state_dir the firmware cannot create
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad in (str(afile / "state"), str(afile), str(tmp_path / "st\x00ate")):
        doc = base_config(tmp_path)
        doc["terminal"]["state_dir"] = bad
        sample.append((Variant(f"state_dir={bad!r}", doc=doc, tables={"terminal"},
                               key="state_dir"), False))
    assert sum(valid for _, valid in sample) >= 5 and len(sample) >= 25
    paths = []
    for n, (v, _) in enumerate(sample):
        path = tmp_path / f"run{n}" / "posterm.toml"
        path.parent.mkdir()
        content = v.content()
        for shared in (tmp_path / "state", tmp_path / "ok" / "state"):  # one per process
            content = content.replace(str(shared).encode(), str(path.parent / "state").encode())
        path.write_bytes(content)
        paths.append(path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        outs = list(pool.map(_run, paths))
    for (v, valid), out in zip(sample, outs, strict=True):
        err = out.stderr
        assert out.returncode != 0, (v.name, err)
        assert "Traceback" not in err, (v.name, err)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert last.startswith("posterm: "), (v.name, err)
        if valid:  # the configuration is fine: a missing device stops it (the card reader
            # alone is retried, so it is the keypad here)
            assert out.returncode == 3 and "keypad" in last, (v.name, err)
        else:
            assert out.returncode == 2 and last.startswith(PREFIX), (v.name, err)
        if v.key == "state_dir" and not valid:
            assert "state_dir" in last, (v.name, err)
