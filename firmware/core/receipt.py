"""Receipt layout for a 58 mm printer: 32 characters a line in font A.

A line starting with BOLD is printed emphasised by the printer driver.
"""

from __future__ import annotations

from datetime import datetime

from firmware.core.model import CoreConfig, SaleRecord, SaleStatus
from firmware.core.risk import QueueStats
from firmware.core.texts import money, outcome, two_cols

WIDTH = 32
BOLD = "\x00B"
RULE = "-" * WIDTH


def _center(text: str) -> str:
    return text[:WIDTH].center(WIDTH).rstrip()


def sale_receipt(cfg: CoreConfig, rec: SaleRecord, *, copy: bool = False) -> list[str]:
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
    lines.append(two_cols("ENTRY", "SWIPED", WIDTH))
    lines.append(BOLD + two_cols("AMOUNT", money(rec.amount, cfg.currency_code), WIDTH))
    lines.append(RULE)
    lines += verdict_lines(rec)
    if copy:
        lines.append("")
        lines.append(BOLD + _center("*** COPY ***"))
    lines.append("")
    lines.append(_center("THANK YOU"))
    return lines


def verdict_lines(rec: SaleRecord) -> list[str]:
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
        return [BOLD + "NOT COMPLETED", "NO RESPONSE - NOT CHARGED", "SALE REVERSED"]
    if rec.status == SaleStatus.OFFLINE_REFUSED:
        return [BOLD + "REFUSED BY HOST", two_cols("OFFLINE CODE", rec.approval, WIDTH),
                two_cols("RESPONSE", rec.response_code, WIDTH), "SALE NOT PAID"]
    return [BOLD + "NOT COMPLETED", rec.reason or "HOST UNAVAILABLE", "CUSTOMER NOT CHARGED"]


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
