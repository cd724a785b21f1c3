"""The money invariant: what the terminal finally shows for a sale is what the customer is charged.

`check(journal_path, ledger, terminal_id)` reconciles the terminal's journal
with the host's ledger and returns every violation found:

- a sale approved at the terminal (online or offline) that the host did not
  charge exactly once: a lost approval (0) or a double charge (>1);
- a sale the terminal shows as not approved (declined, not completed, failed)
  that the host charged: a phantom charge;
- a charge at the host for this terminal that matches no request the terminal
  ever recorded: a phantom charge;
- amounts that differ between terminal and host;
- queues not drained: a reversal or advice still pending.

`wait_and_check(rig)` waits until the terminal's queues have drained, then
asserts that the list is empty.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

APPROVED = {"APPROVED", "OFFLINE_APPROVED"}


def _rows(db: sqlite3.Connection, sql: str) -> list[sqlite3.Row]:
    try:
        return list(db.execute(sql))
    except sqlite3.OperationalError:  # a table a given version does not have yet
        return []


def pending(journal_path: Path) -> int:
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    try:
        n = db.execute("SELECT count(*) FROM reversals WHERE state='pending'").fetchone()[0]
        try:
            n += db.execute("SELECT count(*) FROM advices WHERE state IN "
                            "('pending','sending')").fetchone()[0]
        except sqlite3.OperationalError:
            pass
        n += db.execute("SELECT count(*) FROM sales WHERE status='AUTHORIZING'").fetchone()[0]
        n += db.execute("SELECT count(*) FROM attempts WHERE state='sending'").fetchone()[0]
        return int(n)
    finally:
        db.close()


def check(journal_path: Path, ledger: list[dict[str, Any]], terminal_id: str) -> list[str]:
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        sales = {r["id"]: r for r in _rows(db, "SELECT * FROM sales")}
        keys: dict[tuple[str, str], int] = {}
        for a in _rows(db, "SELECT sale_id, stan, f7 FROM attempts"):
            keys[(a["stan"], a["f7"])] = a["sale_id"]
        for a in _rows(db, "SELECT sale_id, stan, f7 FROM advices WHERE stan IS NOT NULL"):
            keys[(a["stan"], a["f7"])] = a["sale_id"]
        problems: list[str] = []
        n = pending(journal_path)
        if n:
            problems.append(f"{n} reversal(s)/advice(s)/sale(s) still pending at the terminal")
    finally:
        db.close()

    charges: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in ledger:
        if str(entry["tid"]).strip() != terminal_id.strip():
            continue
        sale_id = keys.get((str(entry["stan"]), str(entry["f7"])))
        if sale_id is None:
            if entry["charged"]:
                problems.append(f"phantom charge: host charged stan {entry['stan']} "
                                f"({entry['amount']}) that the terminal never recorded")
            continue
        if entry["charged"]:
            charges[sale_id].append(entry)
    for sale_id, sale in sales.items():
        got = charges.get(sale_id, [])
        shown = sale["status"]
        if shown in APPROVED:
            if len(got) == 0:
                problems.append(f"lost approval: sale {sale_id} shows {shown} but the host "
                                "did not charge it")
            elif len(got) > 1:
                problems.append(f"double charge: sale {sale_id} charged {len(got)} times")
        elif got:
            problems.append(f"phantom charge: sale {sale_id} shows {shown} but the host "
                            f"charged it {len(got)} time(s)")
        for entry in got:
            if int(entry["amount"]) != int(sale["amount"]):
                problems.append(f"sale {sale_id}: terminal amount {sale['amount']} but host "
                                f"charged {entry['amount']}")
    return problems


def wait_and_check(rig: Any, timeout: float = 30.0) -> None:
    """Wait for the terminal's queues to drain, then assert the invariant."""
    deadline = time.monotonic() + timeout
    while pending(rig.journal_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    problems = check(rig.journal_path, rig.hw.ledger(), "TERM0001")
    assert problems == [], "\n".join(problems) + "\n--- firmware log tail:\n" + \
        "\n".join(rig.log().splitlines()[-30:])
