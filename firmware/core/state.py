"""The state of the terminal's state machine, and the moves every phase handler shares.

`sale.py` (the sale flow: amount, card, authorization, result, the menu) and
`merchant.py` (the operator functions: supervisor PIN, refund entry, void, reports,
batch close) both build on these; `sale.step` is the one entry point.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from firmware.core import screens
from firmware.core.effects import Effect, StartTimer
from firmware.core.events import CloseFinished
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
class State:
    cfg: CoreConfig
    phase: Phase = Phase.IDLE
    digits: str = ""
    sale: Sale | None = None
    token: int = 0
    notice: str = ""  # one line shown in IDLE (last sale outcome after recovery)
    message: str = ""  # one line of feedback in the current phase
    last: SaleRecord | None = None
    result: SaleRecord | None = None
    link: str = "UP"
    untrusted: bool = False  # the link is down because the host's TLS identity was refused
    cause: str = ""  # why the sale could not go online (shown with an offline refusal)
    alert: str = ""  # two lines kept on the idle screen until cleared (a refused offline sale)
    banner: str = ""  # planned maintenance, announced on the idle screen (the daily restart)
    queue: QueueStats = QueueStats()
    seen: datetime = datetime(2000, 1, 1)  # local time when the STATUS screen was opened
    # standing conditions of devices and power: (source, text, blocks new sales), by source
    conditions: tuple[tuple[str, str, bool], ...] = ()
    battery: int | None = None  # percent of charge, None without a gauge
    charging: bool = False
    path: str = ""  # "ETH" or "4G" when a modem is configured, "" otherwise
    bars: int = 0  # the modem's signal, 0..4
    path_detail: str = ""  # one status line about the modem (registration, signal)
    page: int = 0  # the STATUS screen's page
    menu_page: int = 0  # the MENU's page: 0 the sale's, 1 the merchant's
    # the operator function in progress: "refund", "void", "close", "x_report", "z_report"
    function: str = ""
    pin: str = field(default="", repr=False)  # digits keyed in the PIN phase, never shown
    candidate: SaleRecord | None = None  # the transaction a void is about
    close: CloseFinished | None = None  # how the batch close ended (CLOSED phase)
    # who started the close in progress: "" the operator, "daily" the daily close time,
    # "resumed" the terminal itself, finishing a close that a crash or the host cut short
    close_origin: str = ""
    recent: tuple[Recent, ...] = ()  # approved purchases for the duplicate guard


def blocking(state: State) -> str:
    """The text of the first condition that stops new sales, or ""."""
    return next((text for _src, text, blocks in state.conditions if blocks), "")


Step = tuple[State, list[Effect]]


def go(state: State, phase: Phase, timeout: float | None = None, *, jitter: bool = False,
       **changes: object) -> Step:
    """Enter a phase: new timer token, show its screen, start its timer."""
    st = replace(state, phase=phase, token=state.token + 1, **changes)  # type: ignore[arg-type]
    effects: list[Effect] = [screens.show(st)]
    if timeout is not None:
        effects.append(StartTimer(timeout, st.token, jitter=jitter))
    return st, effects


def to_idle(state: State, notice: str = "") -> Step:
    return go(state, Phase.IDLE, None, digits="", sale=None, message="", notice=notice,
              result=None, cause="", function="", pin="", candidate=None, close=None,
              close_origin="", menu_page=0)


def refresh(state: State, message: str) -> Step:
    st = replace(state, message=message)
    return st, [screens.show(st)]
