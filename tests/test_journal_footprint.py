"""The journal's work per sale and the printer cache a new state directory starts from.

A sale's journal writes are counted with sqlite3's trace callback, in the order the
runtime makes them (authorizer, display, printer): the two writes of the order of
durable writes wait for an fsync, the two that only save a repeat after a power cut
(result shown, receipt printed) do not.
"""

from __future__ import annotations

import os
import pathlib
import platform
import sqlite3
from collections import Counter
from datetime import datetime

import pytest

from firmware.core import iso
from firmware.core.card import CardData
from firmware.core.model import SaleStatus
from firmware.runtime.journal import Journal
from firmware.runtime.journal_base import CACHE_KIB
from firmware.runtime.vault import Vault
from firmware.runtime.wiring import escpos_cache

IDENT = iso.Identity("TERM0001", "MERCHANT0000001", "978")
CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101", track2="")


class Trace:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.kinds: Counter[str] = Counter()
        self.full = True
        db.set_trace_callback(self._seen)

    def _seen(self, sql: str) -> None:
        word = sql.split()[0].upper()
        self.kinds[word] += 1
        if word == "PRAGMA" and "synchronous" in sql.lower():
            self.full = sql.upper().rstrip().endswith("FULL")
        if word == "COMMIT" and self.full:
            self.kinds["fsync"] += 1


def _sale(journal: Journal, n: int) -> int:
    local = datetime(2026, 11, 23, 12, 0, 0)
    fields = iso.sale_fields(IDENT, card=CARD, amount=100 + n, processing_code=iso.PURCHASE,
                             local=local, batch=0, invoice=0)
    attempt, fixed = journal.start_attempt(None, fields=fields, card=CARD, kind="purchase",
                                           amount=100 + n, currency="978", local=local,
                                           f7="1123120000")
    record = journal.record_answer(attempt, code="00", approval="123456", rrn=f"{n:012d}")
    assert record.status == SaleStatus.APPROVED and record.stan == attempt.stan
    assert fixed["62"] == f"{record.invoice:06d}"
    journal.mark_shown(attempt.sale_id)
    journal.print_done("sale", attempt.sale_id)
    return attempt.sale_id


def test_a_sale_costs_few_statements_and_two_fsyncs(tmp_path: pathlib.Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3", Vault.open(tmp_path / "card.key",
                                                               create=True))
    _sale(journal, 0)  # the first one reads the counters
    trace = Trace(journal.db)
    for n in range(1, 4):
        _sale(journal, n)
    per_sale = {k: v / 3 for k, v in trace.kinds.items()}
    statements = sum(v for k, v in per_sale.items() if k.isupper())
    assert statements <= 20, per_sale  # 23 before: meta and invoice lookups, a re-read
    assert per_sale["COMMIT"] == 4 and per_sale["fsync"] == 2, per_sale
    assert journal.db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
    # the invoices and STANs the in-memory counters gave are the journal's own
    rows = journal.db.execute("SELECT invoice, stan FROM sales ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert len({r[1] for r in rows}) == 4
    journal.close()


def test_counters_survive_a_rolled_back_transaction_and_a_reopen(
        tmp_path: pathlib.Path) -> None:
    vault = Vault.open(tmp_path / "card.key", create=True)
    journal = Journal(tmp_path / "journal.sqlite3", vault)
    _sale(journal, 0)
    stan = journal.peek_stan()
    try:
        with journal.tx():
            journal._take_stan()
            journal._next_invoice(journal.db, journal.current_batch())
            raise RuntimeError("disk full")
    except RuntimeError:
        pass
    assert journal.peek_stan() == stan  # the rolled-back STAN is not skipped
    second = _sale(journal, 1)
    assert journal.sale(second).invoice == 2
    journal.close()
    again = Journal(tmp_path / "journal.sqlite3", vault)
    third = _sale(again, 2)
    assert again.sale(third).invoice == 3
    assert int(again.sale(third).stan) == int(again.sale(second).stan) + 1
    again.close()


def test_a_power_cut_keeps_every_durable_write(tmp_path: pathlib.Path) -> None:
    """What a light commit leaves is read back like any other after the process dies
    (the WAL is written at each commit; only its fsync waits for the next durable one)."""
    vault = Vault.open(tmp_path / "card.key", create=True)
    journal = Journal(tmp_path / "journal.sqlite3", vault)
    sale = _sale(journal, 0)
    other = sqlite3.connect(tmp_path / "journal.sqlite3")  # another process's view
    row = other.execute("SELECT status, result_shown, receipt_printed FROM sales WHERE id=?",
                        (sale,)).fetchone()
    assert row == (SaleStatus.APPROVED, 1, 1)
    other.close()
    journal.close()


def test_a_new_state_directory_starts_from_the_installed_printer_cache(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"{platform.python_version()}.capabilities.pickle"
    built = tmp_path / "installed"
    built.mkdir()
    (built / name).write_bytes(b"pickled capabilities")
    os.utime(built / name, (1_700_000_000, 1_700_000_000))
    monkeypatch.setenv("ESCPOS_CAPABILITIES_PICKLE_DIR", str(built))
    folder = pathlib.Path(escpos_cache(tmp_path / "state"))
    copied = folder / name
    assert folder == tmp_path / "state" / "escpos-cache"
    assert copied.read_bytes() == b"pickled capabilities"
    assert copied.stat().st_mtime == 1_700_000_000  # escpos compares it with its YAML's
    assert copied.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in folder.iterdir()] == [name]  # no scratch file left
    copied.write_bytes(b"kept")  # one that is there is the state directory's own
    assert pathlib.Path(escpos_cache(tmp_path / "state")).joinpath(name).read_bytes() == b"kept"
