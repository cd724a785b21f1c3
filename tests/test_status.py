"""`posterm status`: asks the running terminal, or reads the journal; exit codes for monitoring."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import stat
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from firmware.runtime.journal import Journal
from firmware.runtime.vault import Vault
from tests.rig import ROOT, Rig, _env
from tests.test_journal_void import offline

PAN = "4761739001010010"


def status(rig: Rig, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware", "--config", str(rig.config_path),
                           "status", *extra], capture_output=True, text=True, timeout=30,
                          env=_env(), cwd=ROOT)


def test_healthy_degraded_and_down(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"offline": {"down_after": 1}}) as rig:
        rig.start()
        rig.wait_led(True)
        rig.sale("1800", PAN)
        rig.hw.wait_display("APPROVED")
        out = status(rig)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "healthy" in out.stdout.splitlines()[0]
        assert "bank link:      UP via ETH" in out.stdout
        assert "#1" in out.stdout and "APPROVED" in out.stdout and "476173******0010" in out.stdout
        doc = json.loads(status(rig, "--json").stdout)
        assert doc["running"] and doc["health"] == 0 and doc["journal"]["integrity"] == "ok"
        assert doc["key"] == {"present": True, "readable": True}
        assert doc["last_sale"]["outcome"] == "APPROVED" and doc["version"]
        sock = rig.state_dir / "status.sock"  # no runtime dir here: the state dir holds it
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600

        rig.hw.host_down()
        rig.hw.press("CANCEL")
        rig.sale("1900", PAN)
        rig.hw.wait_display("APPROVED OFFLINE", timeout=15)
        out = status(rig)
        assert out.returncode == 1, out.stdout
        assert "1 offline sale(s) not yet sent" in out.stdout and "DOWN" in out.stdout

        rig.kill_fw()
        out = status(rig, "--json")
        doc = json.loads(out.stdout)
        assert out.returncode == 2 and not doc["running"]
        assert "posterm is not running" in doc["reasons"]
        assert doc["queue"]["advices"] == 1 and doc["last_sale"]["amount"] == 1900
        assert PAN not in out.stdout


def test_damaged_journal_is_down(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        rig.kill_fw()
        for suffix in ("-wal", "-shm"):
            (rig.state_dir / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
        rig.journal_path.write_bytes(b"garbage" * 1000)
        out = status(rig)
        assert out.returncode == 2
        assert "journal: cannot be read" in out.stdout
        assert "Traceback" not in out.stderr


# -- the record, without a terminal ------------------------------------------------------
def _facts(tmp_path: pathlib.Path) -> Any:
    from firmware.runtime import status

    journal = tmp_path / "journal.sqlite3"
    j = Journal(journal, Vault.open(tmp_path / "card.key", create=True))
    offline(j, 1500)
    j.close()
    facts = status.read_journal(journal, tmp_path / "card.key")
    terminal = status.Terminal(
        pid=42, link=status.Link("DOWN", False, "ETH", "10.0.0.1:5000", False),
        printer_fault="PAPER OUT", waiting_prints=1, phase="IDLE", in_flight=0,
        power={"battery": {"percent": 12.0, "voltage": 3.6, "rate": -1.0, "charging": False,
                           "low": True, "low_percent": 15, "error": ""},
               "mains": {"ok": False, "shutdown_in": 30.0, "stopping": False, "error": ""}},
        modem={"ready": True, "summary": "4G READY", "rssi": 20, "bars": 4})
    return replace(facts, terminal=terminal)


def test_one_record_renders_the_line_the_text_and_the_json(tmp_path: pathlib.Path) -> None:
    from firmware.runtime import status

    facts = _facts(tmp_path)
    line = status.status_line(facts)
    assert line == ("ready, OFFLINE; 1 offline sale(s) queued; printer: PAPER OUT; "
                    "1 receipt(s) waiting for the printer; MAINS POWER LOST, on battery; "
                    "battery low (12 %)")
    doc = facts.to_doc()
    assert doc["status"] == line and doc["running"] and doc["pid"] == 42
    assert doc["queue"]["advices"] == 1 and doc["queue"]["advices_amount"] == 1500
    assert doc["queue"]["card_data_records"] == 1 and doc["refused_offline_sales"] == 0
    assert doc["last_sale"]["outcome"] == "OFFLINE_APPROVED" and doc["batch"]["open"] == 1
    text = status.render(facts)
    assert text.splitlines()[0].endswith(": DEGRADED")
    assert "offline sales:  1 to send (1500 minor units" in text
    assert "4G modem:       ready: 4G READY, signal 4/4 (rssi 20)" in text
    code, reasons = status.health(facts)
    assert code == status.DEGRADED and "bank link down" in reasons
    assert "mains power lost: on battery; shutdown in 30 s" in reasons


def test_the_record_comes_back_from_its_json(tmp_path: pathlib.Path) -> None:
    """`posterm status` turns the running firmware's answer into the same record."""
    from firmware.runtime import status

    facts = _facts(tmp_path)
    doc = json.loads(json.dumps(facts.to_doc(), default=str))
    again = status.Facts.from_doc(doc)
    assert again == facts and again.to_doc() == doc
    stopped = replace(facts, terminal=None)
    assert status.Facts.from_doc(stopped.to_doc()) == stopped
    assert status.health(stopped)[1][0] == "posterm is not running"
    empty = status.read_journal(tmp_path / "none.sqlite3", tmp_path / "none.key")
    assert empty.integrity == "no journal yet" and "queue" not in empty.to_doc()
    assert status.Facts.from_doc(empty.to_doc()) == empty


def test_the_journal_view_is_read_only_and_reads_what_the_journal_reads(
        tmp_path: pathlib.Path) -> None:
    from firmware.runtime.journal_view import JournalView, Queue

    path = tmp_path / "journal.sqlite3"
    with pytest.raises(sqlite3.OperationalError):
        JournalView(path).integrity()  # mode=ro: no file is created
    assert not path.exists()
    j = Journal(path, Vault.open(tmp_path / "card.key", create=True))
    offline(j, 900)
    with JournalView(path) as view:
        assert view.integrity() == "ok"
        assert view.queue() == Queue.of(j.queue_stats(), card_data_records=1)
        last = view.last_sale()
        assert last is not None and (last.amount, last.currency) == (900, "978")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            view.db.execute("DELETE FROM card_data")
    j.close()


def test_status_writes_no_sql_against_the_journal() -> None:
    """The journal modules own the schema: status.py reads through JournalView."""
    from firmware.runtime import status

    text = pathlib.Path(status.__file__).read_text()
    for sql in ("SELECT ", "sqlite3.connect", "FROM sales", "FROM advices", "PRAGMA"):
        assert sql not in text, sql


def test_the_version_is_the_installed_distributions_without_importlib_metadata(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """status.version() reads the METADATA that importlib.metadata reads, first on sys.path
    first, and says "unknown" where there is none (a bare checkout)."""
    from importlib import metadata

    from firmware.runtime import status as status_mod

    monkeypatch.delenv("POSTERM_VERSION", raising=False)
    assert status_mod.version() == metadata.version("posterm")
    ahead = tmp_path / "ahead" / "posterm-9.8.7.dist-info"
    ahead.mkdir(parents=True)
    (ahead / "METADATA").write_text("Metadata-Version: 2.4\nName: posterm\nVersion: 9.8.7\n"
                                    "\nVersion: 1.0 (the description, not a header)\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(ahead.parent),
                                      *sys.path])
    assert status_mod.version() == "9.8.7"
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing")])
    assert status_mod.version() == "unknown"
