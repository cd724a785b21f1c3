"""The outbox: what the terminal owes the host after the fact, and the one way it is sent.

Four kinds of entry, one protocol (`OutboxItem`):

- a reversal (0400, repeated as 0401): a sale whose outcome is unknown, undone;
- a void (0400 reason 17, no card data): a transaction the operator undid;
- an advice (0220, repeated as 0221): a sale approved offline;
- a batch upload (0320, repeated as 0321): one transaction of a batch out of balance.

An entry is named by an `OutboxKey` (its kind and its row), builds its own message
from the identity the journal gave it (`message`), names itself for the log (`what`,
`label`), says which answers end it (`is_final`) and tells the log what its final
answer meant (`log_final`). The journal keeps them (reversals and voids in
`reversals`, advices in `advices`, uploads in `batch_uploads`, all with the same
identity columns) and its queue code is written once for all of them
(journal_queues.py, keyed by `OutboxKey`).

`Outbox.transmit` is the one send path, for the forwarder's pipelined queues and the
batch close's upload alike, in the order of durable writes: the identities of every
entry about to be written in one transaction (a STAN and field 7 at its first send;
a transmission after one that was written is a repeat), the frames written back to
back, and their `written` marks in one transaction once they have left the terminal.
`Outbox.answer` waits for one answer and tells the link breaker either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

from firmware.core import iso
from firmware.core.iso import Fields, MessageError
from firmware.core.texts import is_busy
from firmware.errors import HostError, HostUnreachableError
from firmware.runtime import failpoints
from firmware.runtime.clock import SYSTEM

if TYPE_CHECKING:
    from firmware.runtime.hostlink import HostLink, Pending
    from firmware.runtime.journal_queues import QueueStore

log = logging.getLogger("posterm.forward")
batch_log = logging.getLogger("posterm.batch")

VOID_REASON = iso.VOID_REASON  # field 39 of a void: customer cancellation
REVERSAL_DONE = frozenset({"00", "25"})  # 0410 codes that end a reversal or a void


class Kind(Enum):
    REVERSAL = "reversal"
    VOID = "void"
    ADVICE = "advice"
    UPLOAD = "upload"

    @property
    def table(self) -> str:
        """The journal table that keeps entries of this kind."""
        return TABLES[self]


TABLES = {Kind.REVERSAL: "reversals", Kind.VOID: "reversals", Kind.ADVICE: "advices",
          Kind.UPLOAD: "batch_uploads"}
URGENT = (Kind.REVERSAL, Kind.VOID)  # sent before any advice, bounded among themselves


class OutboxKey(NamedTuple):
    """One outbox entry: its kind and its row in the kind's table."""

    kind: Kind
    id: int


class Identity(NamedTuple):
    """An entry's STAN and field 7, fixed at its first send, and whether a transmission
    of it was ever written (then the next one is a repeat)."""

    stan: str
    f7: str
    written: bool


@dataclass(frozen=True)
class Answer:
    """What became of one transmission of an outbox entry, to be journaled.

    `final`: the entry ends (`OutboxItem.is_final`); otherwise it stays pending and
    counts one more try. `code` is "" when no answer came."""

    key: OutboxKey
    code: str
    final: bool
    rrn: str = ""  # field 37 of an accepted advice's 0230


class OutboxItem(Protocol):
    """The protocol every outbox entry follows."""

    IDENTIFIED: ClassVar[str]  # failpoint once it has its identity ("" for none)
    WRITTEN: ClassVar[str]  # failpoint once it is written

    @property
    def key(self) -> OutboxKey: ...

    @property
    def tries(self) -> int: ...

    @property
    def what(self) -> str:
        """How the log names it."""

    def label(self, mti: str, stan: str) -> str:
        """How the log names one transmission of it."""

    def message(self, stan: int, f7: str) -> Fields:
        """Its first transmission with this identity (a repeat is made from it)."""

    def is_final(self, code: str) -> bool:
        """Whether this answer ("" for none) ends it."""

    def log_written(self, mti: str, stan: str) -> None: ...

    def log_final(self, code: str, *, journaled: bool, mti: str, stan: str) -> None:
        """Tell the log what the final answer meant (`journaled`: it changed the journal)."""


def _not_busy(code: str) -> bool:
    """An answer that ends an advice or an upload: any but none and 91/96."""
    return bool(code) and not is_busy(code)


