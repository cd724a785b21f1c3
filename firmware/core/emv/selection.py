"""Application selection (EMV 4.4 Book 1 section 12).

1. The candidate list (12.3): SELECT the Payment System Environment `1PAY.SYS.DDF01`
   and read its directory (12.3.2); if the card has no PSE (6A82), a blocked one
   (6283) or one that cannot be read, SELECT each AID the terminal supports (12.3.3),
   asking for the next occurrence (P2 = 02) of a partial AID. `6A81` to the PSE's
   SELECT means a blocked card (or one without SELECT): the card session ends.
2. The choice (12.4): candidates by their priority (87 bits 4-1, 1 first, none last);
   the cardholder picks when there are several or the only one asks for
   confirmation (87 bit 8). The final SELECT of the chosen ADF must answer 9000 with an
   FCI that parses; else that application is removed and the choice starts again.
"""

from __future__ import annotations

from collections.abc import Generator

from firmware.core.emv import tlv
from firmware.core.emv.context import (
    MAX_CANDIDATES, MAX_DIR_RECORDS, MAX_OCCURRENCES, CardGone, Candidate, Ctx, Reply, Step,
    Stop, apdu, send,
)
from firmware.core.emv.params import AidParams
from firmware.core.emv.steps import Choose

PSE = b"1PAY.SYS.DDF01"


def _select(aid: bytes, first: bool = True) -> bytes:
    # Book 1 11.3: SELECT by name, P2 00 first occurrence, 02 next occurrence
    return apdu(0x00, 0xA4, 0x04, 0x00 if first else 0x02, aid)


def _fci(data: bytes) -> dict[int, bytes] | None:
    """The primitive data objects of an FCI (Book 1 11.3.4: 6F with 84 and A5), or None
    when it does not parse or lacks 84 or A5."""
    try:
        objs = tlv.parse(data)
    except tlv.TlvError:
        return None
    if len(objs) != 1 or objs[0].tag != 0x6F:
        return None
    children = objs[0].children
    if not any(c.tag == 0x84 for c in children) or not any(c.tag == 0xA5 for c in children):
        return None
    out: dict[int, bytes] = {}
    for obj in tlv.walk(children):
        if not obj.constructed and obj.tag not in out:
            out[obj.tag] = obj.value
    return out


def _match(ctx: Ctx, adf: bytes) -> AidParams | None:
    """The terminal's AID that this ADF name matches (Book 1 12.3.1): the same, or longer
    and beginning with it when the terminal allows partial selection for it."""
    for params in ctx.terminal.aids:
        if adf == params.aid or (params.partial and adf.startswith(params.aid)):
            return params
    return None


def _text(raw: bytes) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in raw.decode("latin-1")).strip()


def _label(ctx: Ctx, info: dict[int, bytes], adf: bytes) -> str:
    """Book 1 12.4: the preferred name (9F12) when the terminal supports its issuer code
    table (9F11, 9F40 byte 5), else the label (50), else the AID."""
    index = info.get(0x9F11)
    add = ctx.terminal.additional
    if info.get(0x9F12) and index and len(add) >= 5 and index[0] in range(1, 9) \
            and add[4] & (1 << (index[0] - 1)):
        label = _text(info[0x9F12])
        if label:
            return label
    if info.get(0x50):
        label = _text(info[0x50])
        if label:
            return label
    return adf.hex().upper()


def _candidate(ctx: Ctx, adf: bytes, info: dict[int, bytes]) -> Candidate | None:
    params = _match(ctx, adf)
    if params is None or not 5 <= len(adf) <= 16:
        return None
    api = info.get(0x87, b"\x00")[:1] or b"\x00"
    return Candidate(adf, _label(ctx, info, adf), api[0] & 0x0F, bool(api[0] & 0x80), params)


def candidates(ctx: Ctx) -> Generator[Step, Reply, list[Candidate]]:
    """The candidate list (Book 1 12.3)."""
    found = yield from _from_pse(ctx)
    if not found:
        found = yield from _from_aids(ctx)
    return found


