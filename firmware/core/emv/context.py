"""What one contact transaction knows while the kernel runs it, and the one way an
APDU goes to the card.

`Ctx` holds the transaction, the terminal, the selected application, the card's data
objects (FCI, GPO answer, records), the TVR and TSI, and the counts of `Outcome`.
`send` yields a `Send` and returns the card's `Response`: a reader error ends the run
(`CardGone`); status words are the caller's to judge. `Stop` ends the run with a
decision at any depth of the flow. Every loop that a card's answer could prolong is
bounded by a constant here."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

from firmware.core.emv import oda, tags, tlv
from firmware.core.emv.params import AidParams, Terminal
from firmware.core.emv.tvr import Bit, set_bit
from firmware.core.emv.steps import (
    ChipData, Choose, HostReply, Online, Outcome, PinResult, PinStep, Response, Send, Txn,
)

Step = Send | Choose | Online | PinStep
Reply = Response | int | None | HostReply | PinResult
Flow = Generator[Step, Reply, Outcome]

MAX_RECORDS = 64  # READ RECORD commands for application data (Book 3 10.2), all AFL entries
MAX_RECORD_BYTES = 8192  # total record bytes kept
MAX_DIR_RECORDS = 32  # records of the PSE directory (Book 1 12.3.2)
MAX_OCCURRENCES = 16  # SELECT next occurrence for one partial AID (Book 1 12.3.3)
MAX_CANDIDATES = 32
MAX_PIN_ENTRIES = 16  # PIN entries for one CVM: a card's 63Cx counts down from 15 at most

TERMINAL_TAGS = frozenset({0x95, 0x9B, 0x9F02, 0x9F03, 0x9F1A, 0x5F2A, 0x9A, 0x9C, 0x9F37,
                           0x9F35, 0x9F33, 0x9F40, 0x9F1E, 0x9F09, 0x9F21, 0x9F41, 0x9F1B,
                           0x8A, 0x9F34, 0x5F36, 0x98, 0x91, 0x9F4C, 0x9F45})


class Stop(Exception):  # noqa: N818 - a way out, not an error
    """End the run with this decision (terminated, declined, failed, cancelled...)."""

    def __init__(self, decision: str, message: str, detail: str = "") -> None:
        super().__init__(detail or message)
        self.decision = decision
        self.message = message
        self.detail = detail


class CardGone(Exception):  # noqa: N818
    """The reader reported an error for an APDU: removed, mute, reader gone."""

    def __init__(self, error: str, what: str) -> None:
        super().__init__(f"{what}: {error}")
        self.error = error
        self.what = what


@dataclass
class Candidate:
    """An application the card and the terminal share (Book 1 12.3)."""

    aid: bytes  # the card's ADF name (DF name)
    label: str
    priority: int  # 87 bits 4-1, 0 = none
    confirm: bool  # 87 bit 8: cardholder confirmation required
    params: AidParams


@dataclass
class Ctx:
    txn: Txn
    terminal: Terminal
    apdus: int = 0
    moved: int = 0
    selected: bool = False  # an application was selected (Book 1 12.4): no fallback now
    app: Candidate | None = None
    fci: dict[int, bytes] = field(default_factory=dict)
    card: dict[int, bytes] = field(default_factory=dict)  # GPO answer and records
    tvr: bytearray = field(default_factory=lambda: bytearray(5))
    tsi: bytearray = field(default_factory=lambda: bytearray(2))
    extra: dict[int, bytes] = field(default_factory=dict)  # terminal-set: 8A, 91, 98, 9F4C...
    cvm_results: bytes = bytes.fromhex("3F0000")
    cvm_text: str = ""
    pdol_data: bytes = b""
    cdol1_data: bytes = b""  # for CDA's hash at the second GENERATE AC (Book 2 6.6.2)
    oda_records: list[tuple[int, bytes]] = field(default_factory=list)
    oda_method: str = ""  # "SDA", "DDA", "CDA", "" (none)
    icc_key: oda.PublicKey | None = None  # when CDA is to be verified
    # the keys ODA recovered (whatever the method, even if a later check failed), kept
    # for offline enciphered PIN (Book 2 7.1); recovered then if ODA did not
    issuer_public: oda.PublicKey | None = None
    icc_public: oda.PublicKey | None = None
    used: dict[int, bytes] = field(default_factory=dict)  # values of the last cryptogram
    chip: ChipData | None = None  # the last cryptogram's data
    online: bool = False  # the host was asked (Online yielded)
    script_results: bytearray = field(default_factory=bytearray)

    @property
    def params(self) -> AidParams:
        assert self.app is not None
        return self.app.params

    def get(self, tag: int) -> bytes | None:
        """A data object's value: the terminal's own first, then the card's."""
        if tag in TERMINAL_TAGS:
            return self.terminal_value(tag)
        if tag in self.card:
            return self.card[tag]
        return self.fci.get(tag)

    def terminal_value(self, tag: int) -> bytes | None:
        t, txn = self.terminal, self.txn
        fixed = {
            0x95: bytes(self.tvr), 0x9B: bytes(self.tsi),
            0x9F02: bcd(txn.amount, 6), 0x9F03: bcd(txn.amount_other, 6),
            0x9F1A: bytes.fromhex(t.country), 0x5F2A: bytes.fromhex(t.currency),
            0x9A: bytes.fromhex(txn.local.strftime("%y%m%d")),
            0x9F21: bytes.fromhex(txn.local.strftime("%H%M%S")),
            0x9C: b"\x20" if txn.kind == "refund" else b"\x00",
            0x9F37: txn.unpredictable, 0x9F35: bytes([t.type & 0xFF]),
            0x9F33: t.capabilities, 0x9F40: t.additional,
            0x9F1E: t.ifd_serial.encode("ascii", "replace")[:8].ljust(8, b" "),
            0x9F41: bcd(txn.sequence, 4), 0x9F34: self.cvm_results, 0x5F36: b"\x02",
        }
        if tag in fixed:
            return fixed[tag]
        if self.app is not None and tag == 0x9F09:
            return self.params.version
        if self.app is not None and tag == 0x9F1B:
            return max(0, min(self.params.floor_limit, 0xFFFFFFFF)).to_bytes(4, "big")
        return self.extra.get(tag)

    def dol(self, dol: bytes) -> bytes:
        """The data a DOL asks for (Book 3 5.4): constructed and unknown objects are
        zeros; raises TlvError for a DOL that does not parse."""
        values: dict[int, bytes] = {}
        for tag, _ in tlv.parse_dol(dol):
            value = None if tlv.is_constructed(tag) else self.get(tag)
            if value is not None:
                values[tag] = value
        return tlv.build_dol(dol, values, tags.FORMATS)

    def set(self, bit: Bit) -> None:
        set_bit(self.tvr, bit)

    def tsi_set(self, bit: Bit) -> None:
        set_bit(self.tsi, bit)


