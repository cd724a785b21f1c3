"""What a chip transaction carries to the host (host-interface 8.1): field 55 and the
`ChipData` of the last cryptogram.

Field 55 holds the table's tags, each once, with the values the card and the
terminal used for that cryptogram (the CDOL's values as sent, then the card's answer:
9F26, 9F27, 9F10, 9F36), the conditional ones when known, and never the card data
fields 2, 14 and 35 carry (57, 5A, 56, 5F20, 5F24, 5F30, 9F1F, 9F20, 9F6B) nor 99.
The card data travels in `CardData`: PAN (5A), expiry YYMM (5F24), service code (5F30,
else from 57), track 2 from 57 with `D` written `=` and a trailing `F` dropped."""

from __future__ import annotations

from firmware.core.card import CardData
from firmware.core.emv import tlv
from firmware.core.emv.context import Ctx, hexs
from firmware.core.emv.records import pan
from firmware.core.emv.steps import ChipData

MANDATORY = (0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x9F03,
             0x5F2A, 0x82, 0x9F1A, 0x9F34, 0x9F33, 0x9F35, 0x84)
CONDITIONAL = (0x5F34, 0x9F09, 0x9F1E, 0x9F41, 0x9B, 0x4F)
FORBIDDEN = frozenset({0x57, 0x5A, 0x56, 0x5F20, 0x5F24, 0x5F30, 0x9F1F, 0x9F20, 0x9F6B,
                       0x99})


def field55(ctx: Ctx, cid: int, ac: bytes, atc: bytes, iad: bytes) -> bytes:
    assert ctx.app is not None
    answer = {0x9F26: ac, 0x9F27: bytes([cid]), 0x9F10: iad, 0x9F36: atc,
              0x84: ctx.app.aid, 0x4F: ctx.app.aid}
    items: list[tuple[int, bytes]] = []
    for tag in MANDATORY + CONDITIONAL:
        if tag in answer:
            value: bytes | None = answer[tag]
        elif tag in ctx.used:
            value = ctx.used[tag]
        else:
            value = ctx.get(tag)
        if value is None and tag in MANDATORY:
            value = b""
        if value is not None:
            items.append((tag, value))
    return tlv.encode_all(items)


def card_data(ctx: Ctx) -> CardData:
    track2 = hexs(ctx.card.get(0x57)).replace("D", "=").rstrip("F")
    service = ""
    if ctx.card.get(0x5F30):
        service = hexs(ctx.card[0x5F30])[-3:]
    elif "=" in track2 and len(track2.split("=", 1)[1]) >= 7:
        service = track2.split("=", 1)[1][4:7]
    return CardData(pan=pan(ctx), expiry=hexs(ctx.card.get(0x5F24))[:4],
                    service_code=service, track2=track2)


def chip_data(ctx: Ctx, cid: int, ac: bytes, atc: bytes, iad: bytes) -> ChipData:
    assert ctx.app is not None
    return ChipData(
        card=card_data(ctx), psn=hexs(ctx.card.get(0x5F34))[:2], aid=hexs(ctx.app.aid),
        label=ctx.app.label, field55=field55(ctx, cid, ac, atc, iad),
        tvr=hexs(bytes(ctx.tvr)), tsi=hexs(bytes(ctx.tsi)), cvm=ctx.cvm_text,
        cvm_results=hexs(ctx.cvm_results), cryptogram=hexs(ac), cid=cid, atc=hexs(atc))