def _from_pse(ctx: Ctx) -> Generator[Step, Reply, list[Candidate]]:
    # Book 1 12.3.2: the PSE method
    r = yield from send(ctx, _select(PSE), "SELECT PSE")
    if r.sw == 0x6A81:  # 12.3.2 step 1: card blocked or SELECT not supported
        raise Stop("terminated", "CARD BLOCKED", "SELECT PSE: 6A81")
    if r.sw != 0x9000:  # 6A82 no PSE, 6283 PSE blocked, anything else: list of AIDs
        return []
    fci = _fci(r.data)
    sfi = fci.get(0x88) if fci else None
    if not sfi or len(sfi) != 1 or not 1 <= sfi[0] <= 30:
        return []  # 12.3.2 step 2: no usable directory, use the list of AIDs
    found: list[Candidate] = []
    for record in range(1, MAX_DIR_RECORDS + 1):
        r = yield from send(ctx, apdu(0x00, 0xB2, record, (sfi[0] << 3) | 4),
                            "READ RECORD (directory)")
        if r.sw == 0x6A83:  # 12.3.2 step 3: no more records
            break
        if r.sw != 0x9000:
            return []  # a faulty directory: the list of AIDs instead
        try:
            objs = tlv.parse(r.data)
        except tlv.TlvError:
            return []
        if len(objs) != 1 or objs[0].tag != 0x70:
            return []
        for entry in objs[0].children:  # 12.3.2 step 4: each 61 directory entry
            if entry.tag != 0x61:
                continue
            info: dict[int, bytes] = {}
            for obj in entry.children:
                if not obj.constructed:
                    info.setdefault(obj.tag, obj.value)
            adf = info.get(0x4F)
            cand = _candidate(ctx, adf, info) if adf else None
            if cand and len(found) < MAX_CANDIDATES and all(c.aid != cand.aid for c in found):
                found.append(cand)
    return found


def _from_aids(ctx: Ctx) -> Generator[Step, Reply, list[Candidate]]:
    # Book 1 12.3.3: the list of AIDs method
    found: list[Candidate] = []
    for params in ctx.terminal.aids:
        first = True
        for _ in range(MAX_OCCURRENCES):
            r = yield from send(ctx, _select(params.aid, first), "SELECT AID")
            first = False
            if r.sw == 0x6A81:  # 12.3.3 step 2: card blocked / SELECT not supported
                raise Stop("terminated", "CARD BLOCKED", "SELECT AID: 6A81")
            if r.sw not in (0x9000, 0x6283):
                break  # not on the card (6A82) or an error: the next terminal AID
            fci = _fci(r.data)
            if fci is None:
                break
            adf = fci.get(0x84, b"")
            if adf == params.aid:
                if r.sw == 0x9000:  # step 4: exact match; 6283 = blocked, not a candidate
                    cand = _candidate(ctx, adf, fci)
                    if cand and all(c.aid != adf for c in found):
                        found.append(cand)
                break
            if not adf.startswith(params.aid):
                break  # the card answered for another application: no use asking again
            if params.partial and r.sw == 0x9000:  # step 5: partial match
                cand = _candidate(ctx, adf, fci)
                if cand and all(c.aid != adf for c in found):
                    found.append(cand)
            # step 6: SELECT the next occurrence of the same terminal AID
    return found[:MAX_CANDIDATES]


def choose(ctx: Ctx, found: list[Candidate]) -> Generator[Step, Reply, Candidate]:
    """Book 1 12.4: order, let the cardholder choose, final SELECT; removes what fails.
    Sets ctx.app, ctx.fci and ctx.selected."""
    for _ in range(MAX_CANDIDATES + 1):
        if not found:
            raise Stop("terminated", "NOT ACCEPTED", "no common application")
        ordered = sorted(found, key=lambda c: c.priority or 16)  # stable: card order
        pick = ordered[0]
        if len(ordered) > 1 or pick.confirm:
            index = yield Choose(tuple(c.label for c in ordered))
            if not isinstance(index, int) or isinstance(index, bool) \
                    or not 0 <= index < len(ordered):
                raise Stop("cancelled", "CANCELLED", "cardholder cancelled the choice")
            pick = ordered[index]
        r = yield from send(ctx, _select(pick.aid), "SELECT application")
        fci = _fci(r.data) if r.sw == 0x9000 else None
        if fci is not None and fci.get(0x84) == pick.aid and _dol_ok(fci.get(0x9F38)):
            ctx.app, ctx.fci, ctx.selected = pick, fci, True
            return pick
        found.remove(pick)  # 12.4: not selectable; the choice starts again
    raise Stop("terminated", "NOT ACCEPTED", "selection did not converge")


def _dol_ok(dol: bytes | None) -> bool:
    if dol is None:
        return True
    try:
        tlv.parse_dol(dol)
    except tlv.TlvError:
        return False
    return True


__all__ = ["CardGone", "PSE", "candidates", "choose"]
