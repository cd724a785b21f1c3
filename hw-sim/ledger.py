"""The simulated acquirer's books: the ledger, the idempotency store, the rules.

`Books.answer(request)` turns one decoded request into its response, following
the host interface, version 1.2, sections 3 to 5, 7 and 8 (the chip rules are
`hostchip`'s):

- the idempotency key is (41, 11, 7): a key already processed is answered with
  the first response again (under the MTI of the new request's class); answers
  `91` and `96` mean "not processed" and are never stored;
- a 0200 purchase (`000000`) or refund (`200000`) is approved unless the last
  two digits of field 4 are 05, 51, 54, 91 or 96 (then that code); an approved
  purchase is *charged*, an approved refund *credited*; other processing codes
  get `12`;
- a 0220/0221 advice of a purchase is accepted (charged); of a refund, `12`
  (refunds are never approved offline);
- a 0400/0401 reversal (reason 68, 06, ...) finds its original by (41, STAN and
  field 7 from field 90): charged or credited -> undone, `00`; found -> `00`; not
  found -> `25`, and that original, should it arrive later, is answered `12` and
  never charged or credited;
- a 0400/0401 void (reason 17) carries no card data (no field 2, 14 or 35) and
  names a 0200 or 0220 in field 90; it undoes a charge or a credit exactly as a
  reversal does (`00`, also when there was nothing to undo), `25` when unknown;
- 0500 and 0320 (batch close and upload) go to `settlement.Settlement`; they
  never change money.
- chip (section 7's order): format errors `30` first (fields 22, 23, 52, 53, 55's
  placement, a reversal's or an upload's field 55: `hostchip.check_format`); then for
  a 0200 the busy cents `91`/`96`; then field 55 malformed or inconsistent `30`; a
  wrong cryptogram or an application whose keys the host does not hold `05` (not for
  a refund); the PIN checks (`pin_check`, a hook: a request with field 52 and no hook
  is answered `81`, never approved blindly; `pin_not_processed`, a hook too, hears of a
  0200 with field 52 answered `91`/`96`, whose KSN may come back once, host-interface
  9.1); the other cents; `00`. A 0220's field
  55 is checked the same way (a wrong TC: `05`). The 0210 to a chip purchase whose
  cryptogram the host could check carries field 55: tag 91 (ARPC || ARC), and the
  issuer scripts a test asked for (`chip`, hostfaults.ChipFaults).

Every entry records its batch (field 60) and invoice (field 62), and for a 0200
whether it carried an online PIN (`pin`: field 52 there; never PIN data). A forced code
(a `decline` fault or a default answer) replaces the decision for a fresh
request; the request is then recorded as neither charged nor credited. No I/O
here; the PAN is kept masked and track data is never kept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Final

from . import hostchip
from .entries import KIND_OF, LedgerEntry, Totals, totals_of
from .hostproto import FormatProblem, Message, key_of, mask_pan, mti_class, original_of
from .hostfaults import ChipFaults
from .hostproto import response, response_mti
from .settlement import Settlement

log = logging.getLogger("hwsim.host")

__all__ = ["Books", "FormatProblem", "LedgerEntry", "Totals"]

Key = tuple[str, str, str]

PURCHASE: Final = "000000"
REFUND: Final = "200000"
VOID_REASON: Final = "17"
NOT_PROCESSED: Final = frozenset({"91", "96"})
AMOUNT_CONVENTIONS: Final = {"05": "05", "51": "51", "54": "54", "91": "91", "96": "96"}

_ORIGINAL_FIELDS: Final = ("2", "3", "4", "7", "11", "41", "49", "60", "62")
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "0200": _ORIGINAL_FIELDS,
    "0220": _ORIGINAL_FIELDS,
    "0320": ("3", "4", "7", "11", "12", "13", "37", "38", "39", "41", "42", "49", "60", "62",
             "90"),
    "0400": ("7", "11", "41", "90"),
    "0500": ("3", "7", "11", "41", "42", "49", "60", "74", "76", "86", "88"),
    "0800": (),
}


class Books:
    """Ledger, stored answers and the decision rules of the simulated acquirer."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._entries: dict[Key, LedgerEntry] = {}
        self._answers: dict[Key, Message] = {}
        # originals answered 25 before they arrived: key -> "reversed" or "voided"
        self._cancelled_unknown: dict[Key, str] = {}
        self._defaults: dict[str, str] = {}
        self._settlement = Settlement()
        self._rrn_prefix = f"{rng.randrange(1_000_000):06d}"
        self._rrn_seq = 0
        self.chip = ChipFaults()
        # the PIN checks (host-interface 9.2): the request -> "55", "75", "81", or None
        # when the PIN is right; None here: a PIN block is answered 81
        self.pin_check: Callable[[Message], str | None] | None = None
        # told of a 0200 with a PIN block answered 91/96: its KSN may be resent (9.1)
        self.pin_not_processed: Callable[[Message], None] | None = None
        self._with_pin: set[Key] = set()  # the entries whose request carried field 52
        self._scripts_issued = 0

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

    def force_out_of_balance(self, count: int) -> None:
        """The next `count` 0500s (0: all, until cleared) are answered 95."""
        self._settlement.force_out_of_balance(count)

    def clear_out_of_balance(self) -> None:
        self._settlement.clear_forced()

    def out_of_balance_pending(self) -> int | None:
        return self._settlement.forced_pending()

    def entries(self) -> list[dict[str, Any]]:
        return [{**entry.as_dict(), "pin": key in self._with_pin}
                for key, entry in self._entries.items()]

    def batches(self) -> list[dict[str, Any]]:
        return self._settlement.batches(self._entries)

    # -- processing --------------------------------------------------------
    def not_processed(self, request: Message, code: str) -> Message:
        """A busy answer (91/96): nothing recorded, nothing stored."""
        self._not_processed_pin(request)
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
            hostchip.check_format(request)
            if cls in ("0200", "0220"):
                _check_original(request)
            if cls == "0200":
                answer, final = self._sale(request, key, forced)
            elif cls == "0220":
                answer, final = self._advice(request, key, forced)
            elif cls == "0400":
                answer, final = self._reversal(request, forced)
            elif cls == "0320":
                code = forced or self._settlement.upload(request, self._entries)
                answer, final = response(request, code), code not in NOT_PROCESSED
            else:
                code = self._settlement.reconcile(request, self._entries, forced)
                answer, final = response(request, code), code not in NOT_PROCESSED
        except FormatProblem as exc:
            log.warning("format error in %s stan=%s: %s", mti, key[1], exc)
            extra = {"37": self._rrn()} if cls in ("0200", "0220") else None
            return response(request, "30", extra)
        if final:
            self._answers[key] = answer
        return answer

    def _sale(self, req: Message, key: Key, forced: str | None) -> tuple[Message, bool]:
        amount = _amount(req["4"])
        cents = AMOUNT_CONVENTIONS.get(req["4"][-2:], "00")
        icc: hostchip.Icc | None = None
        checked = False  # the host checked the cryptogram: the 0210 carries tag 91
        if key in self._cancelled_unknown:
            code = "12"
        elif forced in NOT_PROCESSED:
            code = str(forced)
        elif req["3"] not in (PURCHASE, REFUND):
            code = "12"
        elif forced is None and cents in NOT_PROCESSED:
            code = cents
        else:
            code = ""
            if "55" in req:
                icc = hostchip.check_icc(req)  # FormatProblem: 30
                if req["3"] == PURCHASE:
                    code, checked = self._cryptogram(req, icc, "ARQC")
            if not code and "52" in req:
                code = (self.pin_check(req) or "") if self.pin_check else "81"
            if not code:
                code = forced if forced is not None else cents
        rrn = self._rrn()
        if code in NOT_PROCESSED:
            self._not_processed_pin(req)
            return response(req, code, {"37": rrn}), False
        if "52" in req:
            self._with_pin.add(key)
        approval = f"{self._rng.randrange(1_000_000):06d}" if code == "00" else None
        self._record(req, key, amount, rrn, code, approval, offline=None, icc=icc)
        extra = {"37": rrn}
        if approval is not None:
            extra["38"] = approval
        if checked and icc is not None:
            extra["55"] = self._issuer_data(req, icc, code)
        return response(req, code, extra), True

    def _cryptogram(self, req: Message, icc: hostchip.Icc, what: str) -> tuple[str, bool]:
        """("05", ...) for an application whose keys the host does not hold or a wrong
        cryptogram, else ("", True); the flag: the host could check it."""
        if not hostchip.holds_keys(icc):
            log.info("%s stan=%s: application %s is not the test scheme's: 05", req["t"],
                     req["11"], icc.aid)
            return "05", False
        if not hostchip.verify(req, icc):
            log.warning("cryptogram failure: %s stan=%s, wrong %s (ATC %04X): 05", req["t"],
                        req["11"], what, icc.atc)
            return "05", True
        return "", True

    def _issuer_data(self, req: Message, icc: hostchip.Icc, code: str) -> str:
        wrong, scripts = self.chip.take()
        data = b""
        if scripts is not None:
            self._scripts_issued += len(hostchip.SCRIPT_TEMPLATES[scripts[0]])
            data = hostchip.build_scripts(scripts[0], scripts[1],
                                          hostchip.session_key(req, icc), icc.atc,
                                          icc.tags[0x9F26], self._scripts_issued)
        if wrong:
            log.info("0210 stan=%s carries a wrong ARPC (chip-wrong-arpc)", req["11"])
        return hostchip.issuer_data(req, icc, code, wrong_arpc=wrong, scripts=data)

    def _advice(self, req: Message, key: Key, forced: str | None) -> tuple[Message, bool]:
        amount = _amount(req["4"])
        icc = hostchip.check_icc(req) if "55" in req else None  # FormatProblem: 30
        code = ""
        if key in self._cancelled_unknown:
            code = "12"
        elif req["3"] != PURCHASE:  # refunds are never approved offline
            code = "12"
        elif icc is not None:
            code, _ = self._cryptogram(req, icc, "TC")
        if not code:
            code = forced if forced is not None else "00"
        rrn = self._rrn()
        if code in NOT_PROCESSED:
            return response(req, code, {"37": rrn}), False
        self._record(req, key, amount, rrn, code, approval=None, offline=req.get("38"),
                     icc=icc)
        return response(req, code, {"37": rrn}), True

    def _reversal(self, req: Message, forced: str | None) -> tuple[Message, bool]:
        """A reversal, or a void when field 39 is 17: undo the original named by field 90."""
        void = req.get("39") == VOID_REASON
        what = "void" if void else "reversal"
        original = original_of(req["90"], zeros=void)
        if original is None:
            raise FormatProblem("field 90 is not " + (
                "MTI + STAN + field 7 + 22 zeros" if void else "42 digits"))
        orig_mti, orig_stan, orig_f7 = original
        if void:
            carried = [f for f in ("2", "14", "23", "35", "55") if f in req]
            if carried:
                raise FormatProblem(f"a void carries no card data, got field(s) "
                                    f"{', '.join(carried)}")  # fmt: skip
            if orig_mti not in ("0200", "0220"):
                raise FormatProblem(f"field 90 of a void names MTI {orig_mti}; the original's "
                                    "first transmission is a 0200 or a 0220")  # fmt: skip
        if forced is not None:
            return response(req, forced), forced in ("00", "25")
        orig_key = (req["41"], orig_stan, orig_f7)
        entry = self._entries.get(orig_key)
        if entry is None:
            self._cancelled_unknown.setdefault(orig_key, "voided" if void else "reversed")
            log.info("%s of unknown %s stan=%s: remembered, never to be charged or credited",
                     what, orig_mti, orig_stan)
            return response(req, "25"), True
        if void and "37" in req and req["37"] != entry.rrn:
            log.warning("void of %s stan=%s names field 37 %s, the host gave %s; "
                        "found by field 90", orig_mti, orig_stan, req["37"], entry.rrn)
        if entry.charged or entry.credited:
            log.info("%s of %s stan=%s: %s of %d undone", what, orig_mti, orig_stan,
                     "charge" if entry.charged else "credit", entry.amount)
        entry.charged = entry.credited = False
        if void:
            entry.voided = True
        else:
            entry.reversed = True
        return response(req, "00"), True

    def totals(self, tid: str, batch: str) -> Totals:
        """(refund count, purchase count, refund amount, purchase amount) counted now."""
        return totals_of(e for e in self._entries.values() if e.tid == tid and e.batch == batch)

    # -- helpers -----------------------------------------------------------
    def _record(self, req: Message, key: Key, amount: int, rrn: str, code: str,
                approval: str | None, offline: str | None,
                icc: hostchip.Icc | None = None) -> None:
        kind = KIND_OF.get(req["3"], "other")
        cancelled = self._cancelled_unknown.get(key)
        self._entries[key] = LedgerEntry(
            tid=req["41"], stan=req["11"], f7=req["7"], mti=req["t"], kind=kind, amount=amount,
            currency=req.get("49", ""), pan=mask_pan(req.get("2", "")),
            processing_code=req["3"], approval=approval, rrn=rrn, code=code,
            charged=code == "00" and kind == "purchase",
            credited=code == "00" and kind == "refund",
            reversed=cancelled == "reversed", voided=cancelled == "voided",
            offline_approval=offline, batch=req["60"], invoice=req["62"],
            entry_mode=req.get("22"), aid=icc.aid if icc else None,
            cryptogram=icc.kind if icc else None,
        )

    def _not_processed_pin(self, req: Message) -> None:
        if self.pin_not_processed is not None and "52" in req and req.get("t") == "0200":
            self.pin_not_processed(req)

    def _rrn(self) -> str:
        self._rrn_seq += 1
        return f"{self._rrn_prefix}{self._rrn_seq % 1_000_000:06d}"


def _amount(value: str) -> int:
    if not value.isdigit():
        raise FormatProblem("field 4 is not numeric")
    return int(value)


def _check_original(req: Message) -> None:
    """The fields of a 0200/0220 the ledger keeps, checked before anything is decided."""
    _amount(req["4"])
    batch = req["60"]
    if len(batch) != 6 or not batch.isdigit():
        raise FormatProblem("field 60 (batch) is not 6 digits")
