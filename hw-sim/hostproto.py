"""Wire format of the simulated acquirer host: framing, ISO 8583 codec, MTI rules.

Everything here follows the host interface, version 1.2, sections 1 and 2: a 2-byte
big-endian length before each message (1 to 2048 bytes), ISO 8583:1987 encoded as
`iso8583.specs.default` of pyiso8583 4.x describes it, but for fields 52 and 53
(binary, a 2-digit length counting bytes: 8 or 16, 10 or 12). The host decodes both
up to 99 bytes so that it can answer a wrong length `30` (hostchip.check_format).
Nothing here does I/O except `read_frame`, which reads one frame from an asyncio
stream.
"""

from __future__ import annotations

import asyncio
import re
import struct
from typing import Final

import iso8583
import iso8583.specs
from iso8583.decoder import DecodeError
from iso8583.encoder import EncodeError

from firmware.core.emv import tlv

Message = dict[str, str]

MAX_FRAME: Final = 2048
# Section 2 (version 1.2): fields 52 and 53 differ from specs.default; up to 99 bytes
# here, so that a wrong length is answered rather than dropped as undecodable.
SPEC: Final = {
    **iso8583.specs.default,
    "52": {"data_enc": "b", "len_enc": "ascii", "len_type": 2, "max_len": 99,
           "desc": "PIN Data"},
    "53": {"data_enc": "b", "len_enc": "ascii", "len_type": 2, "max_len": 99,
           "desc": "Security Related Control Information"},
}

# The requests the host understands; anything else is a protocol error.
KNOWN_MTIS: Final = frozenset({"0200", "0220", "0221", "0320", "0321", "0400", "0401", "0500",
                               "0800"})

# Fields every response copies from its request, where the request has them.
ECHOED_FIELDS: Final = ("3", "4", "7", "11", "41", "42", "49", "70")

# Fields that must never appear in a log line or a record in clear.
SECRET_FIELDS: Final = frozenset({"2", "35", "52", "53"})

# A frame of valid length whose content no ISO 8583 decoder accepts: the MTI
# is not ASCII.
GARBAGE_PAYLOAD: Final = b"\xff\xfe\xfd\xfc" + b"\x00" * 12


class FrameError(Exception):
    """A frame or message that breaks the host interface; the connection must close."""


class FormatProblem(Exception):
    """A decodable request whose content breaks the interface: answered `30`."""


