"""Receipt layout for a 58 mm printer: 32 characters a line in font A.

A line starting with BOLD is printed emphasised by the printer driver.
"""

from __future__ import annotations

from firmware.core.model import CoreConfig, SaleRecord, SaleStatus
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
    lines.append(two_cols("BATCH " + f"{rec.batch:06d}", "INVOICE " + f"{rec.invoice:06d}", WIDTH))
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
    return [BOLD + "NOT COMPLETED", rec.reason or "HOST UNAVAILABLE", "NOT CHARGED"]
