"""The money invariant: what the terminal finally shows for a sale is what the customer is charged.

(and for a refund: what it shows is what the customer is credited.)

`check(journal_path, ledger, terminal_id)` reconciles the terminal's journal
with the host's ledger and returns every violation found:

- a sale approved at the terminal (online or offline) that the host did not
  charge exactly once: a lost approval (0) or a double charge (>1);
- a sale the terminal shows as not approved (declined, not completed, failed)
  that the host charged: a phantom charge;
- a charge at the host for this terminal that matches no request the terminal
  ever recorded: a phantom charge;
- a refund the terminal shows as approved (REFUND APPROVED) that the host did
  not credit exactly once, or a refund it does not show as approved that the
  host credited; a credit the terminal never recorded;
- a transaction the operator voided that the host still charges or credits;
- amounts that differ between terminal and host;
- queues not drained: a reversal, void or advice still pending.

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
    credits: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in ledger:
        if str(entry["tid"]).strip() != terminal_id.strip():
            continue
        sale_id = keys.get((str(entry["stan"]), str(entry["f7"])))
        effect = _effect(entry)  # "charge", "credit" or ""
        if sale_id is None:
            if effect:
                done = {"charge": "charged", "credit": "credited"}[effect]
                problems.append(f"phantom {effect}: host {done} stan {entry['stan']} "
                                f"({entry['amount']}) that the terminal never recorded")
            continue
        if effect == "charge":
            charges[sale_id].append(entry)
        elif effect == "credit":
            credits[sale_id].append(entry)
    for sale_id, sale in sales.items():
        got = charges.get(sale_id, [])
        credited = credits.get(sale_id, [])
        shown = sale["status"]
        voided = bool(sale["voided"]) if "voided" in sale.keys() else False
        refund = sale["kind"] == "refund"
        if got and refund:
            problems.append(f"refund {sale_id} was charged to the customer at the host")
        if credited and not refund:
            problems.append(f"purchase {sale_id} was credited to the customer at the host")
        if refund:
            if shown == "APPROVED" and not voided:
                if len(credited) == 0:
                    problems.append(f"lost refund: refund {sale_id} shows REFUND APPROVED but "
                                    "the host did not credit it")
                elif len(credited) > 1:
                    problems.append(f"double credit: refund {sale_id} credited "
                                    f"{len(credited)} times")
            elif credited:
                why = "was voided" if voided else f"shows {shown}"
                problems.append(f"phantom credit: refund {sale_id} {why} but the host "
                                f"credited it {len(credited)} time(s)")
            for entry in credited:
                if int(entry["amount"]) != int(sale["amount"]):
                    problems.append(f"refund {sale_id}: terminal amount {sale['amount']} but "
                                    f"host credited {entry['amount']}")
            continue
        if voided:
            if got:
                problems.append(f"voided sale {sale_id} is still charged at the host "
                                f"({len(got)} time(s))")
        elif shown in APPROVED:
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


def _effect(entry: dict[str, Any]) -> str:
    """What a ledger entry does to the customer now: "charge", "credit" or "" (nothing).
    Ledgers from before refunds had only `charged` (a refund's processing code 200000)."""
    refund = entry.get("kind") == "refund" or entry.get("processing_code") == "200000"
    if "credited" in entry:
        if entry["credited"]:
            return "credit"
        return "charge" if entry["charged"] else ""
    if entry["charged"]:
        return "credit" if refund else "charge"
    return ""


def wait_and_check(rig: Any, timeout: float = 30.0) -> None:
    """Wait for the terminal's queues to drain, then assert the invariant."""
    deadline = time.monotonic() + timeout
    while pending(rig.journal_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    problems = check(rig.journal_path, rig.hw.ledger(), "TERM0001")
    assert problems == [], "\n".join(problems) + "\n--- firmware log tail:\n" + \
        "\n".join(rig.log().splitlines()[-30:])


def check_batches(journal_path: Path, host_batches: list[dict[str, Any]],
                  terminal_id: str) -> list[str]:
    """A closed batch's totals equal the host ledger's, and every batch is closed once.

    For each batch the journal shows closed: the totals it sent (journaled before the
    0500) equal what the journal counts for that batch now (no transaction lost or
    added after the close) and what the host's ledger counts for it now; the host has
    it closed; and the open batch is the one after the last closed one."""
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        closes = _rows(db, "SELECT * FROM batch_closes WHERE state='closed' ORDER BY batch")
        meta = _rows(db, "SELECT value FROM meta WHERE key='batch'")
        counted = {}
        for c in closes:
            row = db.execute(
                "SELECT coalesce(sum(s.kind='purchase'),0), coalesce(sum(CASE WHEN "
                "s.kind='purchase' THEN s.amount ELSE 0 END),0), coalesce(sum(s.kind='refund'),"
                "0), coalesce(sum(CASE WHEN s.kind='refund' THEN s.amount ELSE 0 END),0) FROM "
                "sales s LEFT JOIN advices a ON a.sale_id=s.id WHERE s.batch=? AND s.voided=0 "
                "AND ((s.status='APPROVED' AND s.kind IN ('purchase','refund')) OR "
                "(s.status='OFFLINE_APPROVED' AND s.kind='purchase' AND a.state='accepted'))",
                (c["batch"],)).fetchone()
            counted[c["batch"]] = {"purchases": row[0], "purchase_amount": row[1],
                                   "refunds": row[2], "refund_amount": row[3]}
    finally:
        db.close()
    problems: list[str] = []
    hosts = {int(b["batch"]): b for b in host_batches
             if str(b["tid"]).strip() == terminal_id.strip()}
    for c in closes:
        number = c["batch"]
        sent = {k: c[k] for k in ("purchases", "purchase_amount", "refunds", "refund_amount")}
        if sent != counted[number]:
            problems.append(f"batch {number}: closed with totals {sent} but the journal "
                            f"counts {counted[number]} for it now")
        host = hosts.get(number)
        if host is None or not host["closed"]:
            problems.append(f"batch {number}: closed at the terminal, not at the host")
            continue
        if host["host_now"] != sent:
            problems.append(f"batch {number}: closed with totals {sent} but the host's "
                            f"ledger has {host['host_now']}")
    if closes and meta and int(meta[0]["value"]) != closes[-1]["batch"] + 1:
        problems.append(f"open batch {meta[0]['value']} does not follow the last closed "
                        f"batch {closes[-1]['batch']}")
    return problems
