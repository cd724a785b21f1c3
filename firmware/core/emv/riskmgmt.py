"""Terminal risk management and terminal action analysis (EMV 4.4 Book 3 10.6, 10.7).

Risk management (when AIP byte 1 bit 4 asks for it): the floor limit (10.6.1), random
transaction selection (10.6.2, with the draw the runtime put in the transaction),
velocity checking (10.6.3: GET DATA of the ATC 9F36 and the last online ATC 9F13
when the card has both LCOL 9F14 and UCOL 9F23). The exception file is not kept. The
terminal's own offline rules (txn.offline_ok False) count as an exceeded floor limit,
and a merchant forcing the sale online sets its own bit.

Action analysis (10.7): TVR against TAC | IAC denial (AAC), then online (ARQC, on a
terminal that can go online), then default (when it cannot); IACs absent default to
zeros for denial and ones for online and default. A refund always asks an AAC."""

from __future__ import annotations

from collections.abc import Generator

from firmware.core.emv import tlv, tvr
from firmware.core.emv.context import Ctx, Reply, Step, apdu, send

AAC, TC, ARQC = 0x00, 0x40, 0x80  # GENERATE AC P1 bits 8-7 (Book 3 6.5.5, Table 12)


def terminal_risk(ctx: Ctx) -> Generator[Step, Reply, None]:
    if ctx.terminal.forced_online:
        ctx.set(tvr.FORCED_ONLINE)
    if not ctx.txn.offline_ok:
        ctx.set(tvr.FLOOR_LIMIT)  # the terminal's offline rules say online
    if not ctx.card[0x82][0] & 0x08:  # AIP byte 1 bit 4: not to be performed
        return
    params = ctx.params
    amount = ctx.txn.amount
    # 10.6.1 floor limit
    if amount >= params.floor_limit:
        ctx.set(tvr.FLOOR_LIMIT)
    # 10.6.2 random transaction selection, below the floor limit only
    if amount < params.floor_limit and _randomly_selected(ctx):
        ctx.set(tvr.RANDOM_ONLINE)
    # 10.6.3 velocity checking
    if params.velocity and ctx.card.get(0x9F14) and ctx.card.get(0x9F23):
        yield from _velocity(ctx)
    ctx.tsi_set(tvr.TSI_TERMINAL_RISK)


def _randomly_selected(ctx: Ctx) -> bool:
    """10.6.2: below the threshold the target percentage; from the threshold to the
    floor limit a percentage rising linearly to the maximum target."""
    p = ctx.params
    draw = ctx.txn.random_percent
    amount = ctx.txn.amount
    if amount < p.random_threshold:
        return draw <= p.random_target
    span = p.floor_limit - p.random_threshold
    if span <= 0:
        return False
    rise = (p.random_max_target - p.random_target) * (amount - p.random_threshold) / span
    return draw <= p.random_target + rise


def _velocity(ctx: Ctx) -> Generator[Step, Reply, None]:
    atc = yield from _get_data(ctx, 0x9F36)
    last = yield from _get_data(ctx, 0x9F13)
    if atc is None or last is None:  # either not returned: both limits exceeded
        ctx.set(tvr.LCOL_EXCEEDED)
        ctx.set(tvr.UCOL_EXCEEDED)
        return
    lcol = ctx.card[0x9F14][0]
    ucol = ctx.card[0x9F23][0]
    offline = atc - last
    if offline > lcol:
        ctx.set(tvr.LCOL_EXCEEDED)
    if offline > ucol:
        ctx.set(tvr.UCOL_EXCEEDED)
    if last == 0:
        ctx.set(tvr.NEW_CARD)


def _get_data(ctx: Ctx, tag: int) -> Generator[Step, Reply, int | None]:
    """GET DATA (Book 3 6.5.7) of a two-byte counter; None when not returned."""
    r = yield from send(ctx, apdu(0x80, 0xCA, tag >> 8, tag & 0xFF), f"GET DATA {tag:X}")
    if r.sw != 0x9000:
        return None
    try:
        objs = tlv.parse(r.data)
    except tlv.TlvError:
        return None
    if len(objs) != 1 or objs[0].tag != tag or len(objs[0].value) != 2:
        return None
    return int.from_bytes(objs[0].value, "big")


def _hits(tvr_: bytes, *codes: bytes) -> bool:
    return any(t & c for code in codes for t, c in zip(tvr_, code, strict=False))


def iacs(ctx: Ctx) -> tuple[bytes, bytes, bytes]:
    """(denial, online, default) as the card gave them, with 10.7's defaults."""
    def five(tag: int, default: bytes) -> bytes:
        v = ctx.card.get(tag)
        return v if v is not None and len(v) == 5 else default
    return five(0x9F0E, bytes(5)), five(0x9F0F, b"\xff" * 5), five(0x9F0D, b"\xff" * 5)


def online_capable(ctx: Ctx) -> bool:
    return ctx.terminal.type & 0x0F in (1, 2, 4, 5)  # Book 4 Annex A1


def action_analysis(ctx: Ctx) -> int:
    """10.7: the cryptogram to ask at the first GENERATE AC."""
    if ctx.txn.kind == "refund":
        return AAC
    p = ctx.params
    denial, online, default = iacs(ctx)
    t = bytes(ctx.tvr)
    if _hits(t, p.tac_denial, denial):
        ctx.extra[0x8A] = b"Z1"  # Book 4 6.3.6: offline declined
        return AAC
    if ctx.terminal.type & 0x0F in (1, 4):  # online only
        return ARQC
    if online_capable(ctx):
        if _hits(t, p.tac_online, online):
            return ARQC
        ctx.extra[0x8A] = b"Y1"
        return TC
    if _hits(t, p.tac_default, default):
        ctx.extra[0x8A] = b"Z1"
        return AAC
    ctx.extra[0x8A] = b"Y1"
    return TC


def default_analysis(ctx: Ctx) -> bool:
    """10.7 when online processing could not be done: True to approve (TC)."""
    _, _, default = iacs(ctx)
    return not _hits(bytes(ctx.tvr), ctx.params.tac_default, default)
