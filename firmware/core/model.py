"""Values the core and the runtime share: core configuration, a sale's request, its record."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from firmware.core.card import CardData
from firmware.core.emv.params import Terminal
from firmware.core.emv.steps import ChipData
from firmware.core.iso import Identity
from firmware.core.risk import OfflineRules


@dataclass(frozen=True)
class CoreConfig:
    identity: Identity
    merchant_name: str
    address: tuple[str, ...]
    currency_code: str  # alphabetic, for people: "EUR"
    max_amount: int  # minor units
    amount_timeout: float = 60.0
    card_timeout: float = 30.0
    result_timeout: float = 4.0
    busy_retries: int = 2
    busy_backoff: float = 0.5
    sale_budget: float = 60.0  # seconds a sale may spend retrying a busy host
    offline: OfflineRules = OfflineRules()
    # operator functions that ask for the supervisor PIN first: any of "refund", "void",
    # "close", "x_report" ([operator] protect); a PIN is configured when pin_set
    protect: frozenset[str] = frozenset({"refund", "void", "close", "x_report"})
    pin_set: bool = False
    duplicate_minutes: float = 10.0  # 0: no duplicate guard
    chip: Terminal | None = None  # EMV parameters ([chip]); None: no chip reader
    pin_entry: bool = False  # a PIN pad takes the cardholder's PIN ([pin])


class SaleStatus:
    AUTHORIZING = "AUTHORIZING"
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    NOT_COMPLETED = "NOT_COMPLETED"  # outcome unknown: reversal pending or done
    FAILED = "FAILED"  # never reached the host: nothing charged
    OFFLINE_APPROVED = "OFFLINE_APPROVED"
    OFFLINE_REFUSED = "OFFLINE_REFUSED"  # approved offline, then refused by the host

    FINAL = frozenset({APPROVED, DECLINED, NOT_COMPLETED, FAILED, OFFLINE_APPROVED,
                       OFFLINE_REFUSED})


@dataclass(frozen=True)
class SaleRequest:
    """What the core asks the runtime to authorize. Holds the card only in memory."""

    kind: str  # "purchase" or "refund"
    amount: int
    card: CardData = field(repr=False)
    local: datetime  # local date and time of the sale (fields 12, 13; the receipt)
    # how the card was read (field 22's first two digits): "90" swiped, "05" chip, "80"
    # swiped after the chip of that card failed
    entry: str = "90"
    chip: ChipData | None = field(default=None, repr=False)  # the chip's data, entry 05
    pin: bool = False  # an online PIN was entered: the PIN pad holds its block (52, 53)


@dataclass(frozen=True)
class SaleRecord:
    """A sale as the journal holds it: safe to show and print (PAN masked)."""

    sale_id: int
    kind: str
    amount: int
    pan_masked: str
    local: datetime
    status: str
    response_code: str = ""
    approval: str = ""
    rrn: str = ""
    stan: str = ""
    batch: int = 0
    invoice: int = 0
    reason: str = ""  # plain words for a decline or failure
    receipt_printed: bool = False
    voided: bool = False  # undone by the operator (0400 reason 17, or taken off the queue)
    pan_hash: str = ""  # keyed hash of the PAN (HMAC under the terminal's key), never the PAN
    entry: str = ""  # "CHIP", "SWIPE", "FALLBACK" ("" from older journals: a swipe)
    # a chip sale's receipt data, (label, value) pairs: AID, application, TVR, TSI, the
    # cryptogram, the CVM; never card data
    emv: tuple[tuple[str, str], ...] = ()
