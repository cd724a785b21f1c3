"""Events: things that happened, fed into the core by the runtime and the drivers.

Every event is a frozen dataclass named in the past tense. Drivers produce the
device events below; the runtime produces host and timer events.
"""

from __future__ import annotations

from dataclasses import dataclass
from firmware.core.card import CardData
from firmware.core.emv.steps import ChipData, Outcome, PinResult
from firmware.core.model import SaleRecord
from firmware.core.risk import QueueStats

# Logical keys, as the keypad driver reports them.
DIGITS = tuple("0123456789")
KEY_OK = "OK"
KEY_CLEAR = "CLEAR"
KEY_CANCEL = "CANCEL"
FUNCTION_KEYS = ("F1", "F2", "F3", "F4")


@dataclass(frozen=True)
class KeyPressed:
    key: str  # "0".."9", "OK", "CLEAR", "CANCEL", "F1".."F4"


@dataclass(frozen=True)
class CardSwiped:
    card: CardData
    pan_hash: str = ""  # filled in by the runtime: keyed hash of the PAN (duplicate guard)


@dataclass(frozen=True)
class CardReadFailed:
    reason: str  # short text for the display, e.g. "TRACK 2 NOT READ"
    detail: str = ""  # for the log; never contains track data


@dataclass(frozen=True)
class ChipInserted:
    """A card is in the chip reader (PC/SC reader state: present)."""

    atr: str = ""  # hex, for the log; "" when the card gave no usable ATR


@dataclass(frozen=True)
class ChipRemoved:
    """The card left the chip reader."""


@dataclass(frozen=True)
class ChipReaderFailed:
    """The chip reader is gone or PC/SC failed (reader unplugged, pcscd restarted)."""

    reason: str  # for the display, e.g. "CHIP READER FAULT"
    detail: str = ""  # for the log


@dataclass(frozen=True)
class ChipAsked:
    """The card has several applications (or asks for confirmation): the cardholder
    chooses one of `labels` (EMV Book 1 12.4)."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class ChipRead:
    """The card was read and asks to go online (an ARQC; an AAC for a refund)."""

    chip: ChipData
    pan_hash: str = ""  # filled in by the runtime, as for a swipe


@dataclass(frozen=True)
class ChipFinished:
    """The kernel is done with the card: its last word (approved, declined, failed...)."""

    outcome: Outcome


@dataclass(frozen=True)
class ChipSettled:
    """The card's decision on a sale the host approved is journaled: its TC (the sale
    stands) or its refusal (the sale is declined by the card, a reversal recorded)."""

    record: SaleRecord


@dataclass(frozen=True)
class PinAsked:
    """The card's CVM asks for the cardholder's PIN: the PIN pad takes it now (keys go to
    the PIN pad, never to the core)."""

    kind: str  # "online", "offline_plain", "offline_enciphered"
    tries_left: int | None = None
    bypass: bool = False


@dataclass(frozen=True)
class PinKeyed:
    """How many digits the cardholder has keyed (the digits themselves never leave the
    PIN pad); `message` when the PIN pad has something to say (4 TO 12 DIGITS)."""

    count: int
    message: str = ""


@dataclass(frozen=True)
class PinTaken:
    """The PIN entry ended: entered (online block held), verified by the card, wrong,
    blocked, bypassed, cancelled, timed out."""

    result: PinResult


@dataclass(frozen=True)
class DeviceFault:
    device: str  # "card_reader", "keypad", "printer", "display", "gpio", ...
    message: str


@dataclass(frozen=True)
class TimerFired:
    name: str
    token: int = 0


@dataclass(frozen=True)
class HostAnswered:
    """The host gave a final answer; the journal has recorded it already."""

    record: SaleRecord
    icc: str = ""  # the answer's field 55 (hex: tag 91, scripts 71/72), for the card


@dataclass(frozen=True)
class HostBusy:
    """Not processed: 91/96, refused, or reset before the request was written.

    `sale_id` is the journal's id for the sale (created with the first attempt).
    """

    sale_id: int
    reason: str


@dataclass(frozen=True)
class HostUntrusted:
    """The host's TLS identity was refused (wrong CA, wrong name, old protocol).

    Nothing was written. Not a busy host: a configuration error or an attack, so
    the sale is not retried; the offline rules decide it as for an unreachable host.
    """

    sale_id: int
    reason: str


@dataclass(frozen=True)
class AttemptFailed:
    """An attempt failed inside the terminal before anything was journaled or sent."""

    sale_id: int | None
    reason: str  # for the display, e.g. "TERMINAL ERROR"


@dataclass(frozen=True)
class HostOutcomeUnknown:
    """The request was written but no usable answer came; a reversal is recorded."""

    record: SaleRecord
    reason: str


@dataclass(frozen=True)
class SaleClosed:
    """The runtime recorded the end of a sale that did not reach the host."""

    record: SaleRecord


@dataclass(frozen=True)
class PrintFinished:
    ok: bool
    message: str = ""
    job: str = "sale"  # the Print effect's job: "sale", "copy", "report", "refused"


@dataclass(frozen=True)
class MaintenanceNotice:
    """Two lines for the idle screen about planned maintenance ("" to clear)."""

    text: str


@dataclass(frozen=True)
class AdviceRefused:
    """The host refused a sale approved offline: it is unpaid, the merchant must know."""

    record: SaleRecord


@dataclass(frozen=True)
class LinkChanged:
    state: str  # "UP", "DEGRADED", "DOWN"
    untrusted: bool = False  # DOWN because the host's TLS identity was refused


@dataclass(frozen=True)
class QueueChanged:
    """The store-and-forward queue changed (or the runtime started)."""

    stats: QueueStats


@dataclass(frozen=True)
class OfflineDecided:
    """The runtime recorded an offline decision: OFFLINE_APPROVED, or FAILED with its reason."""

    record: SaleRecord



# -- standing conditions of the terminal (issue: peripherals that fail gracefully) --

@dataclass(frozen=True)
class ConditionChanged:
    """A standing condition of a device or of the power set or cleared.

    `source` names it ("printer", "card_reader", "display", "battery", "power",
    "modem"); `text` is at most 20 characters for the idle screen (e.g. "PAPER OUT",
    "PAPER LOW", "CARD READER FAULT", "BATTERY LOW", "MAINS POWER LOST"), or "" when
    the condition is over. While any condition with `blocks_sales` is set no new sale
    starts (a sale already in flight finishes); `blocks_sales` conditions show
    `text` when a person tries to start one.
    """

    source: str
    text: str = ""
    blocks_sales: bool = False


@dataclass(frozen=True)
class BatteryRead:
    """The battery gauge's latest reading (percent of charge; charging when rate > 0)."""

    percent: int
    charging: bool = False