@dataclass(frozen=True)
class PendingReversal:
    """A reversal: the 0200 whose outcome is unknown, undone (with its card data)."""

    id: int
    sale_id: int
    reason: str
    orig_stan: str
    orig_f7: str
    fields: dict[str, str]  # the original's fields, card data included (in memory only)
    stan: str | None
    f7: str | None
    tries: int
    written: bool = False  # a transmission was written: the next one is a 0401
    orig_mti: str = "0200"  # the original's first transmission: 0200, or 0220 (a void)
    orig_rrn: str = ""  # field 37 of the original's answer, when known (a void)
    icc: str = ""  # field 55 after a decline by the card: its AAC's 9F26 9F27 9F36 (hex)

    IDENTIFIED: ClassVar[str] = "after_reversal_identity"
    WRITTEN: ClassVar[str] = "after_reversal_sent"
    KIND: ClassVar[Kind] = Kind.REVERSAL

    @property
    def key(self) -> OutboxKey:
        return OutboxKey(self.KIND, self.id)

    @property
    def is_void(self) -> bool:
        """A void the operator asked for (reason 17), not a reversal of an unknown outcome."""
        return self.KIND is Kind.VOID

    @property
    def what(self) -> str:
        return f"{self.KIND.value} of sale {self.sale_id}"

    def label(self, mti: str, stan: str) -> str:
        return self.what

    def message(self, stan: int, f7: str) -> Fields:
        return iso.reversal(self.fields, orig_mti="0200", orig_stan=self.orig_stan,
                            orig_f7=self.orig_f7, stan=stan, f7=f7, reason=self.reason,
                            icc=self.icc)

    def is_final(self, code: str) -> bool:
        return code in REVERSAL_DONE

    def log_written(self, mti: str, stan: str) -> None:
        log.info("%s: %s stan %s sent (reason %s)", self.what, mti, stan, self.reason)

    def log_final(self, code: str, *, journaled: bool, mti: str, stan: str) -> None:
        if journaled:
            log.info("%s done (0410 code %s)", self.what, code)


@dataclass(frozen=True)
class PendingVoid(PendingReversal):
    """A void: a reversals row with reason 17, built as the void message (no card data).
    25 ends it too: the host did not know the original, which stays voided."""

    KIND: ClassVar[Kind] = Kind.VOID

    def message(self, stan: int, f7: str) -> Fields:
        return iso.void(self.fields, orig_mti=self.orig_mti, orig_stan=self.orig_stan,
                        orig_f7=self.orig_f7, rrn=self.orig_rrn, stan=stan, f7=f7)

    def log_final(self, code: str, *, journaled: bool, mti: str, stan: str) -> None:
        if code == "25":
            log.warning("%s: the host does not know the original %s stan %s (0410 code 25); "
                        "it stays voided and is neither charged nor credited; the batch "
                        "close will show whether the totals agree", self.what, self.orig_mti,
                        self.orig_stan)
        else:
            super().log_final(code, journaled=journaled, mti=mti, stan=stan)


@dataclass(frozen=True)
class PendingAdvice:
    """An advice: a sale approved offline, told to the host (with its card data)."""

    id: int
    sale_id: int
    approval: str
    fields: dict[str, str]  # the sale's fields, card data included (in memory only)
    stan: str | None
    f7: str | None
    tries: int
    written: bool = False  # a transmission was written: the next one is a 0221

    IDENTIFIED: ClassVar[str] = "after_advice_identity"
    WRITTEN: ClassVar[str] = "after_advice_sent"

    @property
    def key(self) -> OutboxKey:
        return OutboxKey(Kind.ADVICE, self.id)

    @property
    def what(self) -> str:
        return f"advice of sale {self.sale_id}"

    def label(self, mti: str, stan: str) -> str:
        return f"{self.what} ({mti} stan {stan})"

    def message(self, stan: int, f7: str) -> Fields:
        return iso.advice(self.fields, approval=self.approval, stan=stan, f7=f7)

    def is_final(self, code: str) -> bool:
        return _not_busy(code)

    def log_written(self, mti: str, stan: str) -> None:
        pass

    def log_final(self, code: str, *, journaled: bool, mti: str, stan: str) -> None:
        if not journaled:
            log.info("%s answered %s after the sale was voided; its void settles it with "
                     "the host", self.label(mti, stan), code)
        elif code == "00":
            log.info("advice of sale %d accepted by the host (%s stan %s)", self.sale_id,
                     mti, stan)
        else:
            log.error("advice of sale %d REFUSED by the host with code %s: the sale is "
                      "unpaid; it is listed in the offline report", self.sale_id, code)