def frame(payload: bytes) -> bytes:
    """Prefix a message with its 2-byte big-endian length."""
    if not 0 < len(payload) <= MAX_FRAME:
        raise FrameError(f"message of {len(payload)} bytes cannot be framed")
    return struct.pack(">H", len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """Read one frame's payload; None at a clean end of stream.

    Raises FrameError for a length of 0 or above MAX_FRAME, or a stream that ends
    inside a frame.
    """
    try:
        header = await reader.readexactly(2)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("stream ended inside a frame header") from exc
    (length,) = struct.unpack(">H", header)
    if length == 0 or length > MAX_FRAME:
        raise FrameError(f"frame length {length} outside 1..{MAX_FRAME}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"stream ended after {len(exc.partial)} of {length} bytes") from exc


def decode(payload: bytes) -> Message:
    """Decode one message; FrameError (without card data) if it cannot be decoded."""
    try:
        doc, _ = iso8583.decode(bytearray(payload), SPEC)
    except DecodeError as exc:
        # DecodeError's text names the field and position, never the data.
        where = f"field {exc.field}, pos {exc.pos}"
        raise FrameError(f"undecodable message: {exc.msg} ({where})") from None
    except (ValueError, TypeError, IndexError) as exc:
        raise FrameError(f"undecodable message: {type(exc).__name__}") from None
    mti = doc.get("t", "")
    if mti not in KNOWN_MTIS:
        raise FrameError(f"unknown MTI {mti!r}")
    return {k: v for k, v in doc.items() if k not in ("p", "1")}


def encode(message: Message) -> bytes:
    """Encode one message (bitmaps are added by the encoder)."""
    doc = dict(message)
    try:
        raw, _ = iso8583.encode(doc, SPEC)
    except EncodeError as exc:
        raise FrameError(f"cannot encode response: {exc.msg} (field {exc.field})") from None
    return bytes(raw)


def mti_class(mti: str) -> str:
    """The request class an MTI belongs to: '0221' -> '0220', '0401' -> '0400'."""
    return mti[:3] + "0"


def response_mti(mti: str) -> str:
    """The response MTI for a request MTI: '0200' -> '0210', '0221' -> '0230'."""
    return mti[:2] + str(int(mti[2]) + 1) + "0"


def class_matches(pattern: str, mti: str) -> bool:
    """Whether a fault's MTI pattern ('0200', '0400', '*') covers a request MTI."""
    return pattern == "*" or mti_class(pattern) == mti_class(mti)


def response(request: Message, code: str, extra: Message | None = None) -> Message:
    """A response to `request`: its echoed fields, field 39 and `extra` fields."""
    msg: Message = {"t": response_mti(request["t"])}
    for field in ECHOED_FIELDS:
        if field in request:
            msg[field] = request[field]
    if extra:
        msg.update(extra)
    msg["39"] = code
    return msg


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, the rest as '*'. Short values are fully masked."""
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]



# Fields a person may see on hwsim's wire timeline as they are; every other field is
# shown only by its length, and field 2 masked. Card data (2, 14, 35, 36, 45, 52, 55)
# is never in this list: a new field is hidden until someone decides it is safe.
SHOWN_FIELDS: Final = frozenset({"3", "4", "7", "11", "12", "13", "22", "23", "24", "25",
                                 "37", "38", "39", "41", "42", "49", "60", "62", "70", "90"})
# Host-interface 8.1: data objects that never travel in field 55 (card data, PIN data):
# the host answers them 30 and the wire log never shows their values.
ICC_CARD_DATA: Final = frozenset({0x57, 0x5A, 0x56, 0x5F20, 0x5F24, 0x5F30, 0x9F1F, 0x9F20,
                                  0x9F6B, 0x99})
_CARD_NUMBER_LIKE = re.compile(r"\d{13,}")


def mask_card_numbers(text: str) -> str:
    """`text` with every run of 13 or more digits masked like a card number (first 6
    and last 4 kept): a PAN stays masked even run together with other digits."""
    return _CARD_NUMBER_LIKE.sub(lambda m: mask_pan(m.group()), text)


def wire_view(message: Message) -> dict[str, str]:
    """The fields of a message as hwsim's page may show them: the MTI and SHOWN_FIELDS,
    field 2 masked (first 6, last 4), 52 and 53 as section 9.2 says, 55 object by
    object without card data (`hostchip.icc_view`), any other field as its length only. In a shown
    field every run of 13 or more digits is masked (`mask_card_numbers`), so a card
    number in a field where none belongs still does not show; field 90, 42 digits by
    design, is shown split into the original's MTI, STAN, field 7 and the rest when it
    has that form, and masked like any other field when it has not."""
    view: dict[str, str] = {}
    for field, value in sorted(message.items(), key=lambda kv: _field_order(kv[0])):
        if field == "t":
            view["t"] = value
        elif field == "2":
            view["2"] = mask_pan(value)
        elif field == "52":  # 9.2: zero bytes of its length
            view["52"] = "0" * len(value)
        elif field == "53":  # 9.2: the KSN's first 6 and last 4 hex digits
            view["53"] = value[:6] + "*" * max(0, len(value) - 10) + value[-4:] \
                if len(value) > 10 else "*" * len(value)
        elif field == "55":  # each data object; never a card-data tag's value
            view["55"] = icc_view(value)
        elif field == "90" and original_of(value) is not None:
            view["90"] = f"{value[:4]} {value[4:10]} {value[10:20]} {value[20:]}"
        elif field in SHOWN_FIELDS:
            view[field] = mask_card_numbers(value)
        else:
            view[field] = f"[{len(value)} characters hidden]"
    return view


def icc_view(hexvalue: str) -> str:
    """Field 55 as the wire log shows it: each top-level tag with its value, except a
    forbidden tag's (shown by its length); `[n characters hidden]` when it does not
    parse."""
    try:
        objects = tlv.parse(bytes.fromhex(hexvalue))
    except (ValueError, tlv.TlvError):
        return f"[{len(hexvalue)} characters hidden]"
    parts = []
    for o in objects:
        hidden = o.tag in ICC_CARD_DATA or any(c.tag in ICC_CARD_DATA for c in tlv.walk(o.children))
        value = f"[{len(o.value)} bytes hidden]" if hidden else o.value.hex().upper()
        parts.append(f"{o.tag:X}={value}")
    return " ".join(parts)


def _field_order(field: str) -> int:
    return int(field) if field.isdigit() else -1


def key_of(message: Message) -> tuple[str, str, str]:
    """The idempotency key (41, 11, 7) of a message; missing fields are ''."""
    return (message.get("41", ""), message.get("11", ""), message.get("7", ""))


def describe(message: Message) -> str:
    """A log-safe one-line summary: MTI, STAN, terminal, code. No card data."""
    parts = [message.get("t", "????"), f"stan={message.get('11', '-')}"]
    parts.append(f"tid={message.get('41', '-')!r}")
    if "39" in message:
        parts.append(f"code={message['39']}")
    return " ".join(parts)


def original_of(field90: str, *, zeros: bool = True) -> tuple[str, str, str] | None:
    """(MTI, STAN, field 7) of the original named by field 90, or None if it is not 42
    digits (4 + 6 + 10, then 22 zeros; the zeros are checked only when `zeros`)."""
    if len(field90) != 42 or not field90.isdigit():
        return None
    if zeros and field90[20:] != "0" * 22:
        return None
    return field90[:4], field90[4:10], field90[10:20]