@dataclass(frozen=True)
class PathChanged:
    """The path to the host now in use: "ETH" (primary) or "4G" (modem), and the
    modem's signal in bars 0..4 (0 when unknown or on the primary path)."""

    path: str
    bars: int = 0
    detail: str = ""  # one line (<= 20 characters) for the status screen, e.g. "4G ROAMING CSQ 17"



# -- the merchant's day: PIN, void, batch close (issue 10) -------------------------

@dataclass(frozen=True)
class PinChecked:
    """The answer to CheckPin. `message` (<= 20 characters) says why not: "WRONG PIN",
    "WRONG PIN - 1 LEFT", "LOCKED FOR 15 MIN", "NO PIN CONFIGURED"."""

    ok: bool
    function: str  # "refund", "void", "close", "x_report"
    message: str = ""


@dataclass(frozen=True)
class VoidCandidate:
    """The answer to FindForVoid: the transaction found (record), or why none can be voided
    (`problem`, <= 20 characters: "NOT FOUND", "USE REFUND" (a closed batch), "ALREADY
    VOIDED", "CANNOT BE VOIDED" (declined, not completed, refused))."""

    record: SaleRecord | None
    problem: str = ""


@dataclass(frozen=True)
class VoidRecorded:
    """The void is journaled (its 0400 reason 17 queued, or the unsent advice taken off the
    queue in the same transaction): `record` is the original, now voided=True."""

    record: SaleRecord
    sent_to_host: bool  # False: an offline sale whose advice was never sent


@dataclass(frozen=True)
class CloseProgress:
    """A step of the batch close, for the display (<= 20 characters): "SENDING QUEUE",
    "SENDING TOTALS", "UPLOADING 3 OF 10", "CHECKING TOTALS"."""

    text: str


@dataclass(frozen=True)
class CloseFinished:
    """The batch close ended. ok: the batch is closed (balanced: the host agreed; not
    balanced: OUT OF BALANCE - CALL HELP DESK); not ok: it stays open (`message` says why,
    e.g. "HOST OFFLINE", "REVERSALS PENDING"). The runtime prints the Z report itself."""

    ok: bool
    batch: int
    balanced: bool = True
    message: str = ""


@dataclass(frozen=True)
class CloseDue:
    """Start a close if idle, nobody asking: the configured daily close time has come,
    or (`resumed`) a close that a crash or a lost host cut short is to be finished."""

    resumed: bool = False

Event = (
    KeyPressed
    | PinAsked
    | PinKeyed
    | PinTaken
    | ChipInserted
    | ChipRemoved
    | ChipReaderFailed
    | ChipAsked
    | ChipRead
    | ChipFinished
    | ChipSettled
    | CardSwiped
    | CardReadFailed
    | DeviceFault
    | TimerFired
    | HostAnswered
    | HostBusy
    | HostOutcomeUnknown
    | HostUntrusted
    | AttemptFailed
    | AdviceRefused
    | MaintenanceNotice
    | SaleClosed
    | PrintFinished
    | LinkChanged
    | QueueChanged
    | OfflineDecided
    | ConditionChanged
    | BatteryRead
    | PathChanged
    | PinChecked
    | VoidCandidate
    | VoidRecorded
    | CloseProgress
    | CloseFinished
    | CloseDue
)
