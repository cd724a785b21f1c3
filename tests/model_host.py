"""A model acquirer host with its own ledger, and a host link that talks to it in-process.

`ModelHost` is the oracle of the stateful model test (tests/test_model_core.py): an
independent, deliberately small statement of what an acquirer does with each message of
host-interface.md, written from that document and not from the firmware:

- the idempotency key is (41, 11, 7): a request already answered gets its first answer
  again (the 0401/0221/0321 repeats); busy answers (91/96) are never stored;
- a 0200 answered 00 charges a purchase or credits a refund; any other final code moves
  nothing; a 0200 whose key a reversal already cancelled is answered 12;
- a 0220/0221 advice of a purchase is accepted (charged) unless the host refuses it; of
  a refund, 12;
- a 0400/0401 (a reversal, or a void with reason 17) finds its original by field 90 and
  undoes whatever it moved (00), or answers 25 and remembers the key as cancelled;
- a 0500 compares the terminal's totals (74/76/86/88) with the ledger's for the batch
  (field 60): 00 when they agree, 95 when not; 0320 uploads are answered 00.

`ModelLink` has the methods of `firmware.runtime.hostlink.HostLink` that the authorizer,
the forwarder and the batch close use. Requests of the queues (0400, 0220, 0500, 0320 and
their repeats) are answered at once; a sale's 0200 stays in flight until the test decides
what the host does with it (`answer`, `busy`, `fail`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.errors import HostError, HostUnreachableError

Fields = dict[str, str]
Key = tuple[str, str, str]
NOT_PROCESSED = frozenset({"91", "96"})
PURCHASE, REFUND = "000000", "200000"
RESPONSE = {"0200": "0210", "0220": "0230", "0221": "0230", "0400": "0410", "0401": "0410",
            "0500": "0510", "0320": "0330", "0321": "0330", "0800": "0810"}


@dataclass
class Entry:
    """One original (0200 or 0220) the host processed, and what it does to the customer now."""

    key: Key
    mti: str
    kind: str  # "purchase" or "refund"
    amount: int
    batch: int
    code: str
    charged: bool = False
    credited: bool = False
    reversed: bool = False
    voided: bool = False

    def as_ledger(self) -> dict[str, Any]:
        """The entry in the shape of hwsim's ledger (tests/invariants.py reads it)."""
        return {"tid": self.key[0], "stan": self.key[1], "f7": self.key[2], "mti": self.mti,
                "kind": self.kind, "amount": self.amount, "batch": f"{self.batch:06d}",
                "code": self.code, "charged": self.charged, "credited": self.credited,
                "reversed": self.reversed, "voided": self.voided,
                "processing_code": REFUND if self.kind == "refund" else PURCHASE}


def key_of(doc: Fields) -> Key:
    return (doc.get("41", "").strip(), doc.get("11", ""), doc.get("7", ""))


