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
- queues not drained: a reversal, void or advice still pending;
- chip purchases (host-interface 8.1): one shown APPROVED without the card's decision
  journaled (its chip state "settled" with the final cryptogram's field 55 for the
  upload; an offline one: the card's TC and that field 55); one whose chip state is
  still "awaiting" (recovery settles those); one the card declined (or a crash left
  without the card's word) without its reversal 06 acknowledged by the host, or
  charged;
- card data in the journal: a PAN in clear anywhere in the database's bytes (its file
  and WAL; the ledger's PANs when it has them in clear, hwsim's test cards' PANs), a
  sale's public fields holding a sealed field (2, 14, 35, 55), or a field 55 kept in
  clear (a chip sale's upload, a reversal's AAC) holding tag 57, 5A or 5F20.

`wait_and_check(rig)` waits until the terminal's queues have drained, then
asserts that the list is empty.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firmware.core.emv import tlv
from hwsim.cards import TEST_CARDS
from hwsim.chipprofiles import PROFILES

APPROVED = {"APPROVED", "OFFLINE_APPROVED"}
SEALED = ("2", "14", "35", "55")  # a sale's fields kept only sealed, never in `fields`
CARD_TAGS = {0x57: "57 (track 2 equivalent)", 0x5A: "5A (PAN)", 0x5F20: "5F20 (name)"}
TEST_PANS = frozenset({c.pan for c in TEST_CARDS} | {p.pan for p in PROFILES.values()})


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


def check(journal_path: Path, ledger: list[dict[str, Any]], terminal_id: str, *,
          pans: Iterable[str] | None = None) -> list[str]:
    """Every violation found; `pans` are the card numbers that must not be in the journal
    in clear (default: the ledger's, when it has them in clear, and hwsim's test cards')."""
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        sales = {r["id"]: r for r in _rows(db, "SELECT * FROM sales")}
        reversals: dict[int, list[sqlite3.Row]] = defaultdict(list)
        for r in _rows(db, "SELECT * FROM reversals"):
            reversals[r["sale_id"]].append(r)
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
        problems += _chip_problems(sale, reversals.get(sale_id, []), len(got))
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
    for sale_id, sale in sales.items():
        problems += _card_data_problems(sale, reversals.get(sale_id, []))
    if pans is None:
        pans = TEST_PANS | {str(e["pan"]) for e in ledger
                            if str(e.get("pan", "")).isdigit() and len(str(e["pan"])) >= 12}
    problems += _pans_in_clear(journal_path, pans)
    return problems


def _chip(sale: sqlite3.Row) -> dict[str, Any]:
    raw = sale["chip"] if "chip" in sale.keys() else ""
    try:
        return dict(json.loads(raw)) if raw else {}
    except ValueError:
        return {"entry": "CHIP", "unreadable": raw}


def _chip_problems(sale: sqlite3.Row, reversals: list[sqlite3.Row], charged: int) -> list[str]:
    """host-interface 8.1 for a chip purchase: APPROVED only with the card's TC journaled;
    the card's refusal (or a crash before its word) reversed with reason 06, not charged."""
    chip = _chip(sale)
    if chip.get("entry") != "CHIP":
        return []
    sale_id, shown, state = sale["id"], sale["status"], chip.get("state")
    if "unreadable" in chip:
        return [f"chip sale {sale_id}: its chip state is not JSON: {chip['unreadable']!r}"]
    problems = []
    if state == "awaiting":
        problems.append(f"chip sale {sale_id} still awaits the card's decision ({shown}): "
                        "the terminal never settled it with the card nor reversed it")
    if shown == "APPROVED" and (state != "settled" or not chip.get("upload")):
        problems.append(f"chip sale {sale_id} shows APPROVED without the card's decision "
                        f"journaled (chip state {state!r}, upload {chip.get('upload', '')!r})")
    if shown == "OFFLINE_APPROVED" and (chip.get("ac") != "TC" or not chip.get("upload")):
        problems.append(f"chip sale {sale_id} shows OFFLINE_APPROVED without the card's TC "
                        f"journaled (cryptogram {chip.get('ac')!r}, upload "
                        f"{chip.get('upload', '')!r})")
    if state == "settled" and shown != "APPROVED":  # the card refused, or never answered
        words = "declined by the card" if shown == "DECLINED" else f"{shown} after the " \
            "host's approval"
        sixes = [r for r in reversals if r["reason"] == "06"]
        if not sixes:
            problems.append(f"chip sale {sale_id} {words} has no reversal 06")
        elif not any(r["state"] == "done" for r in sixes):
            problems.append(f"chip sale {sale_id} {words}: its reversal 06 was not "
                            f"acknowledged ({', '.join(r['state'] for r in sixes)})")
        if charged:
            problems.append(f"chip sale {sale_id} {words} is charged at the host "
                            f"({charged} time(s))")
    return problems


def _card_data_problems(sale: sqlite3.Row, reversals: list[sqlite3.Row]) -> list[str]:
    """No sealed field in a sale's public fields; no card data in a field 55 kept in
    clear (a chip sale's upload, a reversal's AAC)."""
    sale_id, problems = sale["id"], []
    try:
        fields = json.loads(sale["fields"]) if sale["fields"] else {}
    except ValueError:
        fields = {}
    for key in SEALED:
        if key in fields:
            problems.append(f"sale {sale_id}: field {key} stored in clear in its fields "
                            "(it is kept sealed)")
    stored = [("its upload's field 55", str(_chip(sale).get("upload", "")))]
    stored += [(f"reversal {r['id']}'s field 55", str(r["icc"]))
               for r in reversals if "icc" in r.keys()]
    for where, icc in stored:
        if not icc:
            continue
        try:
            tags = {t.tag for t in tlv.walk(tlv.parse(bytes.fromhex(icc)))}
        except ValueError as exc:
            problems.append(f"sale {sale_id}: {where} is not BER-TLV ({exc}): {icc!r}")
            continue
        problems += [f"sale {sale_id}: {where} holds tag {name}"
                     for tag, name in CARD_TAGS.items() if tag in tags]
    return problems


def _pans_in_clear(journal_path: Path, pans: Iterable[str]) -> list[str]:
    """A PAN in the database's bytes (file and WAL), as text or packed BCD (tag 5A)."""
    raw = b""
    for path in (journal_path, Path(f"{journal_path}-wal")):
        try:
            raw += path.read_bytes()
        except FileNotFoundError:
            pass
    problems = []
    for pan in sorted(set(pans)):
        forms = [pan.encode()] + ([bytes.fromhex(pan)] if len(pan) % 2 == 0 else [])
        if any(form in raw for form in forms):
            problems.append(f"the journal holds PAN {pan[:6]}...{pan[-4:]} in clear")
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
