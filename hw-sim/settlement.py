"""Batch close at the simulated acquirer: 0500 reconciliation and 0320 batch upload.

Host interface 1.1, section 4. `Settlement` keeps, for each (terminal, batch),
the closes the host has seen and the transactions the terminal uploaded; the
money itself stays in the ledger (`ledger.Books`), which hands its entries in
(`entries.LedgerEntry`, shared with the ledger without importing it).

- A 0500 `920000` compares the terminal's totals (74 refunds, 76 purchases, 86
  refund amount, 88 purchase amount) with the ledger's for that terminal and
  batch (field 60): purchases charged now, refunds credited now. `00` in
  balance, `95` not.
- A 0320 records the terminal's claim that one transaction (named by field 90)
  belongs to the batch, and how it compares with the ledger. It never charges
  or credits anything: an upload is the terminal's word, not a payment. Every
  well-formed 0320 is answered `00`.
- A 0500 `960000` (after an upload) answers `00` when the terminal's totals, the
  uploaded list and the ledger all agree, transaction by transaction; `95` when
  anything differs. The differences are kept for `batches()`.
- A 0500 never changes money. A control can force the next N 0500 answers
  (or all) to `95`, to drive the terminal's out-of-balance path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .entries import KIND_OF, LedgerEntry, Totals, counted, totals_of
from .hostproto import FormatProblem, Message, original_of

log = logging.getLogger("hwsim.host")

Key = tuple[str, str, str]

CLOSE: Final = "920000"
CLOSE_AFTER_UPLOAD: Final = "960000"
ORIGINAL_MTIS: Final = ("0200", "0220")


@dataclass
class UploadClaim:
    """One 0320: the terminal says this transaction is in the batch."""

    original: str  # MTI + STAN + field 7 of the original, as field 90 names it
    stan: str  # the 0320's own
    f7: str
    kind: str
    amount: int
    invoice: str
    rrn: str
    approval: str
    code: str
    status: str  # "matched", or what differs from the ledger


@dataclass
class CloseRecord:
    """One 0500 the host processed."""

    stan: str
    f7: str
    processing_code: str
    terminal: dict[str, int]
    host: dict[str, int]
    upload: dict[str, int] | None
    code: str
    forced: bool
    differences: list[str]
    time: float


@dataclass
class BatchRecord:
    tid: str
    batch: str
    closes: list[CloseRecord] = field(default_factory=list)
    uploads: dict[Key, UploadClaim] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        """Closed as the terminal sees it: 00 to a 920000, or any answer to a 960000."""
        return any(c.code == "00" or (c.processing_code == CLOSE_AFTER_UPLOAD and c.code == "95")
                   for c in self.closes)


class Settlement:
    """The batch closes and uploads the host has seen, per terminal and batch."""

    def __init__(self) -> None:
        self._batches: dict[tuple[str, str], BatchRecord] = {}
        self._force_remaining = 0
        self._force_all = False

    # -- control -----------------------------------------------------------
    def force_out_of_balance(self, count: int) -> None:
        """Answer the next `count` 0500s `95` whatever the totals (0: all, until cleared)."""
        if count < 0:
            raise ValueError(f"out-of-balance count must be 0 (until cleared) or more, got {count}")
        if count == 0:
            self._force_all = True
        else:
            self._force_remaining += count

    def clear_forced(self) -> None:
        self._force_all = False
        self._force_remaining = 0

    def forced_pending(self) -> int | None:
        """0500 answers still forced to 95: a number, or None for "all until cleared"."""
        return None if self._force_all else self._force_remaining

    def batches(self, entries: Mapping[Key, LedgerEntry]) -> list[dict[str, Any]]:
        """Each (terminal, batch) closed or uploaded: closes, uploads, the host's totals now."""
        return [{"tid": b.tid, "batch": b.batch, "closed": b.closed,
                 "host_now": totals_of(self._of_batch(b.tid, b.batch, entries)).as_dict(),
                 "closes": [asdict(c) for c in b.closes],
                 "uploads": [asdict(u) for u in b.uploads.values()]}
                for b in self._batches.values()]  # fmt: skip

    # -- 0500 ---------------------------------------------------------------
    def reconcile(self, req: Message, entries: Mapping[Key, LedgerEntry],
                  forced: str | None) -> str:
        """Compare a 0500's totals with the ledger (and the upload, for 960000); the code."""
        mode = req["3"]
        if mode not in (CLOSE, CLOSE_AFTER_UPLOAD):
            raise FormatProblem(f"field 3 of a 0500 is {mode!r}, not {CLOSE} or "
                                f"{CLOSE_AFTER_UPLOAD}")  # fmt: skip
        claimed = Totals(*(_number(req, f) for f in ("74", "76", "86", "88")))
        tid, number = req["41"], _batch_number(req)
        mine = self._of_batch(tid, number, entries)
        host = totals_of(mine)
        differences = []
        if claimed != host:
            differences.append(f"terminal totals {tuple(claimed)} differ from the host's "
                               f"{tuple(host)} (refunds, purchases, refund and purchase amounts)")
        upload: Totals | None = None
        if mode == CLOSE_AFTER_UPLOAD:
            uploads = self._batches.get((tid, number), BatchRecord(tid, number)).uploads
            upload, upload_differences = _compare_upload(uploads, mine, claimed)
            differences += upload_differences
        code = "00" if not differences else "95"
        was_forced = False
        if forced is not None:
            code, was_forced = forced, True
        elif self._take_forced():
            code, was_forced = "95", True
        if code in ("91", "96"):  # not processed: nothing to remember
            return code
        batch = self._batch(tid, number)
        batch.closes.append(CloseRecord(
            stan=req["11"], f7=req["7"], processing_code=mode, terminal=claimed.as_dict(),
            host=host.as_dict(), upload=upload.as_dict() if upload is not None else None,
            code=code, forced=was_forced, differences=differences, time=time.time()))
        what = "close" if mode == CLOSE else "close after upload"
        if code == "95":
            why = "forced by control" if was_forced else "; ".join(differences)
            log.info("batch %s of %r %s: out of balance (%s)", batch.batch, batch.tid, what, why)
        else:
            log.info("batch %s of %r %s: answered %s", batch.batch, batch.tid, what, code)
        return code

    def _take_forced(self) -> bool:
        if self._force_all:
            return True
        if self._force_remaining > 0:
            self._force_remaining -= 1
            return True
        return False

    # -- 0320 ---------------------------------------------------------------
    def upload(self, req: Message, entries: Mapping[Key, LedgerEntry]) -> str:
        """Record one uploaded transaction as the terminal's claim; the code (always 00)."""
        if "2" in req or "35" in req:
            raise FormatProblem("a batch upload carries no card data (field 2 or 35 present)")
        original = original_of(req["90"])
        if original is None or original[0] not in ORIGINAL_MTIS:
            raise FormatProblem("field 90 is not MTI 0200/0220 + STAN + field 7 + 22 zeros")
        kind = KIND_OF.get(req["3"])
        if kind is None:
            raise FormatProblem(f"field 3 of a batch upload is {req['3']!r}, not a purchase "
                                "(000000) or a refund (200000)")  # fmt: skip
        amount = _number(req, "4")
        batch = self._batch(req["41"], _batch_number(req))
        key = (req["41"], original[1], original[2])
        claim = UploadClaim(
            original=req["90"][:20], stan=req["11"], f7=req["7"], kind=kind, amount=amount,
            invoice=req["62"], rrn=req["37"], approval=req.get("38", ""), code=req["39"],
            status=_status(kind, amount, batch.batch, req, entries.get(key)))
        batch.uploads[key] = claim
        log.info("batch %s of %r: upload of %s stan=%s %s", batch.batch, batch.tid,
                 original[0], original[1], claim.status)
        return "00"

    # -- helpers ------------------------------------------------------------
    def _batch(self, tid: str, number: str) -> BatchRecord:
        return self._batches.setdefault((tid, number), BatchRecord(tid, number))

    @staticmethod
    def _of_batch(tid: str, batch: str, entries: Mapping[Key, LedgerEntry]) -> list[LedgerEntry]:
        return [e for e in entries.values() if e.tid == tid and e.batch == batch]


