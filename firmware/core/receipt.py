"""Receipt layout for a 58 mm printer: 32 characters a line in font A.

A line starting with BOLD is printed emphasised by the printer driver; a line that is
exactly CUT ("\f") is a full cut, so one print job can hold two receipts (a refund's
merchant and customer copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.core.iso import BatchTotals
from firmware.core.model import CoreConfig, SaleRecord, SaleStatus
from firmware.core.risk import QueueStats
from firmware.core.texts import (
    CARD_DECLINED, customer_not_moved, kind_word, money, not_moved, outcome, two_cols,
)

WIDTH = 32
BOLD = "\x00B"
RULE = "-" * WIDTH
CUT = "\f"  # a line of its own: the printer cuts the paper there


def _center(text: str) -> str:
    return text[:WIDTH].center(WIDTH).rstrip()


def sale_receipt(cfg: CoreConfig, rec: SaleRecord, *, copy: bool = False,
                 holder: str = "") -> list[str]:
    """The receipt of a sale; for a refund, its merchant and customer copies in one job
    (refund_receipt). `holder` names the copy ("MERCHANT COPY") on one of the two."""
    if rec.kind == "refund" and not holder:
        return refund_receipt(cfg, rec, copy=copy)
    lines = [BOLD + _center(cfg.merchant_name)]
    lines += [_center(a) for a in cfg.address]
    lines.append(RULE)
    lines.append(two_cols("DATE " + rec.local.strftime("%Y-%m-%d"),
                          "TIME " + rec.local.strftime("%H:%M:%S"), WIDTH))
    lines.append(two_cols("TERMINAL", cfg.identity.terminal_id.strip(), WIDTH))
    lines.append(two_cols("MERCHANT", cfg.identity.merchant_id.strip(), WIDTH))
    if rec.sale_id:  # a sale that never reached the journal has no batch or invoice
        lines.append(two_cols("BATCH " + f"{rec.batch:06d}", "INVOICE " + f"{rec.invoice:06d}",
                              WIDTH))
    if rec.stan:
        lines.append(two_cols("STAN", rec.stan, WIDTH))
    lines.append(RULE)
    lines.append(BOLD + ("REFUND" if rec.kind == "refund" else "SALE"))
    lines.append(two_cols("CARD", rec.pan_masked, WIDTH))
    lines.append(two_cols("ENTRY", ENTRY_WORDS.get(rec.entry, "SWIPED"), WIDTH))
    lines += chip_lines(rec)
    lines.append(BOLD + two_cols("AMOUNT", money(rec.amount, cfg.currency_code), WIDTH))
    lines.append(RULE)
    lines += refund_verdict_lines(rec) if rec.kind == "refund" else verdict_lines(rec)
    if "SIGNATURE" in dict(rec.emv).get("CVM", "") and rec.status in (
            SaleStatus.APPROVED, SaleStatus.OFFLINE_APPROVED):
        lines += ["", "SIGNATURE:", "", "_" * WIDTH]
    if rec.voided:
        lines.append(BOLD + _center("*** VOIDED ***"))
    if copy:
        lines.append("")
        lines.append(BOLD + _center("*** COPY ***"))
    lines.append("")
    lines.append(_center("THANK YOU"))
    if holder:
        lines.append(_center(holder))
    return lines


ENTRY_WORDS = {"CHIP": "CHIP", "SWIPE": "SWIPED", "FALLBACK": "SWIPED (FALLBACK)"}


def chip_lines(rec: SaleRecord) -> list[str]:
    """A chip sale's EMV data (AID, application, TVR, TSI, cryptogram, CVM): what a help
    desk asks for; never card data."""
    return [two_cols(label, value, WIDTH) if len(label) + len(value) < WIDTH
            else f"{label} {value}"[:WIDTH] for label, value in rec.emv]


def verdict_lines(rec: SaleRecord) -> list[str]:
    if rec.status == SaleStatus.DECLINED and rec.reason == CARD_DECLINED:
        return [BOLD + CARD_DECLINED, "NOT CHARGED", "SALE REVERSED"]
    if rec.status == SaleStatus.APPROVED:
        return [BOLD + "APPROVED",
                two_cols("AUTH CODE", rec.approval, WIDTH),
                two_cols("RRN", rec.rrn, WIDTH)]
    if rec.status == SaleStatus.OFFLINE_APPROVED:
        return [BOLD + "APPROVED OFFLINE",
                two_cols("AUTH CODE", rec.approval, WIDTH),
                BOLD + _center("OFFLINE")]
    if rec.status == SaleStatus.DECLINED:
        out = outcome(rec.response_code)
        lines = [BOLD + out.headline, two_cols("RESPONSE", rec.response_code, WIDTH)]
        if out.reason:
            lines.append(out.reason)
        if rec.rrn:
            lines.append(two_cols("RRN", rec.rrn, WIDTH))
        return lines
    if rec.status == SaleStatus.NOT_COMPLETED:
        return [BOLD + "NOT COMPLETED", f"NO RESPONSE - {not_moved(rec.kind)}",
                f"{kind_word(rec.kind)} REVERSED"]
    if rec.status == SaleStatus.OFFLINE_REFUSED:
        return [BOLD + "REFUSED BY HOST", two_cols("OFFLINE CODE", rec.approval, WIDTH),
                two_cols("RESPONSE", rec.response_code, WIDTH), "SALE NOT PAID"]
    return [BOLD + "NOT COMPLETED", rec.reason or "HOST UNAVAILABLE",
            customer_not_moved(rec.kind).upper()]


def refused_slip(cfg: CoreConfig, rec: SaleRecord) -> list[str]:
    """The merchant's notice that the host refused a sale approved offline: it is unpaid."""
    cur = cfg.currency_code
    return [BOLD + _center("OFFLINE SALE REFUSED"), _center(cfg.merchant_name), RULE,
            two_cols("SALE", f"#{rec.sale_id}", WIDTH),
            two_cols("DATE", rec.local.strftime("%Y-%m-%d %H:%M"), WIDTH),
            two_cols("CARD", rec.pan_masked, WIDTH),
            BOLD + two_cols("AMOUNT", money(rec.amount, cur), WIDTH),
            two_cols("OFFLINE CODE", rec.approval, WIDTH),
            two_cols("BANK RESPONSE", rec.response_code, WIDTH), RULE,
            "THE BANK REFUSED THIS SALE.", "IT IS NOT PAID: COLLECT PAYMENT",
            "ANOTHER WAY.", "", _center("MERCHANT COPY")]


