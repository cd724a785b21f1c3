"""ISO 8583 messages of host-interface.md section 4, built and parsed with pyiso8583.

Pure functions: the caller supplies the STAN, the transmission time and the card
data. Fields are formatted exactly as `iso8583.specs.default` describes them
(fixed numeric fields zero-padded, fields 41/42 space-padded). Framing (2-byte
big-endian length) lives here too because it is pure byte arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import iso8583
from iso8583.specs import default as _DEFAULT

from firmware.core.card import CardData, mask_pan

# specs.default, but for fields 52 and 53 (version 1.2, section 2): binary with a 2-digit
# ASCII length counting bytes, because an AES PIN block and a DUKPT key serial number do
# not fit the 1987 sizes
SPEC: dict[str, dict[str, Any]] = {
    **_DEFAULT,
    "52": {**_DEFAULT["52"], "data_enc": "b", "len_enc": "ascii", "len_type": 2,
           "max_len": 16, "desc": "PIN Data"},
    "53": {**_DEFAULT["53"], "data_enc": "b", "len_enc": "ascii", "len_type": 2,
           "max_len": 12, "desc": "Security Related Control Information"},
}

MAX_FRAME = 2048
PURCHASE = "000000"
REFUND = "200000"
# field 22 (section 8.1): how the card was read, then the terminal's PIN capability
# ("1" a PIN pad is configured, "2" none)
READ_SWIPED = "90"
READ_CHIP = "05"
READ_FALLBACK = "80"
READ_KEYED = "01"
ENTRY_SWIPED = "902"
ENTRY_KEYED = "012"
MAX_ICC = 255  # field 55 carries at most 255 bytes (section 2)


def entry_mode(read: str, pin_pad: bool = False) -> str:
    return read + ("1" if pin_pad else "2")

Fields = dict[str, str]


class MessageError(ValueError):
    """A message that cannot be encoded or decoded; the text never holds card data."""


@dataclass(frozen=True)
class Identity:
    terminal_id: str
    merchant_id: str
    currency: str  # ISO 4217 numeric, 3 digits

    @property
    def f41(self) -> str:
        return self.terminal_id.ljust(8)[:8]

    @property
    def f42(self) -> str:
        return self.merchant_id.ljust(15)[:15]


def f7(utc: datetime) -> str:
    """Transmission date and time, UTC, MMDDhhmmss."""
    return utc.strftime("%m%d%H%M%S")


def stan_str(stan: int) -> str:
    return f"{stan:06d}"


def next_stan(stan: int) -> int:
    """STANs run 1..999999 and wrap to 1."""
    return 1 if stan >= 999999 else stan + 1


def sale_fields(
    ident: Identity,
    *,
    card: CardData,
    amount: int,
    processing_code: str,
    local: datetime,
    batch: int,
    invoice: int,
    entry: str = ENTRY_SWIPED,
    psn: str = "",
    icc: bytes = b"",
) -> Fields:
    """The fields of a sale that do not change between attempts (no 7, 11, 35). A chip
    sale (entry 05x) carries 23 (the PAN sequence number 5F34 with a leading 0, when the
    card has one) and 55 (its ICC data, hex)."""
    if len(icc) > MAX_ICC:
        raise MessageError(f"field 55 of {len(icc)} bytes is over {MAX_ICC}")
    doc = {
        "2": card.pan,
        "3": processing_code,
        "4": f"{amount:012d}",
        "12": local.strftime("%H%M%S"),
        "13": local.strftime("%m%d"),
        "14": card.expiry,
        "22": entry,
        "25": "00",
        "41": ident.f41,
        "42": ident.f42,
        "49": ident.currency,
        "60": f"{batch:06d}",
        "62": f"{invoice:06d}",
    }
    if entry.startswith(READ_CHIP):
        if psn:
            doc["23"] = f"0{psn}"[-3:]
        if icc:
            doc["55"] = icc.hex().upper()
    return doc


def financial_request(base: Fields, *, stan: int, utc: datetime, track2: str | None,
                      pin: tuple[bytes, bytes] | None = None) -> Fields:
    """A 0200 from the sale's fixed fields; track 2 when the card has one; an online PIN's
    block and KSN in 52 and 53 (section 9: never in another message, never stored)."""
    doc: Fields = {"t": "0200", **base, "7": f7(utc), "11": stan_str(stan)}
    if track2:
        doc["35"] = track2
    if pin is not None:
        block, ksn = pin
        if len(block) not in (8, 16) or len(ksn) not in (10, 12):
            raise MessageError("a PIN block of 8 or 16 bytes and a KSN of 10 or 12 are needed")
        doc["52"], doc["53"] = block.hex().upper(), ksn.hex().upper()
    return doc


REVERSAL_FIELDS = ("2", "3", "4", "12", "13", "14", "22", "23", "25", "41", "42", "49", "60",
                   "62")


def reversal(original: Fields, *, orig_mti: str, orig_stan: str, orig_f7: str,
             stan: int, f7: str, reason: str, icc: str = "") -> Fields:
    """A 0400 for an original request (section 4, 0400/0410); `f7` fixed at first send.
    Field 55 only after a decline by the card (`icc`: its 9F26, 9F27, 9F36)."""
    doc = _from_original("0400", original, REVERSAL_FIELDS, stan=stan, f7=f7)
    if icc:
        doc["55"] = icc
    doc["39"] = reason
    doc["90"] = original_data(orig_mti, orig_stan, orig_f7)
    return doc


def _from_original(mti: str, original: Fields, keys: Iterable[str], *, stan: int,
                   f7: str) -> Fields:
    """A message about an earlier one: those of its fields in `keys`, new 7 and 11."""
    doc: Fields = {"t": mti}
    doc.update({key: original[key] for key in keys if key in original})
    doc["7"] = f7
    doc["11"] = stan_str(stan)
    return doc


def advice(original: Fields, *, approval: str, stan: int, f7: str) -> Fields:
    """A 0220 for a sale approved offline: the 0200's fields without 35, 52, 53, plus 38
    (a chip sale's 55 is the card's TC, which the journal keeps in its place)."""
    doc: Fields = {"t": "0220"}
    for key, value in original.items():
        if key not in ("t", "35", "52", "53", "7", "11"):
            doc[key] = value
    doc["7"] = f7
    doc["11"] = stan_str(stan)
    doc["38"] = approval
    return doc


def repeat(doc: Fields) -> Fields:
    """The repeat of an advice or reversal: same fields, MTI ending in 1."""
    mti = doc["t"]
    if mti not in ("0220", "0320", "0400"):
        raise MessageError(f"message {mti} has no repeat")
    return {**doc, "t": mti[:3] + "1"}


def network(ident: Identity, *, code: str, stan: int, utc: datetime) -> Fields:
    """0800: code '001' sign-on, '301' echo."""
    return {"t": "0800", "7": f7(utc), "11": stan_str(stan), "41": ident.f41, "70": code}


def encode(doc: Fields) -> bytes:
    try:
        raw, _ = iso8583.encode(dict(doc), SPEC)
    except (iso8583.EncodeError, ValueError, TypeError) as exc:
        raise MessageError(f"cannot encode {doc.get('t', '????')}: {_scrub(str(exc))}") from None
    return bytes(raw)


KNOWN_RESPONSES = {"0210", "0230", "0330", "0410", "0510", "0810"}


def decode(raw: bytes) -> Fields:
    """Decode a message; unknown MTIs and malformed bytes raise MessageError."""
    try:
        doc, _ = iso8583.decode(bytes(raw), SPEC)
    except (iso8583.DecodeError, ValueError, TypeError, IndexError) as exc:
        raise MessageError(f"undecodable message: {_scrub(str(exc))}") from None
    out = {k: v for k, v in doc.items() if isinstance(v, str)}
    return out


def frame(payload: bytes) -> bytes:
    if not 0 < len(payload) <= MAX_FRAME:
        raise MessageError(f"message of {len(payload)} bytes cannot be framed")
    return len(payload).to_bytes(2, "big") + payload


def response_class(mti: str) -> str:
    """'0210' and '0200' -> '02'; the class used to match responses to requests."""
    return mti[:2]


def match_key(doc: Fields) -> tuple[str, str, str]:
    return (doc.get("41", "").strip(), doc.get("11", ""), response_class(doc.get("t", "")))


def mismatch(request: Fields, response: Fields) -> str | None:
    """Why a response does not answer the request, or None when it does."""
    expected = {"0200": "0210", "0220": "0230", "0221": "0230", "0400": "0410",
                "0401": "0410", "0800": "0810", "0500": "0510",
                "0320": "0330", "0321": "0330"}[request["t"]]
    if response.get("t") != expected:
        return f"answer MTI {response.get('t')} for a {request['t']}"
    for key in ("3", "4", "11", "41", "49"):
        if key in request and response.get(key) != request[key]:
            return f"field {key} does not match the request"
    if "39" not in response or len(response["39"]) != 2:
        return "response without field 39"
    return None


def safe_summary(doc: dict[str, Any]) -> str:
    """One log-safe line: MTI, STAN, amount, code and the masked PAN, never track data."""
    parts = [doc.get("t", "????")]
    if "11" in doc:
        parts.append(f"stan={doc['11']}")
    if "2" in doc:
        parts.append(f"pan={mask_pan(str(doc['2']))}")
    if "52" in doc:
        parts.append("pin=yes")
    if "4" in doc:
        parts.append(f"amount={doc['4']}")
    if "39" in doc:
        parts.append(f"rc={doc['39']}")
    if "70" in doc:
        parts.append(f"nmic={doc['70']}")
    return " ".join(parts)


def _scrub(text: str) -> str:
    """Library error texts may quote field data: blank out any long digit run."""
    return _DIGIT_RUN.sub("<digits>", text)[:160]


_DIGIT_RUN = re.compile(r"\d{7,}")


# -- batch close (host-interface.md 1.1, section 4: 0500 / 0510, 0320 / 0330) -----------

CLOSE = "920000"  # 0500: the batch's totals
CLOSE_AFTER_UPLOAD = "960000"  # 0500 again, once the batch upload is answered


@dataclass(frozen=True)
class BatchTotals:
    """What a 0500 carries: purchases (online approved + offline accepted) and refunds,
    each not voided, not reversed, not refused."""

    purchases: int = 0
    purchase_amount: int = 0
    refunds: int = 0
    refund_amount: int = 0


def reconciliation(ident: Identity, *, processing_code: str, batch: int,
                   totals: BatchTotals, stan: int, f7: str) -> Fields:
    """A 0500: fields 3, 7, 11, 41, 42, 49, 60 (batch), 74 and 86 (refund count and
    amount), 76 and 88 (purchase count and amount). 0500 has no repeat MTI: a lost
    answer is followed by a new 0500 (new 7 and 11, same totals)."""
    if processing_code not in (CLOSE, CLOSE_AFTER_UPLOAD):
        raise MessageError(f"0500 processing code {processing_code} is neither {CLOSE} "
                           f"nor {CLOSE_AFTER_UPLOAD}")
    return {"t": "0500", "3": processing_code, "7": f7, "11": stan_str(stan),
            "41": ident.f41, "42": ident.f42, "49": ident.currency, "60": f"{batch:06d}",
            "74": f"{totals.refunds:010d}", "76": f"{totals.purchases:010d}",
            "86": f"{totals.refund_amount:016d}", "88": f"{totals.purchase_amount:016d}"}


UPLOAD_FIELDS = ("3", "4", "12", "13", "41", "42", "49", "60", "62")


def original_data(orig_mti: str, orig_stan: str, orig_f7: str) -> str:
    """Field 90: MTI of the original's first transmission + its STAN + its field 7 +
    22 zeros."""
    value = f"{orig_mti}{orig_stan}{orig_f7}" + "0" * 22
    if len(value) != 42 or not value.isdigit():
        raise MessageError(f"original data of {orig_mti} stan {orig_stan} is not 42 digits")
    return value


def batch_upload(original: Fields, *, orig_mti: str, orig_stan: str, orig_f7: str,
                 rrn: str, approval: str, code: str, stan: int, f7: str,
                 icc: str = "") -> Fields:
    """A 0320 for one transaction the batch totals count: fields 3, 4, 12, 13, 41, 42,
    49, 60, 62 of the original (`original`: its stored fields; a PAN there is left out),
    the original answer's 37, 38 and 39, new 7 and 11, and 90 naming the original."""
    doc = _from_original("0320", original, UPLOAD_FIELDS, stan=stan, f7=f7)
    doc["37"] = rrn.ljust(12)[:12]
    doc["38"] = approval.ljust(6)[:6]
    doc["39"] = code
    if icc:  # a chip sale's final cryptogram: 9F26 9F27 9F36 95 9B 9F5B only
        doc["55"] = icc
    doc["90"] = original_data(orig_mti, orig_stan, orig_f7)
    return doc


# -- void (host-interface.md 1.1, section 4: 0400 / 0410 with reason 17) ----------------

VOID_REASON = "17"  # customer cancellation
VOID_FIELDS = tuple(k for k in REVERSAL_FIELDS if k not in ("2", "14", "23"))


def void(original: Fields, *, orig_mti: str, orig_stan: str, orig_f7: str, rrn: str,
         stan: int, f7: str) -> Fields:
    """A 0400 with reason 17 that undoes an approved purchase or refund (or an accepted
    advice): the reversal's fields without 2 and 14 (no card data: the host finds the
    original by field 90, whose MTI is that of the original's first transmission, 0200
    or 0220), plus 37 of the original's answer when known; `f7` fixed at first send."""
    if orig_mti not in ("0200", "0220"):
        raise MessageError(f"a void names a 0200 or a 0220, not a {orig_mti}")
    doc = _from_original("0400", original, VOID_FIELDS, stan=stan, f7=f7)
    if rrn:
        doc["37"] = rrn.ljust(12)[:12]
    doc["39"] = VOID_REASON
    doc["90"] = original_data(orig_mti, orig_stan, orig_f7)
    return doc