class ModelHost:
    def __init__(self) -> None:
        self.up = True
        self.refuse_advices = False  # the next advices are refused (05), not charged
        self.entries: dict[Key, Entry] = {}
        self.answers: dict[Key, Fields] = {}
        self.cancelled: set[Key] = set()  # originals reversed before they arrived
        self.closes: dict[int, dict[str, Any]] = {}  # batch -> the close the host agreed
        self.messages: list[str] = []  # MTIs in the order received (for the report)
        self._rrn = 0

    # -- the books ----------------------------------------------------------------
    def totals(self, batch: int) -> dict[str, int]:
        """What the ledger counts for a batch now, in the fields of a 0500."""
        mine = [e for e in self.entries.values() if e.batch == batch]
        bought = [e for e in mine if e.charged]
        given = [e for e in mine if e.credited]
        return {"purchases": len(bought), "purchase_amount": sum(e.amount for e in bought),
                "refunds": len(given), "refund_amount": sum(e.amount for e in given)}

    def ledger(self) -> list[dict[str, Any]]:
        return [e.as_ledger() for e in self.entries.values()]

    def batches(self) -> list[dict[str, Any]]:
        """The batches in the shape `tests.invariants.check_batches` reads."""
        return [{"tid": tid, "batch": batch, "closed": True, "host_now": self.totals(batch)}
                for batch, tid in ((b, c["tid"]) for b, c in self.closes.items())]

    # -- processing ---------------------------------------------------------------
    def process(self, doc: Fields, code: str = "00") -> Fields:
        """Answer one request; `code` is the host's decision for a fresh 0200."""
        mti = doc["t"]
        self.messages.append(mti)
        key = key_of(doc)
        stored = self.answers.get(key)
        if stored is not None:
            return {**stored, "t": RESPONSE[mti]}
        if mti == "0200":
            answer = self._sale(doc, key, code)
        elif mti in ("0220", "0221"):
            answer = self._advice(doc, key)
        elif mti in ("0400", "0401"):
            answer = self._reversal(doc)
        elif mti == "0500":
            answer = self._reconcile(doc)
        elif mti in ("0320", "0321"):
            answer = self._respond(doc, "00")
        else:
            answer = self._respond(doc, "12")
        if answer["39"] not in NOT_PROCESSED:
            self.answers[key] = answer
        return answer

    def _respond(self, doc: Fields, code: str, **extra: str) -> Fields:
        out = {k: doc[k] for k in ("3", "4", "7", "11", "41", "49") if k in doc}
        return {**out, **extra, "t": RESPONSE[doc["t"]], "39": code}

    def _next_rrn(self) -> str:
        self._rrn += 1
        return f"{self._rrn:012d}"

    def _record(self, doc: Fields, key: Key, code: str, *, moves: bool) -> None:
        kind = "refund" if doc.get("3") == REFUND else "purchase"
        entry = Entry(key, doc["t"][:3] + "0", kind, int(doc["4"]), int(doc.get("60", "0")),
                      code)
        if moves:
            entry.charged, entry.credited = kind == "purchase", kind == "refund"
        self.entries[key] = entry

    def _sale(self, doc: Fields, key: Key, code: str) -> Fields:
        if key in self.cancelled:
            code = "12"
        if code in NOT_PROCESSED:
            return self._respond(doc, code, **{"37": self._next_rrn()})
        self._record(doc, key, code, moves=code == "00")
        extra = {"37": self._next_rrn()}
        if code == "00":
            extra["38"] = f"A{self._rrn:05d}"
        return self._respond(doc, code, **extra)

    def _advice(self, doc: Fields, key: Key) -> Fields:
        code = "12" if doc.get("3") == REFUND or key in self.cancelled else \
            "05" if self.refuse_advices else "00"
        self._record(doc, key, code, moves=code == "00")
        return self._respond(doc, code, **{"37": self._next_rrn()})

    def _reversal(self, doc: Fields) -> Fields:
        f90 = doc.get("90", "")
        original = (doc.get("41", "").strip(), f90[4:10], f90[10:20])
        entry = self.entries.get(original)
        if entry is None:
            self.cancelled.add(original)
            return self._respond(doc, "25")
        if entry.charged or entry.credited:
            entry.charged = entry.credited = False
            if doc.get("39") == "17":
                entry.voided = True
            else:
                entry.reversed = True
        return self._respond(doc, "00")

    def _reconcile(self, doc: Fields) -> Fields:
        batch = int(doc["60"])
        sent = {"purchases": int(doc["76"]), "purchase_amount": int(doc["88"]),
                "refunds": int(doc["74"]), "refund_amount": int(doc["86"])}
        agree = sent == self.totals(batch)
        if agree or doc["3"] == "960000":  # after the upload the batch closes either way
            self.closes[batch] = {"tid": doc["41"].strip(), "balanced": agree, "sent": sent}
        return self._respond(doc, "00" if agree else "95")


class ModelPending:
    def __init__(self, future: asyncio.Future[Fields]) -> None:
        self.future = future

    async def wait(self, timeout: float) -> Fields:
        return await self.future


@dataclass
class InFlight:
    doc: Fields
    future: asyncio.Future[Fields]


class ModelLink:
    """The host link's interface over `ModelHost`, in this process and event loop."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host
        self.inflight: list[InFlight] = []  # sales' 0200s awaiting the test's decision

    @property
    def connected(self) -> bool:
        return self.host.up

    @property
    def outstanding(self) -> int:
        return len(self.inflight)

    async def ensure_connected(self) -> None:
        if not self.host.up:
            raise HostUnreachableError("model host down")

    async def send(self, doc: Fields, payload: bytes | None = None) -> ModelPending:
        return self.write_batch(doc)

    def write_batch(self, doc: Fields) -> ModelPending:
        if not self.host.up:
            raise HostUnreachableError("model host down")
        future: asyncio.Future[Fields] = asyncio.get_running_loop().create_future()
        if doc["t"] == "0200":
            self.inflight.append(InFlight(dict(doc), future))
        else:
            future.set_result(self.host.process(doc))
        return ModelPending(future)

    async def flushed(self) -> None:
        return None

    # -- what the host does with the sale's request in flight ----------------------
    def take(self) -> InFlight:
        return self.inflight.pop(0)

    def answer(self, code: str, *, tamper: Callable[[Fields], None] | None = None) -> None:
        """The host decides `code` (00, a decline, or busy 91/96) and answers."""
        sent = self.take()
        answer = self.host.process(sent.doc, code)
        if tamper is not None:
            answer = dict(answer)
            tamper(answer)
        sent.future.set_result(answer)

    def fail(self, exc: HostError, *, processed: bool) -> None:
        """No usable answer reaches the terminal (`exc`); `processed`: the host had
        approved the request all the same (its answer is late, lost or garbled)."""
        sent = self.take()
        if processed:
            self.host.process(sent.doc, "00")
        sent.future.set_exception(exc)

    def crash(self, *, processed: bool) -> None:
        """The terminal stops with requests in flight; the host may have approved them."""
        for sent in self.inflight:
            if processed:
                self.host.process(sent.doc, "00")
        self.inflight.clear()