def offline_report(cfg: CoreConfig, *, link: str, stats: QueueStats, queued: list[SaleRecord],
                   refused: list[SaleRecord], printed_at: datetime) -> list[str]:
    """The operator's store-and-forward report: link, queue, and advices the host refused."""
    cur = cfg.currency_code
    lines = [BOLD + _center("OFFLINE REPORT"), _center(cfg.merchant_name), RULE,
             two_cols("PRINTED", printed_at.strftime("%Y-%m-%d %H:%M"), WIDTH),
             two_cols("TERMINAL", cfg.identity.terminal_id.strip(), WIDTH),
             two_cols("HOST LINK", link, WIDTH),
             two_cols("REVERSALS PENDING", str(stats.reversals), WIDTH),
             *([two_cols("CANNOT BE SENT", str(stats.unsendable), WIDTH)]
               if stats.unsendable else []), RULE,
             BOLD + two_cols("WAITING TO SEND", str(stats.count), WIDTH),
             two_cols("AMOUNT", money(stats.total, cur), WIDTH)]
    if stats.oldest is not None:
        lines.append(two_cols("OLDEST", stats.oldest.strftime("%Y-%m-%d %H:%M"), WIDTH))
    for rec in queued:
        lines.append(_sale_line(rec, cur))
    lines += [RULE, BOLD + two_cols("REFUSED BY HOST", str(len(refused)), WIDTH)]
    for rec in refused:
        lines.append(_sale_line(rec, cur))
        lines.append(two_cols("  " + rec.pan_masked, "CODE " + rec.response_code, WIDTH))
    if refused:
        lines += ["", "REFUSED SALES ARE UNPAID.", "COLLECT PAYMENT ANOTHER WAY."]
    lines += ["", _center("END OF REPORT")]
    return lines


