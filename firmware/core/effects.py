"""Effects: what the core asks the runtime to do, in order. Imperative frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

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


Effect = (Show | Print | StartTimer | Authorize | CloseSale | DecideOffline | PrintReport | Log
          | Beep)