def _compare_upload(uploads: Mapping[Key, UploadClaim], mine: list[LedgerEntry],
                    claimed: Totals) -> tuple[Totals, list[str]]:
    """The uploaded list's totals, and how list, ledger and terminal totals differ."""
    differences = []
    refunds = purchases = refund_amount = purchase_amount = 0
    for claim in uploads.values():
        if claim.kind == "refund":
            refunds, refund_amount = refunds + 1, refund_amount + claim.amount
        elif claim.kind == "purchase":
            purchases, purchase_amount = purchases + 1, purchase_amount + claim.amount
        if claim.status != "matched":
            differences.append(f"uploaded {claim.original}: {claim.status}")
    upload = Totals(refunds, purchases, refund_amount, purchase_amount)
    for entry in mine:
        if counted(entry) and (entry.tid, entry.stan, entry.f7) not in uploads:
            differences.append(f"{entry.kind} stan={entry.stan} f7={entry.f7} of "
                               f"{entry.amount} counted by the host, never uploaded")
    if upload != claimed:
        differences.append(f"uploaded list totals {tuple(upload)} differ from the "
                           f"terminal's {tuple(claimed)}")
    return upload, differences


def _status(kind: str, amount: int, batch: str, req: Message, entry: LedgerEntry | None) -> str:
    """"matched", or how an uploaded transaction differs from the host's ledger."""
    if entry is None:
        return "unknown to the host"
    problems = []
    if entry.batch != batch:
        problems.append(f"in batch {entry.batch} at the host")
    if entry.kind != kind:
        problems.append(f"a {entry.kind} at the host")
    if entry.amount != amount:
        problems.append(f"amount {entry.amount} at the host")
    if not counted(entry):
        problems.append("not " + ("credited" if entry.kind == "refund" else "charged")
                        + " at the host" + (" (voided)" if entry.voided else
                                            " (reversed)" if entry.reversed else
                                            f" (answered {entry.code})"))
    if req["37"] != entry.rrn:
        problems.append("field 37 differs from the host's")
    return "; ".join(problems) or "matched"


def _number(req: Message, name: str) -> int:
    value = req[name]
    if not value.isdigit():
        raise FormatProblem(f"field {name} is not numeric")
    return int(value)


def _batch_number(req: Message) -> str:
    value = req["60"]
    if len(value) != 6 or not value.isdigit():
        raise FormatProblem("field 60 (batch) is not 6 digits")
    return value
