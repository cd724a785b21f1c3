"""The data of the terminal's state machine: its phases and its state, nothing that moves.

The state is two parts: what the terminal knows whatever it is doing (the link, the
queue of unsent sales, standing conditions, the last sale, the idle screen's notice...),
and `flow`, one record for the flow in progress — a sale or refund (`SaleFlow`), the
menu (`MenuFlow`), the supervisor PIN (`PinFlow`), a void (`VoidFlow`), a batch close
(`CloseFlow`) — or None at rest. Going idle drops the flow: one field, whatever flow
it was. The moves (`go`, `to_idle`, `refresh`) are in `moves.py`, the transition table
in `machine.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from firmware.core.effects import Effect
from firmware.core.events import CloseFinished
from firmware.core.emv.steps import ChipData
from firmware.core.model import CoreConfig, SaleRecord, SaleRequest
from firmware.core.risk import QueueStats


class Phase(enum.Enum):
    IDLE = "IDLE"
    AMOUNT = "AMOUNT"
    WAIT_CARD = "WAIT_CARD"
    DUPLICATE = "DUPLICATE"  # same card and amount as a recent approval: ask first
    AUTHORIZING = "AUTHORIZING"
    BUSY_WAIT = "BUSY_WAIT"
    PRINTING = "PRINTING"
    RESULT = "RESULT"
    MENU = "MENU"
    STATUS = "STATUS"
    PIN = "PIN"  # the supervisor PIN is being keyed in
    PIN_CHECK = "PIN_CHECK"  # CheckPin asked, waiting for PinChecked
    VOID_PICK = "VOID_PICK"  # invoice number being keyed in
    VOID_FIND = "VOID_FIND"  # FindForVoid asked, waiting for VoidCandidate
    VOID_CONFIRM = "VOID_CONFIRM"  # the transaction shown, OK voids it
    VOIDING = "VOIDING"  # Void asked, waiting for VoidRecorded (nothing else is taken)
    VOIDED = "VOIDED"  # the void is journaled, its receipt printing
    CLOSE_CONFIRM = "CLOSE_CONFIRM"
    CLOSING = "CLOSING"  # CloseBatch asked: runs to its end, no cancel, no new sale
    CLOSED = "CLOSED"  # the close's result
    CHIP_READING = "CHIP_READING"  # the kernel works with the card (PLEASE WAIT)
    CHIP_CHOOSE = "CHIP_CHOOSE"  # the cardholder chooses the card's application
    CHIP_COMPLETING = "CHIP_COMPLETING"  # the card decides after the online step
    REMOVE_CARD = "REMOVE_CARD"  # the sale is over, the card still in the reader
    PIN_ENTRY = "PIN_ENTRY"  # the cardholder keys the PIN into the PIN pad


@dataclass(frozen=True)
class Now:
    """The runtime's clock, read once per event."""

    mono: float  # monotonic seconds
    local: datetime  # local wall time


@dataclass(frozen=True)
class Sale:
    amount: int
    request: SaleRequest | None = None
    sale_id: int | None = None
    attempts: int = 0
    started: float = 0.0  # monotonic time of the first attempt
    kind: str = "purchase"  # or "refund"
    pan_hash: str = ""  # keyed hash of the card's PAN, from its CardSwiped (never the PAN)


@dataclass(frozen=True)
class Recent:
    """An approved purchase the duplicate guard remembers (no card data: a keyed hash)."""

    sale_id: int
    pan_hash: str
    amount: int
    local: datetime


@dataclass(frozen=True)
class SaleFlow:
    """A sale or a refund, from its amount being keyed to its result."""

    kind: str = "purchase"  # or "refund"
    digits: str = ""  # the amount being keyed (AMOUNT)
    sale: Sale | None = None  # the amount confirmed: the card asked for, then sent
    result: SaleRecord | None = None  # how it ended (PRINTING, RESULT)
    cause: str = ""  # why it could not go online (shown with an offline refusal)
    # the chip (chipsale.py): the card's data once read, the applications to choose
    # from, whether a swipe is now a fallback (the chip failed), the host's recorded
    # answer or the offline rules' decision waiting for the card's last word
    chip: ChipData | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()
    fallback: bool = False
    waiting: SaleRecord | None = None
    offline: tuple[bool, str] | None = None  # (the rules allow it, their reason)
    # the cardholder's PIN (pinsale.py): for a swipe or for the chip's CVM, the digits
    # keyed so far (a count: the digits stay in the PIN pad), the card's tries left
    pin_for: str = ""
    pin_count: int = 0
    pin_tries: int | None = None
    pin_online: bool = False  # the chip's CVM took an online PIN: the request carries it


@dataclass(frozen=True)
class MenuFlow:
    """The menu and the status screens it opens."""

    page: int = 0  # the MENU's page: 0 the sale's, 1 the merchant's
    status_page: int = 0  # the STATUS screen's page
    seen: datetime = datetime(2000, 1, 1)  # local time when the STATUS screen was opened


@dataclass(frozen=True)
class PinFlow:
    """The supervisor PIN asked before an operator function."""

    function: str  # "refund", "void", "close", "x_report", "z_report"
    pin: str = field(default="", repr=False)  # digits keyed, never shown


@dataclass(frozen=True)
class VoidFlow:
    digits: str = ""  # the invoice number being keyed (VOID_PICK)
    candidate: SaleRecord | None = None  # the transaction the void is about


@dataclass(frozen=True)
class CloseFlow:
    # who started it: "" the operator, "daily" the daily close time, "resumed" the
    # terminal itself, finishing a close that a crash or the host cut short
    origin: str = ""
    done: CloseFinished | None = None  # how it ended (CLOSED phase)


Flow = SaleFlow | MenuFlow | PinFlow | VoidFlow | CloseFlow


@dataclass(frozen=True)
class State:
    cfg: CoreConfig
    phase: Phase = Phase.IDLE
    token: int = 0
    flow: Flow | None = None  # the flow in progress; None at rest
    message: str = ""  # one line of feedback in the current phase
    notice: str = ""  # one line shown in IDLE (last sale outcome after recovery)
    alert: str = ""  # two lines kept on the idle screen until cleared (a refused offline sale)
    banner: str = ""  # planned maintenance, announced on the idle screen (the daily restart)
    last: SaleRecord | None = None
    link: str = "UP"
    untrusted: bool = False  # the link is down because the host's TLS identity was refused
    queue: QueueStats = QueueStats()
    # standing conditions of devices and power: (source, text, blocks new sales), by source
    conditions: tuple[tuple[str, str, bool], ...] = ()
    battery: int | None = None  # percent of charge, None without a gauge
    charging: bool = False
    path: str = ""  # "ETH" or "4G" when a modem is configured, "" otherwise
    bars: int = 0  # the modem's signal, 0..4
    path_detail: str = ""  # one status line about the modem (registration, signal)
    recent: tuple[Recent, ...] = ()  # approved purchases for the duplicate guard
    chip_in: bool = False  # a card is in the chip reader

    # the flow's records, read as one (None when another flow, or none, is in progress)
    @property
    def sale_flow(self) -> SaleFlow | None:
        return self.flow if isinstance(self.flow, SaleFlow) else None

    @property
    def sale(self) -> Sale | None:
        """The sale in progress, once its amount is confirmed."""
        return self.flow.sale if isinstance(self.flow, SaleFlow) else None

    @property
    def result(self) -> SaleRecord | None:
        return self.flow.result if isinstance(self.flow, SaleFlow) else None

    @property
    def cause(self) -> str:
        return self.flow.cause if isinstance(self.flow, SaleFlow) else ""


Step = tuple[State, list[Effect]]
