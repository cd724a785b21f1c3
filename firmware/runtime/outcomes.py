"""One log line per sale outcome, in plain words, with structured journal fields.

`journalctl -u posterm SALE_ID=42` finds the line of sale 42; OUTCOME, AMOUNT,
STAN, RC and PAN (masked, first 6 and last 4) are fields of it. Under systemd
they are journal fields (journald.py); on stderr the words say the same.
"""

from __future__ import annotations

import logging

from firmware.core.model import SaleRecord, SaleStatus
from firmware.core.texts import customer_not_moved, money, not_moved, outcome

log = logging.getLogger("posterm.sale")


def describe(rec: SaleRecord, currency: str, cause: str = "") -> tuple[str, str, int]:
    """(OUTCOME field, the words, logging level) for a sale's final record."""
    amount = money(rec.amount, currency)
    if rec.status == SaleStatus.APPROVED:
        return "APPROVED", f"approved, {amount}, auth {rec.approval}", logging.INFO
    if rec.status == SaleStatus.OFFLINE_APPROVED:
        return ("OFFLINE_APPROVED", f"approved offline, {amount}, code {rec.approval}, "
                "to be sent to the bank", logging.INFO)
    if rec.status == SaleStatus.DECLINED:
        out = outcome(rec.response_code)
        why = f" ({out.reason.lower()})" if out.reason else ""
        return ("DECLINED", f"declined by the bank, code {rec.response_code}{why}, {amount}, "
                f"{not_moved(rec.kind).lower()}", logging.INFO)
    if rec.status == SaleStatus.NOT_COMPLETED:
        return ("NOT_COMPLETED", f"no answer from the bank, {amount}: reversal recorded, "
                f"{customer_not_moved(rec.kind)}", logging.WARNING)
    why = ", ".join(x.lower() for x in (cause, rec.reason) if x) or "not completed"
    return "NOT_CHARGED", f"not completed ({why}), {amount}, {customer_not_moved(rec.kind)}", \
        logging.WARNING


def log_outcome(rec: SaleRecord, currency: str, *, cause: str = "") -> None:
    kind, words, level = describe(rec, currency, cause)
    label = f"sale {rec.sale_id}" if rec.sale_id else "sale (not journaled)"
    fields = {"OUTCOME": kind, "AMOUNT": rec.amount, "CURRENCY": currency,
              "PAN": rec.pan_masked, "RC": rec.response_code, "STAN": rec.stan}
    if rec.sale_id:
        fields["SALE_ID"] = rec.sale_id
    if rec.kind == "refund":
        label += " (refund)"
    log.log(level, "%s: %s, card %s", label, words, rec.pan_masked, extra={"journal": fields})