def _sale_line(rec: SaleRecord, cur: str) -> str:
    return two_cols(f"#{rec.sale_id} {rec.local.strftime('%m-%d %H:%M')} {rec.approval}",
                    money(rec.amount, cur), WIDTH)


# -- batch reports: X (the open batch, nothing closed) and Z (a closed batch) -----------

@dataclass(frozen=True)
class Tally:
    count: int = 0
    amount: int = 0  # minor units


@dataclass(frozen=True)
class BatchSummary:
    """A batch by type. `totals` is what the 0500 carries: purchases approved online plus
    offline sales the host accepted, and refunds, none of them voided."""

    batch: int
    sales: Tally = Tally()  # purchases approved online, not voided
    refunds: Tally = Tally()  # refunds approved, not voided
    voids: Tally = Tally()  # transactions voided by the operator
    offline_approved: Tally = Tally()  # approved offline, not voided (accepted or waiting)
    offline_waiting: Tally = Tally()  # ... of which the host has not answered yet
    offline_refused: Tally = Tally()  # approved offline, refused by the host: unpaid
    totals: BatchTotals = BatchTotals()
    first: datetime | None = None  # the oldest and newest transaction of the batch
    last: datetime | None = None


def _batch_body(cfg: CoreConfig, s: BatchSummary) -> list[str]:
    cur = cfg.currency_code

    def row(label: str, t: Tally, sign: str = "") -> list[str]:
        return [two_cols(f"{label} {t.count}", sign + money(t.amount, cur), WIDTH)]

    lines = [two_cols("TERMINAL", cfg.identity.terminal_id.strip(), WIDTH),
             two_cols("MERCHANT", cfg.identity.merchant_id.strip(), WIDTH),
             BOLD + two_cols("BATCH", f"{s.batch:06d}", WIDTH)]
    if s.first is not None and s.last is not None:
        lines.append(two_cols("FROM", s.first.strftime("%Y-%m-%d %H:%M"), WIDTH))
        lines.append(two_cols("TO", s.last.strftime("%Y-%m-%d %H:%M"), WIDTH))
    lines.append(RULE)
    lines += row("SALES", s.sales)
    lines += row("REFUNDS", s.refunds, "-")
    lines += row("VOIDS", s.voids)
    lines += row("OFFLINE APPROVED", s.offline_approved)
    if s.offline_waiting.count:
        lines += row(" NOT YET SENT", s.offline_waiting)
    lines += row("OFFLINE REFUSED", s.offline_refused)
    t = s.totals
    lines += [RULE, BOLD + "TOTALS FOR THE BANK",
              two_cols(f"PURCHASES {t.purchases}", money(t.purchase_amount, cur), WIDTH),
              two_cols(f"REFUNDS {t.refunds}", "-" + money(t.refund_amount, cur), WIDTH),
              BOLD + two_cols("NET", money(t.purchase_amount - t.refund_amount, cur), WIDTH)]
    return lines


def x_report(cfg: CoreConfig, summary: BatchSummary, *, printed_at: datetime) -> list[str]:
    """The open batch's totals by type; nothing is closed."""
    lines = [BOLD + _center("X REPORT"), _center(cfg.merchant_name), RULE,
             two_cols("PRINTED", printed_at.strftime("%Y-%m-%d %H:%M"), WIDTH)]
    lines += _batch_body(cfg, summary)
    lines += [RULE, BOLD + _center("X REPORT - BATCH NOT CLOSED"), "",
              _center("END OF REPORT")]
    return lines