@dataclass(frozen=True)
class UploadItem:
    """One 0320 of a batch upload: a transaction the totals count (no card data)."""

    id: int
    batch: int
    sale_id: int
    orig_mti: str  # MTI of the original's first transmission: 0200 or 0220
    orig_stan: str
    orig_f7: str
    rrn: str
    approval: str
    stan: str  # "" before its first send
    f7: str
    written: bool
    state: str  # "pending" or "answered"
    code: str
    fields: dict[str, str] = field(default_factory=dict, compare=False)  # the original's
    tries: int = 0  # the close counts its tries itself (UPLOAD_TRIES)
    icc: str = ""  # a chip sale's final cryptogram for field 55 (journal_base.upload_icc)

    IDENTIFIED: ClassVar[str] = ""
    WRITTEN: ClassVar[str] = "upload_item_sent"

    @property
    def key(self) -> OutboxKey:
        return OutboxKey(Kind.UPLOAD, self.id)

    @property
    def what(self) -> str:
        return f"upload of sale {self.sale_id}"

    def label(self, mti: str, stan: str) -> str:
        return f"{mti} stan {stan} (sale {self.sale_id})"

    def message(self, stan: int, f7: str) -> Fields:
        return iso.batch_upload(self.fields, orig_mti=self.orig_mti, orig_stan=self.orig_stan,
                                orig_f7=self.orig_f7, rrn=self.rrn, approval=self.approval,
                                code="00", stan=stan, f7=f7, icc=self.icc)

    def is_final(self, code: str) -> bool:
        return _not_busy(code)

    def log_written(self, mti: str, stan: str) -> None:
        pass

    def log_final(self, code: str, *, journaled: bool, mti: str, stan: str) -> None:
        if code != "00":
            batch_log.warning("batch upload: the host answered %s to the upload of sale %d; "
                              "the upload goes on", code, self.sale_id)


@dataclass(frozen=True)
class Sent:
    """One transmission written, its answer awaited."""

    item: OutboxItem
    doc: Fields
    pending: Pending

    @property
    def mti(self) -> str:
        return self.doc["t"]

    @property
    def stan(self) -> str:
        return self.doc["11"]

    @property
    def what(self) -> str:
        return self.item.label(self.mti, self.stan)


Unsendable = Callable[[OutboxItem, Exception], None]


class Outbox:
    """The one send path of outbox entries (see the module's docstring)."""

    def __init__(self, journal: QueueStore, link: HostLink, response_timeout: float,
                 on_result: Callable[[bool, str], None],
                 utc: Callable[[], datetime] = SYSTEM.utc) -> None:
        self.journal, self.link, self.utc = journal, link, utc
        self.response_timeout, self.on_result = response_timeout, on_result

    async def transmit(self, items: Sequence[OutboxItem], unsendable: Unsendable,
                       hand_over: Callable[[Sent], None]) -> list[OutboxItem]:
        """Write these entries back to back, each handed over (`hand_over`) as soon as its
        `written` mark is journaled; the entries left unwritten because the connection
        failed part way. An entry whose message cannot be built or encoded is nothing
        written: `unsendable(item, error)` takes it out of the queue (or raises). Raises
        HostUnreachableError when nothing could be written at all."""
        if not items:
            return []
        identities = self.journal.identities([i.key for i in items],
                                             iso.f7(self.utc()))
        for item in items:
            if item.IDENTIFIED:
                failpoints.hit(item.IDENTIFIED)
        built: list[tuple[OutboxItem, Fields, bool]] = []
        for item in items:
            if item.key not in identities:
                continue  # no longer in the journal (it ended meanwhile)
            stan, f7, written = identities[item.key]
            try:
                doc = item.message(int(stan), f7)
                if written:  # only a transmission after one that was written is a repeat
                    doc = iso.repeat(doc)
            except (MessageError, ValueError, KeyError) as exc:
                unsendable(item, exc)
                continue
            built.append((item, doc, written))
        out: list[tuple[OutboxItem, Fields, bool, Pending]] = []
        unwritten: list[OutboxItem] = []
        for n, (item, doc, written) in enumerate(built):
            try:
                if not out:
                    pending = await self.link.send(doc)  # connects, waits for a check
                else:
                    pending = self.link.write_batch(doc)
            except MessageError as exc:
                unsendable(item, exc)
                continue
            except HostUnreachableError:
                if not out:
                    raise
                unwritten = [b[0] for b in built[n:]]
                break
            out.append((item, doc, written, pending))
        if len(out) > 1:
            await self.link.flushed()
        self.journal.mark_written([item.key for item, _, written, _ in out if not written])
        for item, doc, _, pending in out:
            item.log_written(doc["t"], doc["11"])
            hand_over(Sent(item, doc, pending))
        for item, *_ in out:
            failpoints.hit(item.WRITTEN)
        return unwritten

    async def answer(self, pending: Pending, what: str) -> Fields | None:
        """The answer, or None when none came; the link breaker hears either way."""
        try:
            answer = await pending.wait(self.response_timeout)
        except HostError as exc:
            log.warning("%s: %s; will repeat", what, exc)
            self.on_result(False, str(exc))
            return None
        code = answer.get("39", "")
        self.on_result(not is_busy(code), f"{what} answered {code}")
        return answer