def bcd(n: int, size: int) -> bytes:
    digits = f"{max(0, n):0{size * 2}d}"[-size * 2:]
    return bytes.fromhex(digits)


def apdu(cla: int, ins: int, p1: int, p2: int, data: bytes | None = None,
         le: bool = True) -> bytes:
    """A command APDU as for T=1 (Book 1 9.4): case 2 `CLA INS P1 P2 00`; case 3 `... Lc
    data`; case 4 `... Lc data 00`. Raises Stop when the data cannot fit."""
    head = bytes([cla, ins, p1, p2])
    if data is None:
        return head + (b"\x00" if le else b"")
    if not 1 <= len(data) <= 255:
        raise Stop("terminated", "CARD ERROR", f"command data of {len(data)} bytes")
    return head + bytes([len(data)]) + data + (b"\x00" if le else b"")


def send(ctx: Ctx, command: bytes, what: str) -> Generator[Step, Reply, Response]:
    """One APDU to the card; the reply counted; a reader error ends the run."""
    reply = yield Send(command, what)
    if not isinstance(reply, Response):
        raise CardGone("NO ANSWER", what)
    ctx.apdus += 1
    ctx.moved += len(command) + len(reply.data) + 2
    if reply.error:
        raise CardGone(reply.error, what)
    return reply


def hexs(b: bytes | None) -> str:
    return (b or b"").hex().upper()
