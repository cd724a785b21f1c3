"""The REFUND receipt (merchant and customer copies in one job, cut between them) and the
VOID receipt: their wording, the 32-column paper, and the cut through the real driver into
the printer model."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

from firmware.config import parse
from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.receipt import BOLD, CUT, WIDTH, refund_receipt, sale_receipt, void_receipt
from tests.test_config import GOOD
from tests.test_printer import SimThread, driver, served  # noqa: F401  (fixture)

CFG = parse(GOOD).core
SALE = SaleRecord(sale_id=7, kind="purchase", amount=1250, pan_masked="476173******0010",
                  local=datetime(2026, 3, 4, 10, 20, 30), status=SaleStatus.APPROVED,
                  response_code="00", approval="123456", rrn="000000000042", stan="000012",
                  batch=3, invoice=5)
REFUND = replace(SALE, kind="refund", amount=800, invoice=6)


def text(lines: list[str]) -> str:
    return "\n".join(line.removeprefix(BOLD) for line in lines)


def fits(lines: list[str]) -> bool:
    return all(len(line.removeprefix(BOLD)) <= WIDTH for line in lines if line != CUT)


def test_refund_prints_two_copies_in_one_job() -> None:
    lines = sale_receipt(CFG, REFUND)
    assert lines == refund_receipt(CFG, REFUND) and fits(lines)
    assert lines.count(CUT) == 1
    merchant, customer = text(lines).split("\n" + CUT + "\n")
    for copy, holder in ((merchant, "MERCHANT COPY"), (customer, "CUSTOMER COPY")):
        assert "REFUND" in copy.splitlines()
        assert "REFUND APPROVED" in copy and "AMOUNT CREDITED TO CARD" in copy
        assert "INVOICE 000006" in copy and "EUR 8.00" in copy
        assert copy.rstrip().endswith(holder)
        assert "APPROVED\n" not in copy.replace("REFUND APPROVED\n", "")


def test_refund_outcomes_say_not_credited() -> None:
    declined = text(sale_receipt(CFG, replace(REFUND, status=SaleStatus.DECLINED,
                                              response_code="05")))
    assert "DECLINED" in declined and "CARD NOT CREDITED" in declined
    unknown = text(sale_receipt(CFG, replace(REFUND, status=SaleStatus.NOT_COMPLETED)))
    assert "NO RESPONSE - NOT CREDITED" in unknown and "REFUND REVERSED" in unknown
    failed = text(sale_receipt(CFG, replace(REFUND, status=SaleStatus.FAILED,
                                            reason="REFUND NEEDS BANK")))
    assert "REFUND NEEDS BANK" in failed and "CARD NOT CREDITED" in failed
    copy = sale_receipt(CFG, REFUND, copy=True)
    assert text(copy).count("*** COPY ***") == 2


def test_a_purchase_receipt_is_one_receipt() -> None:
    lines = sale_receipt(CFG, SALE)
    assert CUT not in lines and "MERCHANT COPY" not in text(lines)
    voided = text(sale_receipt(CFG, replace(SALE, voided=True), copy=True))
    assert "*** VOIDED ***" in voided


def test_void_receipt_of_a_sale() -> None:
    lines = void_receipt(CFG, replace(SALE, voided=True), True,
                         voided_at=datetime(2026, 3, 4, 11, 0, 0))
    assert fits(lines)
    body = text(lines)
    for want in ("VOID", "VOID OF SALE", "INVOICE 000005", "476173******0010", "EUR 12.50",
                 "2026-03-04 10:20:30", "2026-03-04 11:00:00", "CUSTOMER NOT CHARGED",
                 "RRN", "000000000042"):
        assert want in body, want
    assert "4761739001010010" not in body and "OFFLINE SALE NEVER SENT" not in body


def test_void_receipt_of_a_refund_and_of_an_unsent_offline_sale() -> None:
    refund = text(void_receipt(CFG, replace(REFUND, voided=True), True))
    assert "VOID OF REFUND" in refund and "REFUND CANCELLED" in refund
    assert "CUSTOMER NOT CHARGED" not in refund
    offline = replace(SALE, status=SaleStatus.OFFLINE_APPROVED, approval="Y30007", rrn="",
                      stan="", voided=True)
    body = text(void_receipt(CFG, offline, False))
    assert "OFFLINE SALE NEVER SENT" in body and "CUSTOMER NOT CHARGED" in body
    assert "RRN" not in body


def test_the_cut_line_makes_two_receipts_on_paper(served: SimThread,  # noqa: F811
                                                  tmp_path: Path) -> None:
    p = driver(served.port, tmp_path)
    p.print_lines(sale_receipt(CFG, REFUND))
    p.close()
    receipts = served.sim.receipts()
    assert len(receipts) == 2, receipts
    assert "MERCHANT COPY" in receipts[0] and "CUSTOMER COPY" not in receipts[0]
    assert "CUSTOMER COPY" in receipts[1] and "REFUND APPROVED" in receipts[1]
    assert "\f" not in receipts[0] + receipts[1]
