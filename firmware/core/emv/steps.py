"""What the kernel and the runtime say to each other. `kernel.run` is a generator:
it yields a step (send this APDU, let the cardholder choose, go online) and receives
the reply, and returns the `Outcome` when the card is done. No I/O here: the runtime
moves the APDUs through the reader and the request through the host link."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from firmware.core.card import CardData


@dataclass(frozen=True)
class Txn:
    """The transaction the kernel runs (Book 3 Annex A: the terminal's data)."""

    kind: str  # "purchase" (9C 00) or "refund" (9C 20)
    amount: int  # minor units (9F02)
    local: datetime  # 9A, 9F21
    unpredictable: bytes = field(repr=False, default=bytes(4))  # 9F37, from the runtime
    random_percent: int = 99  # 1..99 for random transaction selection, from the runtime
    sequence: int = 1  # 9F41, transaction sequence counter
    offline_ok: bool = True  # the terminal's own offline rules allow an offline approval
    amount_other: int = 0  # 9F03


# -- steps the kernel yields ---------------------------------------------------

@dataclass(frozen=True)
class Send:
    """Send one command APDU; the reply is a `Response`."""

    apdu: bytes = field(repr=False)
    what: str  # "SELECT PSE", "GET PROCESSING OPTIONS", ... for logs


@dataclass(frozen=True)
class Response:
    data: bytes = field(repr=False)
    sw: int  # 0x9000...
    error: str = ""  # the card or the reader failed: "CARD REMOVED", "CARD MUTE", ...


@dataclass(frozen=True)
class Choose:
    """The cardholder picks an application (Book 1 12.4); the reply is the index into
    `labels`, or None when cancelled."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class PinStep:
    """The card's CVM asks for the cardholder's PIN (Book 3 10.5, Book 4 6.3.4); the
    reply is a `PinResult`. The PIN never reaches the kernel: the PIN pad makes the
    online PIN block itself, or sends the offline PIN to the card itself (VERIFY, after
    GET CHALLENGE when enciphered), and says only how it went."""

    kind: str  # "online", "offline_plain", "offline_enciphered"
    tries_left: int | None = None  # the card's PIN try counter (GET DATA 9F17), if known
    bypass: bool = False  # the CVM rule lets the cardholder bypass PIN entry
    # offline enciphered: the public key to encipher under (Book 2 7.1: the ICC PIN
    # encipherment key, else the ICC key), as (modulus, exponent)
    key: tuple[bytes, int] | None = field(default=None, repr=False)
    pan: str = field(default="", repr=False)  # online: the PAN the PIN block is bound to


@dataclass(frozen=True)
class PinResult:
    """How one PIN entry went (the PIN itself is never in it).

    status: "verified" (the card said 9000 to VERIFY), "wrong" (63Cx: `tries_left` left),
    "blocked" (6983/6984, or 63C0), "entered" (an online PIN block is made and held by
    the PIN pad for the request), "bypassed", "cancelled", "timeout", "no_pinpad" (none
    configured, or it failed: Book 3 "PIN pad not present or not working"), "failed"
    (the card answered VERIFY or GET CHALLENGE otherwise: `sw`).
    """

    status: str
    tries_left: int | None = None
    sw: int = 0


@dataclass(frozen=True)
class ChipData:
    """What a chip sale carries to the host and onto the receipt (no tag 57, 5A or 5F20
    in `field55`; the card data travels in `card`, in memory only)."""

    card: CardData = field(repr=False)
    psn: str  # "01", "" when the card has no 5F34
    aid: str  # hex
    label: str  # application label or preferred name, for the receipt
    field55: bytes = field(repr=False)
    tvr: str = "0000000000"  # hex
    tsi: str = "0000"  # hex
    cvm: str = ""  # "PIN VERIFIED", "SIGNATURE", "NO CVM", ... (receipt)
    cvm_results: str = "3F0000"  # 9F34 hex
    cryptogram: str = ""  # 9F26 hex
    cid: int = 0  # 9F27
    atc: str = ""  # 9F36 hex

    @property
    def kind(self) -> str:
        """"TC", "ARQC" or "AAC", from 9F27 bits 8-7 (Book 3 Table 14)."""
        return {0x40: "TC", 0x80: "ARQC"}.get(self.cid & 0xC0, "AAC")


@dataclass(frozen=True)
class Online:
    """The card asked for an online authorization (ARQC; or an AAC for a refund): the
    reply is a `HostReply`."""

    chip: ChipData


@dataclass(frozen=True)
class HostReply:
    """How the online step ended, as the kernel's completion needs it (Book 3 10.9)."""

    kind: str  # "answered", "unknown" (sent, no answer), "unreachable" (never sent)
    code: str = ""  # field 39 when answered
    field55: bytes = field(repr=False, default=b"")  # the 0210's field 55 (91, 71, 72)
    offline_ok: bool = False  # unreachable: the terminal's offline rules allow approval


# -- how it ended ---------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """The kernel's last word.

    decision: "approved" (the card's TC), "declined" (an AAC), "failed" (the card
    could not finish after it was read: removed, mute, wrong answers), "fallback"
    (the chip failed before an application was selected: a swipe may be taken,
    host-interface 8.1), "terminated" (blocked, no common application, faulty data:
    no fallback), "cancelled" (the cardholder cancelled the choice).
    stage: "first" when it ended at the first GENERATE AC (Y1 or an offline decline),
    "second" after the online step, "" before any cryptogram.
    """

    decision: str
    stage: str = ""
    message: str = ""  # what the display says, plain words ("CARD BLOCKED", ...)
    detail: str = ""  # for the log: the step and the status word or the error
    chip: ChipData | None = None  # the final cryptogram's data, when there is one
    script_results: bytes = b""  # 9F5B
    apdus: int = 0
    bytes_moved: int = 0
