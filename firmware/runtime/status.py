"""`posterm status`: how the terminal is, for a technician or a monitoring system.

The running firmware answers on a Unix socket, `status.sock` in its runtime
directory (systemd's RuntimeDirectory; `[terminal] runtime_dir`, else the state
directory), created with mode 600 so only the service user and root can ask.
Each connection gets one JSON document and is closed. When no firmware answers,
`posterm status` reads the journal read-only instead.

Exit codes (for monitoring): 0 healthy; 1 degraded (bank slow or offline, a
reversal or offline sale waiting, a refused offline sale, a printer fault, a
display that does not answer);
2 down or broken (not running, journal damaged, key file missing or unreadable
while card data waits for it).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware.core.risk import QueueStats

HEALTHY, DEGRADED, DOWN = 0, 1, 2
SOCKET_NAME = "status.sock"


def version() -> str:
    """The installed version (POSTERM_VERSION overrides it: for the updater's tests)."""
    if os.environ.get("POSTERM_VERSION"):
        return os.environ["POSTERM_VERSION"]
    from importlib import metadata  # only when asked: it costs about 4 MB of memory

    try:
        return metadata.version("posterm")
    except metadata.PackageNotFoundError:
        return "unknown"


def socket_paths(runtime_dir: Path, state_dir: Path) -> list[Path]:
    env = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    dirs = [Path(env)] if env else []
    dirs += [runtime_dir, state_dir]
    return [d / SOCKET_NAME for d in dict.fromkeys(dirs)]


def journal_facts(journal_path: Path, key_path: Path) -> dict[str, Any]:
    """What the journal and the key file say, read-only (works with the firmware stopped)."""
    facts: dict[str, Any] = {"journal": {"path": str(journal_path)},
                             "key": {"present": key_path.exists(),
                                     "readable": os.access(key_path, os.R_OK)}}
    if not journal_path.exists():
        facts["journal"]["integrity"] = "no journal yet"
        return facts
    try:
        db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=2)
        try:
            facts["journal"]["integrity"] = db.execute("PRAGMA quick_check").fetchone()[0]
            facts.update(_queues(db))
            facts["batch"] = _batch(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        facts["journal"]["integrity"] = f"cannot be read: {exc}"
    return facts


def _queues(db: sqlite3.Connection) -> dict[str, Any]:
    one = db.execute
    oldest = one("SELECT min(s.local) FROM advices a JOIN sales s ON s.id=a.sale_id "
                 "WHERE a.state='pending'").fetchone()[0]
    age = None
    if oldest:
        age = int((datetime.now() - datetime.fromisoformat(oldest)).total_seconds())
    queue = {
        "reversals": one("SELECT count(*) FROM reversals WHERE state='pending'").fetchone()[0],
        "advices": one("SELECT count(*) FROM advices WHERE state='pending'").fetchone()[0],
        "advices_amount": one("SELECT coalesce(sum(s.amount),0) FROM advices a JOIN sales s "
                              "ON s.id=a.sale_id WHERE a.state='pending'").fetchone()[0],
        "oldest_advice_age_seconds": age,
        "card_data_records": one("SELECT count(*) FROM card_data").fetchone()[0],
        "unsendable": one("SELECT (SELECT count(*) FROM reversals WHERE state='unsendable') + "
                          "(SELECT count(*) FROM advices WHERE state='unsendable')"
                          ).fetchone()[0],
    }
    refused = one("SELECT count(*) FROM advices WHERE state='refused'").fetchone()[0]
    row = one("SELECT id, local, status, amount, currency, pan_masked, response_code "
              "FROM sales ORDER BY id DESC LIMIT 1").fetchone()
    last = None
    if row:
        last = {"id": row[0], "time": row[1], "outcome": row[2], "amount": row[3],
                "currency": row[4], "pan": row[5], "response_code": row[6]}
    return {"queue": queue, "refused_offline_sales": refused, "last_sale": last}


def _batch(db: sqlite3.Connection) -> dict[str, Any]:
    """The open batch's totals (what its 0500 would carry), a close in progress, the last
    close. Counted as journal_batch.py counts them; empty for a journal without batches."""
    try:
        number = int(db.execute("SELECT value FROM meta WHERE key='batch'").fetchone()[0])
        row = db.execute(
            "SELECT coalesce(sum(s.kind='purchase'), 0), coalesce(sum(CASE WHEN "
            "s.kind='purchase' THEN s.amount ELSE 0 END), 0), coalesce(sum(s.kind='refund'), "
            "0), coalesce(sum(CASE WHEN s.kind='refund' THEN s.amount ELSE 0 END), 0) FROM "
            "sales s LEFT JOIN advices a ON a.sale_id=s.id WHERE s.batch=? AND s.voided=0 AND "
            "((s.status='APPROVED' AND s.kind IN ('purchase','refund')) OR "
            "(s.status='OFFLINE_APPROVED' AND s.kind='purchase' AND a.state='accepted'))",
            (number,)).fetchone()
        voids = db.execute("SELECT count(*) FROM sales WHERE batch=? AND voided=1",
                           (number,)).fetchone()[0]
        closing = db.execute("SELECT batch, state FROM batch_closes WHERE state IN "
                             "('closing','uploading','uploaded') ORDER BY batch").fetchone()
        last = db.execute("SELECT batch, finished, last_code, balanced FROM batch_closes "
                          "WHERE state='closed' ORDER BY batch DESC LIMIT 1").fetchone()
    except (sqlite3.Error, TypeError, ValueError):
        return {}
    return {"open": number, "purchases": row[0], "purchase_amount": row[1], "refunds": row[2],
            "refund_amount": row[3], "voids": voids,
            "close_in_progress": {"batch": closing[0], "state": closing[1]} if closing else None,
            "last_close": {"batch": last[0], "time": last[1], "code": last[2],
                           "balanced": bool(last[3])} if last else None}


def status_line(*, link: str, untrusted: bool, queues: QueueStats, printer: str,
                waiting_prints: int, display: str, power: list[str]) -> str:
    """What the running terminal is doing, in words, for systemd's STATUS line."""
    words = {"UP": "bank online", "DEGRADED": "bank slow to answer", "DOWN": "OFFLINE"}
    parts = ["ready, " + ("OFFLINE: host not trusted" if untrusted else words.get(link, link))]
    if queues.count:
        parts.append(f"{queues.count} offline sale(s) queued")
    if queues.reversals:
        parts.append(f"{queues.reversals} reversal(s) pending")
    if queues.refused:
        parts.append(f"{queues.refused} refused offline sale(s) unpaid")
    if printer:
        parts.append(f"printer: {printer}")
    if waiting_prints:
        parts.append(f"{waiting_prints} receipt(s) waiting for the printer")
    if display:
        parts.append(f"display fault ({display})")
    return "; ".join(parts + power)


def health(doc: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit code and the reasons for it."""
    down, degraded = [], []
    if not doc.get("running"):
        down.append("posterm is not running")
    integrity = doc.get("journal", {}).get("integrity", "")
    if integrity not in ("ok", "no journal yet"):
        down.append(f"journal: {integrity}")
    key = doc.get("key", {})
    waiting = doc.get("queue", {}).get("card_data_records", 0)
    if waiting and not (key.get("present") and key.get("readable")):
        down.append("key file missing or unreadable while card data waits for it")
    link = doc.get("link", {})
    if link.get("untrusted"):
        degraded.append("host not trusted (TLS)")
    elif link.get("state") in ("DOWN", "DEGRADED"):
        degraded.append(f"bank link {link['state'].lower()}")
    queue = doc.get("queue", {})
    if queue.get("reversals"):
        degraded.append(f"{queue['reversals']} reversal(s) pending")
    if queue.get("advices"):
        degraded.append(f"{queue['advices']} offline sale(s) not yet sent")
    if queue.get("unsendable"):
        degraded.append(f"{queue['unsendable']} reversal(s) or advice(s) cannot be sent: "
                        "see the log")
    if doc.get("refused_offline_sales"):
        degraded.append(f"{doc['refused_offline_sales']} offline sale(s) refused: unpaid")
    closing = (doc.get("batch") or {}).get("close_in_progress")
    if closing:
        degraded.append(f"batch close of batch {closing['batch']} not finished "
                        f"({closing['state']}): it resumes when the host answers")
    if doc.get("printer_fault"):
        degraded.append(f"printer: {doc['printer_fault']}")
    if doc.get("display_fault"):
        degraded.append(f"display faulty: {doc['display_fault']}")
    degraded += _power_problems(doc.get("power") or {})
    if down:
        return DOWN, down + degraded
    return (DEGRADED, degraded) if degraded else (HEALTHY, [])


def _power_problems(power: dict[str, Any]) -> list[str]:
    problems = []
    mains = power.get("mains") or {}
    if mains and not mains.get("ok", True):
        left = mains.get("shutdown_in")
        problems.append("mains power lost: on battery" + (
            "; stopping" if mains.get("stopping") else
            f"; shutdown in {left:.0f} s" if left is not None else ""))
    battery = power.get("battery") or {}
    if battery.get("error"):
        problems.append(f"battery gauge: {battery['error']}")
    elif battery.get("low"):
        problems.append(f"battery low ({int(battery['percent'])} %, below "
                        f"{battery['low_percent']} %): no new sale")
    return problems


def _power_lines(power: dict[str, Any]) -> list[str]:
    lines = []
    battery = power.get("battery")
    if battery:
        if battery.get("percent") is None:
            lines.append(f"battery:        unknown ({battery.get('error') or 'not read yet'})")
        else:
            trend = "charging" if battery.get("charging") else "discharging"
            lines.append(f"battery:        {int(battery['percent'])} %, "
                         f"{battery['voltage']:.3f} V, {battery['rate']:+.1f} %/h ({trend})")
    mains = power.get("mains")
    if mains:
        lines.append(f"mains power:    {'present' if mains.get('ok') else 'LOST'}")
    return lines


def _batch_lines(batch: dict[str, Any]) -> list[str]:
    if not batch:
        return []
    lines = [f"open batch:     #{batch['open']}: {batch['purchases']} purchase(s) "
             f"{batch['purchase_amount']}, {batch['refunds']} refund(s) "
             f"{batch['refund_amount']} minor units, {batch['voids']} voided"]
    closing = batch.get("close_in_progress")
    if closing:
        lines.append(f"batch close:    batch #{closing['batch']} in progress ({closing['state']})")
    last = batch.get("last_close")
    if last:
        verdict = "in balance" if last["balanced"] else "OUT OF BALANCE - call the help desk"
        lines.append(f"last close:     batch #{last['batch']} at {last['time']}, host "
                     f"{last['code']}, {verdict}")
    return lines


def render(doc: dict[str, Any]) -> str:
    code, reasons = health(doc)
    word = {HEALTHY: "healthy", DEGRADED: "DEGRADED", DOWN: "DOWN"}[code]
    lines = [f"posterm {doc.get('version', '?')}: {word}"]
    lines += [f"  - {r}" for r in reasons]
    lines.append(f"running:        {'yes, pid ' + str(doc['pid']) if doc.get('running') else 'no'}")
    link = doc.get("link")
    if link:
        state = "NOT TRUSTED" if link.get("untrusted") else link.get("state")
        lines.append(f"bank link:      {state} via {link.get('path')} to {link.get('host')}")
    modem = doc.get("modem")
    if modem:
        rssi = modem.get("rssi")
        signal = (f", signal {modem.get('bars', 0)}/4 (rssi {rssi})"
                  if isinstance(rssi, int) and rssi != 99 else "")
        what = "ready" if modem.get("ready") else "NOT READY"
        lines.append(f"4G modem:       {what}: {modem.get('summary')}{signal}"
                     + (f"; {modem['last_error']}" if modem.get("last_error") else ""))
    queue = doc.get("queue", {})
    if queue:
        age = queue.get("oldest_advice_age_seconds")
        oldest = f", oldest {age // 60} min" if age is not None else ""
        lines.append(f"reversals:      {queue.get('reversals', 0)} pending")
        lines.append(f"offline sales:  {queue.get('advices', 0)} to send "
                     f"({queue.get('advices_amount', 0)} minor units{oldest})")
    lines.append(f"refused:        {doc.get('refused_offline_sales', 0)} offline sale(s)")
    last = doc.get("last_sale")
    if last:
        lines.append(f"last sale:      #{last['id']} {last['time']} {last['outcome']} "
                     f"{last['amount']} {last['currency']} card {last['pan']}")
    lines += _batch_lines(doc.get("batch") or {})
    journal = doc.get("journal", {})
    lines.append(f"journal:        {journal.get('integrity')} ({journal.get('path')})")
    key = doc.get("key", {})
    lines.append(f"key file:       {'present' if key.get('present') else 'MISSING'}, "
                 f"{'readable' if key.get('readable') else 'NOT readable'}")
    if doc.get("printer_fault"):
        lines.append(f"printer:        {doc['printer_fault']}")
    if doc.get("display_fault"):
        lines.append(f"display:        FAULTY, retrying: {doc['display_fault']}")
    lines += _power_lines(doc.get("power") or {})
    return "\n".join(lines)


def ask(paths: list[Path], timeout: float = 3.0) -> dict[str, Any] | None:
    """The running firmware's document, or None when none answers."""
    for path in paths:
        if not path.exists():
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            doc: dict[str, Any] = json.loads(data)
            return doc
        except (OSError, ValueError):
            continue
    return None


class StatusServer:
    """Serves `await collect()` as JSON on a private Unix socket."""

    def __init__(self, path: Path, collect: Any) -> None:
        self.path, self.collect = path, collect
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(await self.collect(), default=str).encode())
            await writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        try:
            self.path.unlink()
        except OSError:
            pass