def z_report(cfg: CoreConfig, summary: BatchSummary, *, closed_at: datetime, host_code: str,
             balanced: bool, uploaded: int) -> list[str]:
    """A closed batch: its totals, the host's answer and whether it agreed."""
    lines = [BOLD + _center("Z REPORT - BATCH CLOSED"), _center(cfg.merchant_name), RULE,
             two_cols("CLOSED", closed_at.strftime("%Y-%m-%d %H:%M"), WIDTH)]
    lines += _batch_body(cfg, summary)
    lines += [RULE, two_cols("HOST RESPONSE", host_code, WIDTH)]
    if uploaded:
        lines.append(two_cols("BATCH UPLOADED", f"{uploaded} TRANS.", WIDTH))
    if balanced:
        lines.append(BOLD + _center("IN BALANCE"))
    else:
        lines.append(BOLD + _center("OUT OF BALANCE - CALL HELP DESK"))
    lines += ["", _center("END OF REPORT")]
    return lines


def reprint(lines: tuple[str, ...] | list[str]) -> list[str]:
    """A report printed again: the same lines, marked as a reprint."""
    return [BOLD + _center("*** REPRINT ***"), *lines]


# -- refunds and voids ------------------------------------------------------------------

def refund_receipt(cfg: CoreConfig, rec: SaleRecord, *, copy: bool = False) -> list[str]:
    """A refund's receipt: the merchant's copy, a cut, the customer's copy (one job)."""
    return [*sale_receipt(cfg, rec, copy=copy, holder="MERCHANT COPY"), CUT,
            *sale_receipt(cfg, rec, copy=copy, holder="CUSTOMER COPY")]


def refund_verdict_lines(rec: SaleRecord) -> list[str]:
    """A refund's outcome in refund words: the card is credited only when approved."""
    if rec.status == SaleStatus.APPROVED:
        return [BOLD + "REFUND APPROVED", two_cols("AUTH CODE", rec.approval, WIDTH),
                two_cols("RRN", rec.rrn, WIDTH), "AMOUNT CREDITED TO CARD"]
    if rec.status == SaleStatus.DECLINED:
        return [*verdict_lines(rec), "CARD NOT CREDITED"]
    if rec.status == SaleStatus.NOT_COMPLETED:
        return [BOLD + "NOT COMPLETED", "NO RESPONSE - NOT CREDITED", "REFUND REVERSED"]
    return [BOLD + "NOT COMPLETED", rec.reason or "HOST UNAVAILABLE", "CARD NOT CREDITED"]


def void_receipt(cfg: CoreConfig, record: SaleRecord, sent_to_host: bool, *,
                 voided_at: datetime | None = None) -> list[str]:
    """The VOID receipt of a voided purchase or refund (`record`: the original). Not sent
    to the host: an offline sale whose advice was taken off the queue before it left."""
    refund = record.kind == "refund"
    lines = [BOLD + _center(cfg.merchant_name), *(_center(a) for a in cfg.address), RULE,
             BOLD + _center("VOID"), RULE,
             two_cols("TERMINAL", cfg.identity.terminal_id.strip(), WIDTH),
             two_cols("MERCHANT", cfg.identity.merchant_id.strip(), WIDTH),
             two_cols("BATCH " + f"{record.batch:06d}", "INVOICE " + f"{record.invoice:06d}",
                      WIDTH),
             two_cols("ORIGINAL", record.local.strftime("%Y-%m-%d %H:%M:%S"), WIDTH)]
    if voided_at is not None:
        lines.append(two_cols("VOIDED", voided_at.strftime("%Y-%m-%d %H:%M:%S"), WIDTH))
    lines += [RULE, BOLD + ("VOID OF REFUND" if refund else "VOID OF SALE"),
              two_cols("CARD", record.pan_masked, WIDTH),
              BOLD + two_cols("AMOUNT", money(record.amount, cfg.currency_code), WIDTH)]
    if record.approval:
        lines.append(two_cols("AUTH CODE", record.approval, WIDTH))
    if record.rrn:
        lines.append(two_cols("RRN", record.rrn, WIDTH))
    lines.append(RULE)
    lines.append(BOLD + ("REFUND CANCELLED" if refund else "CUSTOMER NOT CHARGED"))
    lines.append("CARD NOT CREDITED" if refund else "THE SALE IS CANCELLED")
    if not sent_to_host:
        lines.append("OFFLINE SALE NEVER SENT")
    lines += ["", _center("KEEP THIS RECEIPT")]
    return lines
