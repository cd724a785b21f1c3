"""Effects: what the core asks the runtime to do, in order. Imperative frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from firmware.core.emv.steps import HostReply, Outcome
from firmware.core.model import SaleRequest


@dataclass(frozen=True)
class Show:
    rows: tuple[str, str, str, str]


@dataclass(frozen=True)
class Print:
    lines: tuple[str, ...]
    sale_id: int | None = None  # mark this sale's receipt printed once done
    job: str = "sale"  # echoed in PrintFinished: "sale", "copy", "report", "refused"


@dataclass(frozen=True)
class StartTimer:
    seconds: float
    token: int
    jitter: bool = False  # full jitter: the runtime waits uniform(0, seconds)


@dataclass(frozen=True)
class Authorize:
    """Send the sale to the host (a new attempt with a new STAN); report back an event."""

    request: SaleRequest = field(repr=False)
    sale_id: int | None = None


@dataclass(frozen=True)
class CloseSale:
    """Record that a sale ended without a host answer (nothing was charged)."""

    sale_id: int
    reason: str


@dataclass(frozen=True)
class DecideOffline:
    """Record the offline decision for a sale the host could not take.

    Approved: the sale, its advice and its sealed card data in one transaction,
    before anything is shown. Refused: the sale closed with `reason`."""

    request: SaleRequest = field(repr=False)
    sale_id: int | None
    approved: bool
    reason: str
    code: str = "Y3"  # the approval code's prefix: Y3, or Y1 when the chip approved offline


@dataclass(frozen=True)
class PrintReport:
    """Print the store-and-forward report (queue, refused advices)."""


@dataclass(frozen=True)
class Log:
    level: str  # "info", "warning", "error"
    text: str


@dataclass(frozen=True)
class Beep:
    pass


@dataclass(frozen=True)
class CheckPin:
    """Check the supervisor PIN for an operator function; answer PinChecked. The PIN is
    never shown, logged or journaled (no repr)."""

    pin: str = field(repr=False)
    function: str


@dataclass(frozen=True)
class FindForVoid:
    """Look up a transaction of the open batch by invoice number (None: the last one);
    answer VoidCandidate."""

    invoice: int | None


@dataclass(frozen=True)
class Void:
    """Void the transaction (journal first); answer VoidRecorded, or VoidCandidate(None,
    problem) when it can no longer be voided."""

    sale_id: int


@dataclass(frozen=True)
class PrintTotals:
    """Print the X report of the open batch ("X") or the last Z report again ("Z");
    answered by PrintFinished(job="x-report" / "z-report")."""

    kind: str


@dataclass(frozen=True)
class CloseBatch:
    """Close the open batch (menu, or the daily schedule): send what is pending, 0500,
    upload if out of balance; answer CloseProgress events, then CloseFinished."""

    scheduled: bool = False




@dataclass(frozen=True)
class ChipBegin:
    """Run the EMV kernel on the card in the reader for this sale."""

    kind: str  # "purchase" or "refund"
    amount: int
    local: datetime
    offline_ok: bool  # the terminal's own offline rules would allow an offline approval


@dataclass(frozen=True)
class ChipChoice:
    """The cardholder's choice of application (an index into ChipAsked.labels), or None."""

    index: int | None


@dataclass(frozen=True)
class ChipComplete:
    """Finish with the card after the online step (Book 3 10.9): the host's answer, or why
    there is none."""

    reply: HostReply = field(repr=False)


@dataclass(frozen=True)
class ChipSettle:
    """Journal the card's decision on a sale the host approved (ChipSettled follows):
    approved -> the sale stands; else a reversal (reason 06) and DECLINED BY CARD."""

    sale_id: int
    outcome: Outcome = field(repr=False)


@dataclass(frozen=True)
class TakePin:
    """Take the cardholder's PIN for a swiped card whose service code asks for one (an
    online PIN: the PIN pad holds the block for the request); PinKeyed and PinTaken
    follow."""

    request: SaleRequest = field(repr=False)


@dataclass(frozen=True)
class ChipStop:
    """Stop talking to the card (power it off): the sale ended without it."""


Effect = (Show | Print | StartTimer | Authorize | CloseSale | DecideOffline | PrintReport | Log
          | Beep | CheckPin | FindForVoid | Void | PrintTotals | CloseBatch | ChipBegin
          | ChipChoice | ChipComplete | ChipSettle | ChipStop | TakePin)
