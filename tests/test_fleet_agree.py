"""The console and the terminal agree: on the order of versions, and on what an `update`
command may carry.

- Versions: the terminal takes a bundle only if it is newer (firmware/bundle.py `newer`);
  the console says a terminal is behind when the fleet has a newer version (fleet/alerts.py).
  Both are firmware/debversion.py's Debian order, here checked against dpkg itself on the
  edge cases (epochs, "~", revisions, "1.10" against "1.9", leading zeros), and against
  each other on every pair.
- What a terminal says its version is (its telemetry, its state) may be anything: nothing
  that is not a version crashes the console or becomes the fleet's newest.
- `update`'s arguments: the console refuses what the terminal's own check
  (firmware/runtime/fleet_update.py `FleetUpdate.check`) refuses, in the same words, and
  takes what it takes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import pathlib
import shutil
import subprocess
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware import bundle, debversion, updateargs
from firmware.runtime.fleet_update import FleetUpdate
from firmware.runtime.fleet_words import Refused
from fleet.alerts import Facts, Policy, alerts, newest
from fleet.commands import CommandError, build
from fleet.store import Store
from fleet.web import fleet_view, terminal_view

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
# in Debian's order, each strictly below the next; `EQUAL` pairs compare equal
ORDERED = ["0~", "0", "0.9~rc1", "0.9~rc2", "0.9", "0.9-1~bpo1", "0.9-1", "0.9-1+b1",
           "0.9-2", "0.9-10", "0.9a", "0.9+dfsg", "0.9.0", "0.10", "1.0~~", "1.0~~a",
           "1.0~", "1.0", "1.0a", "1.0+b1", "1.0.1", "1.9", "1.10", "1.10-1", "10.0",
           "1:0.1", "1:1.0", "2:0~rc1"]
EQUAL = [("1.0", "1.0-0"), ("1.0", "0:1.0"), ("01", "1"), ("1.00", "1.0"), ("1.0-01", "1.0-1")]
DPKG = shutil.which("dpkg")


def dpkg_compare(a: str, b: str) -> int:
    assert DPKG is not None
    for op, sign in (("lt", -1), ("gt", 1)):
        if subprocess.run([DPKG, "--compare-versions", a, op, b],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return sign
    return 0


def test_the_order_is_debians_on_the_edge_cases() -> None:
    for a, b in itertools.combinations(ORDERED, 2):
        assert debversion.compare(a, b) == -1 and debversion.compare(b, a) == 1, (a, b)
    for a, b in EQUAL:
        assert debversion.compare(a, b) == 0, (a, b)
    assert sorted(reversed(ORDERED), key=debversion.key) == ORDERED
    assert all(debversion.valid(v) for v in ORDERED + [v for p in EQUAL for v in p])


@pytest.mark.skipif(DPKG is None, reason="dpkg is not installed")
def test_the_order_is_dpkgs_own() -> None:
    """dpkg --compare-versions, on every pair of the edge cases (and the same order where
    dpkg only warns about a version: "unknown", "1_0")."""
    versions = ORDERED + [v for p in EQUAL for v in p] + ["unknown", "1_0"]
    wrong = [(a, b, got, want) for a, b in itertools.combinations(versions, 2)
             if (got := debversion.compare(a, b)) != (want := dpkg_compare(a, b))]
    assert wrong == []


def test_the_terminal_and_the_console_order_every_pair_the_same_way() -> None:
    """For every pair (fleet's newest, terminal's version): the terminal would take the
    newest as an update exactly when the console says the terminal is behind it."""
    versions = ORDERED + [v for p in EQUAL for v in p]
    for new, running in itertools.product(versions, repeat=2):
        facts = Facts("T1", "online", running, {}, "")
        behind = any(a["code"] == "version_behind" for a in alerts(facts, new, NOW, Policy()))
        assert behind == bundle.newer(new, running), (new, running)
        assert newest([running, new]) == (new if behind else running), (new, running)


MALFORMED: list[Any] = [5, 1.5, None, True, [], {}, ["1.0"], {"v": "9.9"}, "", " ", "garbage",
                        "v2.0", "1.0 beta", "1:", ":1", "a:1", "1.0-", "9" * 200,
                        "99999999999999999999:1", "1.0\n", "1.0\x00", "1.0_x", "\u0661.0",
                        "\udcff"]


def test_malformed_versions_neither_crash_nor_lead_the_console(tmp_path: pathlib.Path) -> None:
    """Terminals that say a version that is none (in their state or their telemetry): the
    console stores them, lists them, never takes one for the fleet's newest, and flags
    each as behind; the well-behaved terminals are ordered as ever."""
    store = Store(tmp_path / "fleet.db")
    messages: list[tuple[str, bytes]] = []
    for i, version in enumerate(MALFORMED):
        tid = f"B{i:07d}"
        state = {"tid": tid, "state": "online", "version": version, "since": "x"}
        telemetry = {"tid": tid, "t": "x", "facts": {"device": {"firmware_version": version}}}
        for kind, doc in (("state", state), ("telemetry", telemetry)):
            try:
                raw = json.dumps(doc).encode()
            except (TypeError, ValueError):
                continue
            messages.append((f"posterm/v1/{tid}/{kind}", raw))
    messages += [(f"posterm/v1/{tid}/state", json.dumps(
        {"tid": tid, "state": "online", "version": v, "since": "x"}).encode())
        for tid, v in (("G0000001", "1.9"), ("G0000002", "1.10"), ("G0000003", "1.10~rc1"))]
    messages.append(("posterm/v1/B9999999/state", b'{"tid": "B9999999", "state": "online", '
                     b'"version": "\xff\xfe"}'))  # not UTF-8
    done = store.apply(messages, NOW)
    assert done.rejected == 3  # the lone surrogate (state, telemetry), bytes not UTF-8
    assert store.versions()  # malformed ones are kept as said (strings only)
    view = fleet_view(store, NOW, Policy())
    assert view["newest_version"] == "1.10"
    by_tid = {r["tid"]: r for r in view["terminals"]}
    assert [a["code"] for a in by_tid["G0000002"]["alerts"]] == []
    for tid in ("G0000001", "G0000003"):
        assert [a["code"] for a in by_tid[tid]["alerts"]] == ["version_behind"]
    for tid, row in by_tid.items():
        if tid.startswith("B") and row["version"] is not None:
            assert [a["code"] for a in row["alerts"]] == ["version_behind"], row
            assert "is not a version" in row["alerts"][0]["text"]
        assert terminal_view(store, tid, NOW, Policy()) is not None
    json.dumps(view)  # what the page gets is JSON whatever the terminals said
    # only malformed versions in the fleet: no newest, no alert, no crash
    only_bad = Store(tmp_path / "bad.db")
    only_bad.apply([m for m in messages if m[0].split("/")[2].startswith("B")], NOW)
    view = fleet_view(only_bad, NOW, Policy())
    assert view["newest_version"] is None and view["alerting"] == 0
    assert newest(MALFORMED) is None


# -- the update command's arguments ------------------------------------------------------

SHA = "ab" * 32
UPDATE_ARGS: list[dict[str, Any]] = [
    {"url": "https://updates.example/p.bundle", "sha256": SHA},
    {"url": "https://updates.example/p.bundle", "sha256": SHA.upper()},
    {"url": "HTTPS://updates.example:8443/p", "sha256": SHA},
    {"url": "https://[::1]:8443/p.bundle", "sha256": SHA},
    {"url": "http://updates.example/p.bundle", "sha256": SHA},  # the console took it once
    {"url": "https:///p.bundle", "sha256": SHA},
    {"url": "https://:443/p", "sha256": SHA},
    {"url": "ftp://updates.example/p", "sha256": SHA},
    {"url": "updates.example/p.bundle", "sha256": SHA},
    {"url": "https://updates.example/p bundle\n", "sha256": SHA},
    {"url": "https://updates.example/" + "a" * 2030, "sha256": SHA},
    {"url": "https://updates.example/" + "a" * 2020, "sha256": SHA},
    {"url": "https://[::1/p", "sha256": SHA},  # a ValueError in urlsplit: refused, told
    {"url": 5, "sha256": SHA},
    {"sha256": SHA},
    {"url": "https://updates.example/p", "sha256": SHA[:-1]},
    {"url": "https://updates.example/p", "sha256": SHA + "0"},
    {"url": "https://updates.example/p", "sha256": "g" * 64},
    {"url": "https://updates.example/p", "sha256": 12},
    {"url": "https://updates.example/p"},
    {"url": "http://x", "sha256": "nope"},  # both wrong: the SHA-256 is told first
]


def terminal_check(args: dict[str, Any]) -> tuple[str, str] | str:
    """What the terminal's own check says: (url, sha256) taken, or its refusal's words."""
    update = FleetUpdate(SimpleNamespace(), None,  # type: ignore[arg-type]
                         version="1.0", event=lambda kind, data: None, ca_file="")
    try:
        return update.check(args)
    except Refused as exc:  # nothing else: any other exception would leave it unanswered
        return str(exc)


def console_check(args: dict[str, Any]) -> tuple[str, str] | str:
    try:
        command = build("update", args, Ed25519PrivateKey.generate(), NOW)
    except CommandError as exc:
        assert str(exc).startswith("update: ")
        return str(exc).removeprefix("update: ")
    return command["args"]["url"], command["args"]["sha256"]


def test_the_console_refuses_what_the_terminal_refuses_in_its_words() -> None:
    for args in UPDATE_ARGS:
        terminal, console = terminal_check(args), console_check(args)
        assert console == terminal, args
    assert console_check(UPDATE_ARGS[1]) == (UPDATE_ARGS[1]["url"], SHA)  # lowercase sent
    assert console_check(UPDATE_ARGS[4]) == updateargs.BAD_URL
    assert console_check(UPDATE_ARGS[-1]) == updateargs.BAD_SHA256
