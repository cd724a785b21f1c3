"""`posterm status`: how the terminal is, for a technician or a monitoring system.

The running firmware answers on a Unix socket, `status.sock` in its runtime
directory (systemd's RuntimeDirectory; `[terminal] runtime_dir`, else the state
directory), created with mode 600 so only the service user and root can ask.
Each connection gets one JSON document and is closed. When no firmware answers,
`posterm status` reads the journal read-only instead (journal_view.py, as the running
firmware does for its own answer).

The facts are gathered once into one frozen record (`Facts`): the journal's part
read through `JournalView` (`read_journal`), the running firmware's own part
(`Terminal`) added by the firmware. systemd's status line, the text and the JSON
document are rendered from that record; a document read from the socket becomes
the record again (`Facts.from_doc`) before it is judged and shown.

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
import sys
import socket
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.runtime.journal_view import Batch, Closing, JournalView, LastClose, LastSale
from firmware.runtime.journal_view import Queue as Queue  # app.py: the status line's queues

if TYPE_CHECKING:  # pinkeys (DUKPT, cryptography) is imported only where [pin] is on
    from firmware.runtime.pinkeys import PinKeyFacts

HEALTHY, DEGRADED, DOWN = 0, 1, 2
SOCKET_NAME = "status.sock"


def version() -> str:
    """The installed version (POSTERM_VERSION overrides it: for the updater's tests).

    Read from the installed distribution's METADATA found on sys.path, as
    importlib.metadata would find it, without importing it: importlib.metadata and the
    email parser it brings cost a running terminal about 0.6 MB."""
    if os.environ.get("POSTERM_VERSION"):
        return os.environ["POSTERM_VERSION"]
    for entry in sys.path:
        try:
            found = sorted(Path(entry or ".").glob("posterm-*.dist-info/METADATA"))
        except OSError:
            continue
        for meta in found:
            try:
                with meta.open(encoding="utf-8") as f:
                    for line in f:
                        if not line.strip():
                            break  # the headers end at the first empty line
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip() or "unknown"
            except (OSError, UnicodeDecodeError):
                continue
    return "unknown"


def socket_paths(runtime_dir: Path, state_dir: Path) -> list[Path]:
    env = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    dirs = [Path(env)] if env else []
    dirs += [runtime_dir, state_dir]
    return [d / SOCKET_NAME for d in dict.fromkeys(dirs)]


# -- the record ------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    state: str  # UP, DEGRADED, DOWN
    untrusted: bool
    path: str
    host: str
    connected: bool


@dataclass(frozen=True)
class Terminal:
    """What only the running firmware knows of itself."""

    pid: int
    link: Link
    printer_fault: str = ""
    display_fault: str = ""
    waiting_prints: int = 0  # receipts in the print queue
    phase: str = ""
    batch_close_running: bool = False
    in_flight: int = 0
    modem: Mapping[str, Any] | None = None  # paths.modem_facts
    power: Mapping[str, Any] | None = None  # power.PowerMonitor.facts


@dataclass(frozen=True)
class Facts:
    """Everything `posterm status` and systemd's status line tell, gathered once; the
    screen line (`status_line`), the text (`render`) and the JSON (`to_doc`) are all
    rendered from it, and `health` judges it."""

    version: str = ""
    journal_path: str = ""
    integrity: str = ""  # "ok", "no journal yet", or what is wrong
    key_present: bool = False
    key_readable: bool = False
    queue: Queue | None = None  # None: no journal, or it cannot be read
    last_sale: LastSale | None = None
    batch: Batch | None = None  # None: not read (no journal, or one without batches)
    terminal: Terminal | None = None  # None: the firmware is not running
    pin_key: PinKeyFacts | None = None  # None: [pin] is not enabled


    @property
    def running(self) -> bool:
        return self.terminal is not None

    def to_doc(self) -> dict[str, Any]:
        """The JSON document (the status socket's answer, `posterm status --json`)."""
        doc: dict[str, Any] = {
            "journal": {"path": self.journal_path, "integrity": self.integrity},
            "key": {"present": self.key_present, "readable": self.key_readable}}
        if self.queue is not None:
            queue = asdict(self.queue)
            doc["refused_offline_sales"] = queue.pop("refused")
            doc["queue"] = queue
            doc["last_sale"] = asdict(self.last_sale) if self.last_sale else None
            doc["batch"] = asdict(self.batch) if self.batch else {}
        if self.pin_key is not None:
            from firmware.runtime.pinkeys import facts_doc
            doc["pin_key"] = facts_doc(self.pin_key)
        doc.update(running=self.running, version=self.version)
        t = self.terminal
        if t is not None:
            doc.update(pid=t.pid, status=status_line(self), printer_fault=t.printer_fault,
                       display_fault=t.display_fault, phase=t.phase,
                       batch_close_running=t.batch_close_running, in_flight=t.in_flight,
                       waiting_prints=t.waiting_prints, link=asdict(t.link))
            if t.modem is not None:
                doc["modem"] = dict(t.modem)
            if t.power is not None:
                doc["power"] = dict(t.power)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Facts:
        """The record again from a JSON document (the running firmware's answer)."""
        journal, key = doc.get("journal") or {}, doc.get("key") or {}
        queue = None
        if "queue" in doc:
            queue = Queue(**_known(Queue, doc["queue"]),
                          refused=doc.get("refused_offline_sales", 0))
        last = doc.get("last_sale")
        batch = doc.get("batch") or None
        if batch is not None:
            closing, closed = batch.get("close_in_progress"), batch.get("last_close")
            batch = Batch(**{**_known(Batch, batch),
                             "close_in_progress": Closing(**closing) if closing else None,
                             "last_close": LastClose(**closed) if closed else None})
        terminal = None
        if doc.get("running"):
            terminal = Terminal(**{**_known(Terminal, doc), "link": Link(
                **_known(Link, doc.get("link") or {"state": "", "untrusted": False, "path": "",
                                                   "host": "", "connected": False}))})
        pin = doc.get("pin_key")
        if pin:
            from firmware.runtime.pinkeys import PinKeyFacts
        return cls(version=str(doc.get("version", "")), journal_path=journal.get("path", ""),
                   integrity=journal.get("integrity", ""),
                   key_present=bool(key.get("present")), key_readable=bool(key.get("readable")),
                   queue=queue, last_sale=LastSale(**last) if last else None, batch=batch,
                   terminal=terminal,
                   pin_key=PinKeyFacts(**_known(PinKeyFacts, pin)) if pin else None)


def _known(cls: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `cls`'s own fields (another release may send more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


# -- gathering -------------------------------------------------------------------------
def read_journal(journal_path: Path, key_path: Path,
                 pin_key: tuple[Path, str] | None = None) -> Facts:
    """What the journal and the key file say, read-only (JournalView: works with the
    firmware stopped, and from any thread of the running firmware); `pin_key`: the DUKPT
    key file and method when [pin] is enabled (its ID and counter, never the key)."""
    if pin_key:
        from firmware.runtime.pinkeys import facts as pin_key_facts
    facts = Facts(version=version(), journal_path=str(journal_path),
                  key_present=key_path.exists(), key_readable=os.access(key_path, os.R_OK))
    if not journal_path.exists():
        return replace(facts, integrity="no journal yet",
                       pin_key=pin_key_facts(*pin_key, None) if pin_key else None)
    try:
        with JournalView(journal_path) as view:
            return replace(facts, integrity=view.integrity(), queue=view.queue(),
                           last_sale=view.last_sale(), batch=view.batch(),
                           pin_key=pin_key_facts(*pin_key, view.db) if pin_key else None)
    except sqlite3.Error as exc:
        return replace(facts, integrity=f"cannot be read: {exc}")


# -- rendering -------------------------------------------------------------------------
def status_line(facts: Facts) -> str:
    """What the running terminal is doing, in words, for systemd's STATUS line."""
    t, queue = facts.terminal, facts.queue or Queue()
    assert t is not None, "the status line is the running firmware's"
    words = {"UP": "bank online", "DEGRADED": "bank slow to answer", "DOWN": "OFFLINE"}
    parts = ["ready, " + ("OFFLINE: host not trusted" if t.link.untrusted
                          else words.get(t.link.state, t.link.state))]
    if queue.advices:
        parts.append(f"{queue.advices} offline sale(s) queued")
    if queue.reversals:
        parts.append(f"{queue.reversals} reversal(s) pending")
    if queue.refused:
        parts.append(f"{queue.refused} refused offline sale(s) unpaid")
    if t.printer_fault:
        parts.append(f"printer: {t.printer_fault}")
    if t.waiting_prints:
        parts.append(f"{t.waiting_prints} receipt(s) waiting for the printer")
    if t.display_fault:
        parts.append(f"display fault ({t.display_fault})")
    return "; ".join(parts + power_words(t.power or {}))


def power_words(power: Mapping[str, Any]) -> list[str]:
    """The power part of the status line."""
    parts = []
    mains, battery = power.get("mains"), power.get("battery")
    if mains and not mains.get("ok", True):
        parts.append("MAINS POWER LOST, on battery")
    if battery and battery.get("low") and battery.get("percent") is not None:
        parts.append(f"battery low ({int(battery['percent'])} %)")
    elif battery and battery.get("error"):
        parts.append("battery gauge fault")
    return parts


def health(facts: Facts) -> tuple[int, list[str]]:
    """The exit code and the reasons for it."""
    down, degraded = [], []
    t, queue = facts.terminal, facts.queue or Queue()
    if t is None:
        down.append("posterm is not running")
    if facts.integrity not in ("ok", "no journal yet"):
        down.append(f"journal: {facts.integrity}")
    if queue.card_data_records and not (facts.key_present and facts.key_readable):
        down.append("key file missing or unreadable while card data waits for it")
    if t is not None and t.link.untrusted:
        degraded.append("host not trusted (TLS)")
    elif t is not None and t.link.state in ("DOWN", "DEGRADED"):
        degraded.append(f"bank link {t.link.state.lower()}")
    if queue.reversals:
        degraded.append(f"{queue.reversals} reversal(s) pending")
    if queue.advices:
        degraded.append(f"{queue.advices} offline sale(s) not yet sent")
    if queue.unsendable:
        degraded.append(f"{queue.unsendable} reversal(s) or advice(s) cannot be sent: "
                        "see the log")
    if queue.refused:
        degraded.append(f"{queue.refused} offline sale(s) refused: unpaid")
    closing = facts.batch.close_in_progress if facts.batch else None
    if closing:
        degraded.append(f"batch close of batch {closing.batch} not finished "
                        f"({closing.state}): it resumes when the host answers")
    if t is not None and t.printer_fault:
        degraded.append(f"printer: {t.printer_fault}")
    if t is not None and t.display_fault:
        degraded.append(f"display faulty: {t.display_fault}")
    degraded += _power_problems((t.power if t else None) or {})
    pin = facts.pin_key
    if pin is not None and not pin.loaded:
        degraded.append(f"no online PIN: {pin.problem}")
    elif pin is not None and pin.exhausted:
        degraded.append(f"no online PIN: DUKPT key {pin.key_id} exhausted, load a new key")
    if down:
        return DOWN, down + degraded
    return (DEGRADED, degraded) if degraded else (HEALTHY, [])


def _power_problems(power: Mapping[str, Any]) -> list[str]:
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


def _power_lines(power: Mapping[str, Any]) -> list[str]:
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


def _batch_lines(batch: Batch | None) -> list[str]:
    if batch is None:
        return []
    lines = [f"open batch:     #{batch.open}: {batch.purchases} purchase(s) "
             f"{batch.purchase_amount}, {batch.refunds} refund(s) "
             f"{batch.refund_amount} minor units, {batch.voids} voided"]
    closing = batch.close_in_progress
    if closing:
        lines.append(f"batch close:    batch #{closing.batch} in progress ({closing.state})")
    last = batch.last_close
    if last:
        verdict = "in balance" if last.balanced else "OUT OF BALANCE - call the help desk"
        lines.append(f"last close:     batch #{last.batch} at {last.time}, host "
                     f"{last.code}, {verdict}")
    return lines


def render(facts: Facts) -> str:
    """The text `posterm status` prints."""
    code, reasons = health(facts)
    word = {HEALTHY: "healthy", DEGRADED: "DEGRADED", DOWN: "DOWN"}[code]
    t = facts.terminal
    lines = [f"posterm {facts.version or '?'}: {word}"]
    lines += [f"  - {r}" for r in reasons]
    lines.append(f"running:        {'yes, pid ' + str(t.pid) if t is not None else 'no'}")
    if t is not None:
        link = t.link
        state = "NOT TRUSTED" if link.untrusted else link.state
        lines.append(f"bank link:      {state} via {link.path} to {link.host}")
    modem = t.modem if t is not None else None
    if modem:
        rssi = modem.get("rssi")
        signal = (f", signal {modem.get('bars', 0)}/4 (rssi {rssi})"
                  if isinstance(rssi, int) and rssi != 99 else "")
        what = "ready" if modem.get("ready") else "NOT READY"
        lines.append(f"4G modem:       {what}: {modem.get('summary')}{signal}"
                     + (f"; {modem['last_error']}" if modem.get("last_error") else ""))
    queue = facts.queue
    if queue is not None:
        age = queue.oldest_advice_age_seconds
        oldest = f", oldest {age // 60} min" if age is not None else ""
        lines.append(f"reversals:      {queue.reversals} pending")
        lines.append(f"offline sales:  {queue.advices} to send "
                     f"({queue.advices_amount} minor units{oldest})")
    lines.append(f"refused:        {queue.refused if queue else 0} offline sale(s)")
    last = facts.last_sale
    if last:
        lines.append(f"last sale:      #{last.id} {last.time} {last.outcome} "
                     f"{last.amount} {last.currency} card {last.pan}")
    lines += _batch_lines(facts.batch)
    lines.append(f"journal:        {facts.integrity} ({facts.journal_path})")
    lines.append(f"key file:       {'present' if facts.key_present else 'MISSING'}, "
                 f"{'readable' if facts.key_readable else 'NOT readable'}")
    pin = facts.pin_key
    if pin is not None:
        lines.append(f"PIN key:        {pin.method.upper()} DUKPT, key ID {pin.key_id}, counter "
                     f"{pin.counter}" + (" (EXHAUSTED)" if pin.exhausted else "")
                     if pin.loaded else "PIN key:        NONE (posterm key-load)")
    if t is not None and t.printer_fault:
        lines.append(f"printer:        {t.printer_fault}")
    if t is not None and t.display_fault:
        lines.append(f"display:        FAULTY, retrying: {t.display_fault}")
    lines += _power_lines((t.power if t else None) or {})
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
