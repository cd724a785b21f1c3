"""The simulated acquirer's books: the ledger, the idempotency store, the rules.

`Books.answer(request)` turns one decoded request into its response, following
the host interface, version 1, sections 3 to 5 and 7:

- the idempotency key is (41, 11, 7): a key already processed is answered with
  the first response again (under the MTI of the new request's class); answers
  `91` and `96` mean "not processed" and are never stored;
- a 0200 is approved unless the last two digits of field 4 are 05, 51, 54, 91 or
  96 (then that code); a 0220/0221 advice is accepted;
- a 0400/0401 reversal finds its original by (41, STAN and field 7 from field 90):
  charged -> no longer charged, `00`; found -> `00`; not found -> `25`, and that
  original, should it arrive later, is answered `12` and never charged;
- a 0500 compares its totals (74, 76, 86, 88) with the charged entries of its
  terminal and batch (field 60): `00` in balance, `95` out of balance.

A forced code (a `decline` fault or a default answer) replaces the decision for a
fresh request; the request is then recorded as not charged. No I/O here; the
PAN is kept masked and track data is never kept.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from typing import Any, Final

from .hostproto import Message, key_of, mask_pan, mti_class, response, response_mti

log = logging.getLogger("hwsim.host")

Key = tuple[str, str, str]

PURCHASE: Final = "000000"
REFUND: Final = "200000"
NOT_PROCESSED: Final = frozenset({"91", "96"})
AMOUNT_CONVENTIONS: Final = {"05": "05", "51": "51", "54": "54", "91": "91", "96": "96"}

REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "0200": ("2", "3", "4", "7", "11", "41", "49"),
    "0220": ("2", "3", "4", "7", "11", "41", "49"),
    "0400": ("7", "11", "41", "90"),
    "0500": ("7", "11", "41", "60", "74", "76", "86", "88"),
    "0800": (),
}


class FormatProblem(Exception):
    """A decodable request whose content breaks the interface: answered `30`."""


@dataclass
class LedgerEntry:
    """One original financial message (0200, 0220/0221) the host processed."""

    tid: str
    stan: str
    f7: str
    mti: str
    amount: int
    currency: str
    pan: str  # masked: first 6, last 4
    processing_code: str
    approval: str | None
    rrn: str
    code: str
    charged: bool
    reversed: bool
    offline_approval: str | None
    batch: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Books:
    """Ledger, stored answers and the decision rules of the simulated acquirer."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._entries: dict[Key, LedgerEntry] = {}
        self._answers: dict[Key, Message] = {}
        self._reversed_unknown: set[Key] = set()
        self._defaults: dict[str, str] = {}
        self._rrn_prefix = f"{rng.randrange(1_000_000):06d}"
        self._rrn_seq = 0

    # -- control -----------------------------------------------------------
    def set_default_answer(self, mti: str, code: str | None) -> None:
        """Force `code` for every fresh request of `mti`'s class; None restores."""
        cls = mti_class(mti)
        if cls not in REQUIRED:
            raise ValueError(f"no request class for MTI {mti!r}")
        if code is None:
            self._defaults.pop(cls, None)
        else:
            if len(code) != 2:
                raise ValueError(f"response code must be 2 characters, got {code!r}")
            self._defaults[cls] = code

    def entries(self) -> list[dict[str, Any]]:
        return [entry.as_dict() for entry in self._entries.values()]

    # -- processing --------------------------------------------------------
    def not_processed(self, request: Message, code: str) -> Message:
        """A busy answer (91/96): nothing recorded, nothing stored."""
        extra = {"37": self._rrn()} if mti_class(request["t"]) in ("0200", "0220") else None
        return response(request, code, extra)

    def answer(self, request: Message, forced: str | None = None) -> Message:
        """Process (or replay) one request and return its response."""
        mti = request["t"]
        cls = mti_class(mti)
        if cls == "0800":
            return response(request, forced or self._defaults.get(cls, "00"))
        key = key_of(request)
        stored = self._answers.get(key)
        if stored is not None:
            log.info("repeat of %s stan=%s: first answer %s sent again", mti, key[1], stored["39"])
            return {**stored, "t": response_mti(mti)}
        forced = forced or self._defaults.get(cls)
        try:
            missing = [f for f in REQUIRED[cls] if f not in request]
            if missing:
                raise FormatProblem(f"missing field(s) {', '.join(missing)}")
            if cls == "0200":
                answer, final = self._sale(request, key, forced)
            elif cls == "0220":
                answer, final = self._advice(request, key, forced)
            elif cls == "0400":
                answer, final = self._reversal(request, forced)
            else:
                answer, final = self._reconcile(request, forced)
        except FormatProblem as exc:
            log.warning("format error in %s stan=%s: %s", mti, key[1], exc)
            extra = {"37": self._rrn()} if cls in ("0200", "0220") else None
            return response(request, "30", extra)
        if final:
            self._answers[key] = answer
        return answer

    def _sale(self, req: Message, key: Key, forced: str | None) -> tuple[Message, bool]:
        amount = _amount(req["4"])
        if key in self._reversed_unknown:
            code = "12"
        elif forced is not None:
            code = forced
        elif req["3"] not in (PURCHASE, REFUND):
            code = "12"
        else:
            code = AMOUNT_CONVENTIONS.get(req["4"][-2:], "00")
        rrn = self._rrn()
        if code in NOT_PROCESSED:
            return response(req, code, {"37": rrn}), False
        approval = f"{self._rng.randrange(1_000_000):06d}" if code == "00" else None
        self._record(req, key, amount, rrn, code, approval, offline=None)
        extra = {"37": rrn}
        if approval is not None:
            extra["38"] = approval
        return response(req, code, extra), True

    def _advice(self, req: Message, key: Key, forced: str | None) -> tuple[Message, bool]:
        amount = _amount(req["4"])
        if key in self._reversed_unknown:
            code = "12"
        else:
            code = forced if forced is not None else "00"
        rrn = self._rrn()
        if code in NOT_PROCESSED:
            return response(req, code, {"37": rrn}), False
        self._record(req, key, amount, rrn, code, approval=None, offline=req.get("38"))
        return response(req, code, {"37": rrn}), True

    def _reversal(self, req: Message, forced: str | None) -> tuple[Message, bool]:
        original = req["90"]
        if len(original) != 42 or not original.isdigit():
            raise FormatProblem("field 90 is not 42 digits")
        orig_mti, orig_stan, orig_f7 = original[:4], original[4:10], original[10:20]
        if forced is not None:
            code = forced
        else:
            orig_key = (req["41"], orig_stan, orig_f7)
            entry = self._entries.get(orig_key)
            if entry is None:
                self._reversed_unknown.add(orig_key)
                code = "25"
                log.info("reversal of unknown %s stan=%s: remembered, never to be charged",
                         orig_mti, orig_stan)
            else:
                if entry.charged:
                    log.info("reversal of %s stan=%s: charge undone", orig_mti, orig_stan)
                entry.charged = False
                entry.reversed = True
                code = "00"
        return response(req, code), code in ("00", "25")

    def _reconcile(self, req: Message, forced: str | None) -> tuple[Message, bool]:
        try:
            claimed = tuple(int(req[f]) for f in ("74", "76", "86", "88"))
        except ValueError:
            raise FormatProblem("totals in fields 74, 76, 86, 88 are not numeric") from None
        if forced is not None:
            code = forced
        else:
            actual = self.totals(req["41"], req["60"])
            code = "00" if claimed == actual else "95"
            if code == "95":
                log.info("batch %s of %r out of balance: terminal %s, host %s",
                         req["60"], req["41"], claimed, actual)
        return response(req, code), code not in NOT_PROCESSED

    def totals(self, tid: str, batch: str) -> tuple[int, int, int, int]:
        """(refund count, purchase count, refund amount, purchase amount) charged."""
        refunds = purchases = refund_amount = purchase_amount = 0
        for entry in self._entries.values():
            if entry.tid != tid or entry.batch != batch or not entry.charged:
                continue
            if entry.processing_code == REFUND:
                refunds += 1
                refund_amount += entry.amount
            elif entry.processing_code == PURCHASE:
                purchases += 1
                purchase_amount += entry.amount
        return refunds, purchases, refund_amount, purchase_amount

    # -- helpers -----------------------------------------------------------
    def _record(self, req: Message, key: Key, amount: int, rrn: str, code: str,
                approval: str | None, offline: str | None) -> None:
        self._entries[key] = LedgerEntry(
            tid=req["41"], stan=req["11"], f7=req["7"], mti=req["t"], amount=amount,
            currency=req.get("49", ""), pan=mask_pan(req.get("2", "")),
            processing_code=req["3"], approval=approval, rrn=rrn, code=code,
            charged=code == "00", reversed=key in self._reversed_unknown,
            offline_approval=offline, batch=req.get("60"),
        )

    def _rrn(self) -> str:
        self._rrn_seq += 1
        return f"{self._rrn_prefix}{self._rrn_seq % 1_000_000:06d}"


def _amount(value: str) -> int:
    if not value.isdigit():
        raise FormatProblem("field 4 is not numeric")
    return int(value)
