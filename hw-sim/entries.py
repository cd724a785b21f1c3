"""A ledger entry and batch totals: what the simulated acquirer's books
(`ledger.Books`) record and what its settlement (`settlement.Settlement`)
counts. Both import this module; neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final, NamedTuple

KIND_OF: Final = {"000000": "purchase", "200000": "refund"}


@dataclass
class LedgerEntry:
    """One original financial message (0200, 0220/0221) the host processed."""

    tid: str
    stan: str
    f7: str
    mti: str
    kind: str  # "purchase", "refund", or "other" for a processing code the host refuses
    amount: int
    currency: str
    pan: str  # masked: first 6, last 4
    processing_code: str
    approval: str | None
    rrn: str
    code: str
    charged: bool  # a purchase the customer pays now
    credited: bool  # a refund the customer gets now
    reversed: bool
    voided: bool
    offline_approval: str | None
    batch: str | None
    invoice: str | None
    entry_mode: str | None = None  # field 22
    aid: str | None = None  # a chip sale's application (tag 84), hex
    cryptogram: str | None = None  # a chip sale's: "ARQC", "TC" or "AAC"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Totals(NamedTuple):
    """Batch totals in the order of fields 74, 76, 86, 88."""

    refunds: int
    purchases: int
    refund_amount: int
    purchase_amount: int

    def as_dict(self) -> dict[str, int]:
        return dict(self._asdict())


def totals_of(entries: Iterable[LedgerEntry]) -> Totals:
    """Purchases charged now and refunds credited now, among `entries`."""
    refunds = purchases = refund_amount = purchase_amount = 0
    for entry in entries:
        if entry.kind == "purchase" and entry.charged:
            purchases += 1
            purchase_amount += entry.amount
        elif entry.kind == "refund" and entry.credited:
            refunds += 1
            refund_amount += entry.amount
    return Totals(refunds, purchases, refund_amount, purchase_amount)


def counted(entry: LedgerEntry) -> bool:
    """Whether the batch totals count this ledger entry now."""
    return (entry.kind == "purchase" and entry.charged) or (
        entry.kind == "refund" and entry.credited)
