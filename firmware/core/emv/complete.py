"""Card action analysis and completion (EMV 4.4 Book 3 9.2, 10.8, 10.9, 10.10; Book 4
6.3.7 to 6.3.9; host-interface 8.1).

The first GENERATE AC asks the cryptogram of action analysis with CDOL1's data (P1
bit 5 asks the CDA signature when CDA is to be verified). The card may answer less
than asked (TC -> ARQC -> AAC), never more. A TC ends the transaction approved (Y1),
an AAC declined; a refund's AAC goes online (host-interface 8.1: its cryptogram is
not checked) and ends with the host's word, without a second GENERATE AC.

An ARQC goes online. The host's answer: issuer authentication data (91) goes to
EXTERNAL AUTHENTICATE when the AIP supports issuer authentication and CDOL2 does not
ask for 91 (else it travels in CDOL2); scripts 71 run before and 72 after the second
GENERATE AC; the ARC (8A) is the response code, or Y3/Z3 when the host could not be
reached (default action analysis and the terminal's offline rules), Z3 when the
outcome is unknown. The second GENERATE AC asks a TC or an AAC; its answer is final."""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass, replace

from firmware.core.emv import oda, tlv, tvr
from firmware.core.emv.context import CardGone, Ctx, Reply, Step, Stop, apdu, send
from firmware.core.emv.field55 import chip_data
from firmware.core.emv.riskmgmt import AAC, ARQC, TC, default_analysis
from firmware.core.emv.steps import ChipData, HostReply, Online, Outcome

MAX_SCRIPT_COMMANDS = 16
RANK = {AAC: 0, ARQC: 1, TC: 2}
NAMES = {AAC: "AAC", ARQC: "ARQC", TC: "TC"}


@dataclass(frozen=True)
class Answer:
    cid: int
    atc: bytes
    ac: bytes
    iad: bytes
    cda_ok: bool = True  # with CDA: the signature verified (Book 2 6.6.2)


def _failed(detail: str) -> Stop:
    return Stop("failed", "CARD ERROR", detail)


def generate_ac(ctx: Ctx, ask: int, dol_tag: int) -> Generator[Step, Reply, Answer]:
    """One GENERATE AC (Book 3 6.5.5) and its answer checked; raises Stop."""
    which = "first" if dol_tag == 0x8C else "second"
    try:
        if any(tag == 0x98 for tag, _ in tlv.parse_dol(ctx.card[dol_tag])):
            _tc_hash(ctx)
        data = ctx.dol(ctx.card[dol_tag])
        ctx.used = {tag: ctx.get(tag) or b"" for tag, _ in tlv.parse_dol(ctx.card[dol_tag])}
    except tlv.TlvError as e:
        raise Stop("terminated" if which == "first" else "failed", "CARD ERROR",
                   f"{'CDOL1' if which == 'first' else 'CDOL2'}: {e}") from None
    cda = ctx.icc_key is not None and ask != AAC  # Book 2 6.6: no CDA for an AAC
    r = yield from send(ctx, apdu(0x80, 0xAE, ask | (0x10 if cda else 0), 0x00, data),
                        f"GENERATE AC ({which}, {NAMES[ask]})")
    if r.sw != 0x9000:
        raise _failed(f"GENERATE AC ({which}): {r.sw:04X}")
    answer = _parse(r.data)
    kind = answer.cid & 0xC0
    if kind not in RANK or RANK[kind] > RANK[ask] or (which == "second" and kind == ARQC):
        raise _failed(f"GENERATE AC ({which}): {answer.cid:02X} to a {NAMES[ask]} request")
    if which == "first":
        ctx.cdol1_data = data
    if cda and kind != AAC:
        # Book 2 6.6.2 step 9: at the second GENERATE AC the hash covers CDOL1 and CDOL2
        answer = _cda(ctx, answer, r.data, data if which == "first" else ctx.cdol1_data + data)
    ctx.card[0x9F36] = answer.atc
    ctx.chip = chip_data(ctx, answer.cid, answer.ac, answer.atc, answer.iad)
    return answer


def _parse(data: bytes) -> Answer:
    """Format 1 (80: CID 1, ATC 2, AC 8, IAD) or format 2 (77: 9F27, 9F36, 9F26 or
    9F4B, 9F10); Book 3 6.5.5.4."""
    try:
        objs = tlv.parse(data)
    except tlv.TlvError as e:
        raise _failed(f"GENERATE AC: {e}") from None
    if len(objs) == 1 and objs[0].tag == 0x80:
        v = objs[0].value
        if not 11 <= len(v) <= 43:
            raise _failed("GENERATE AC: format 1 of a wrong length")
        return Answer(v[0], v[1:3], v[3:11], v[11:])
    if len(objs) == 1 and objs[0].tag == 0x77:
        children = objs[0].children
        cid = tlv.find(children, 0x9F27)
        atc = tlv.find(children, 0x9F36)
        ac = tlv.find(children, 0x9F26) or b""
        if cid is None or len(cid) != 1 or atc is None or len(atc) != 2 \
                or (ac and len(ac) != 8) or (not ac and tlv.find(children, 0x9F4B) is None):
            raise _failed("GENERATE AC: format 2 lacks CID, ATC or the cryptogram")
        return Answer(cid[0], atc, ac, tlv.find(children, 0x9F10) or b"")
    raise _failed("GENERATE AC: neither format 1 nor format 2")


def _cda(ctx: Ctx, answer: Answer, raw: bytes, cdol: bytes) -> Answer:
    """Book 2 6.6.2: the signature verified, the cryptogram recovered from 9F4B (format 2
    only). A failure sets "CDA failed"; the caller declines (Book 3 10.8)."""
    try:
        objs = tlv.parse(raw)[0].children
        sdad = tlv.find(objs, 0x9F4B)
        if not sdad or ctx.icc_key is None:
            raise oda.OdaError("no signed dynamic application data")
        ac = oda.verify_cda(ctx.icc_key, sdad, ctx.txn.unpredictable, answer.cid,
                            oda.genac_without_sdad(raw), ctx.pdol_data, cdol)
    except oda.OdaError:
        ctx.set(tvr.CDA_FAILED)
        return replace(answer, cda_ok=False)
    return replace(answer, ac=ac)


def _tc_hash(ctx: Ctx) -> None:
    """Book 3 5.4 / 9.2.2: TC hash value (98) over the TDOL's data, the AID's default
    TDOL when the card has none (TVR "default TDOL used")."""
    tdol = ctx.card.get(0x97)
    if tdol is None and ctx.params.tdol:
        tdol = ctx.params.tdol
        ctx.set(tvr.DEFAULT_TDOL)
    try:
        data = ctx.dol(tdol) if tdol else b""
    except tlv.TlvError:
        data = b""
    ctx.extra[0x98] = hashlib.sha1(data).digest()


def first(ctx: Ctx, ask: int) -> Generator[Step, Reply, Outcome]:
    """Book 3 10.8: the first GENERATE AC and what its answer means."""
    answer = yield from generate_ac(ctx, ask, 0x8C)
    kind = answer.cid & 0xC0
    ctx.tsi_set(tvr.TSI_CARD_RISK)
    if ctx.txn.kind == "refund":  # host-interface 8.1: online with the AAC
        reply = yield Online(_chip(ctx))
        ctx.online = True
        code = reply.code if isinstance(reply, HostReply) and reply.kind == "answered" else ""
        if code == "00":
            return outcome(ctx, "approved", "second", "APPROVED")
        return outcome(ctx, "declined", "second", "DECLINED")
    if kind == AAC and answer.cid & 0x0F == 0x09:
        # CID advice + reason "service not allowed": Book 4 6.3.7 Table 3
        return outcome(ctx, "declined", "first", "NOT ACCEPTED")
    if kind == AAC or (kind == TC and not answer.cda_ok):
        return outcome(ctx, "declined", "first", "DECLINED")
    if kind == TC:
        return outcome(ctx, "approved", "first", "APPROVED")
    if not answer.cda_ok:
        # Book 2 6.6.2: CDA failed on an ARQC: declined offline, the card closed with an AAC
        ctx.extra[0x8A] = b"Z1"
        result = yield from second(ctx, AAC, "DECLINED")
        return replace(result, decision="declined", stage="first")  # never went online
    reply = yield Online(_chip(ctx))
    ctx.online = True
    return (yield from online(ctx, reply))


def _chip(ctx: Ctx) -> ChipData:
    assert ctx.chip is not None
    return ctx.chip


def online(ctx: Ctx, reply: Reply) -> Generator[Step, Reply, Outcome]:
    """Book 3 10.9 with host-interface 8.1's outcomes."""
    if not isinstance(reply, HostReply):
        reply = HostReply("unknown")
    scripts: list[tlv.Tlv] = []
    if reply.kind == "answered":
        data = _host_data(reply.field55)
        scripts = [t for t in data if t.tag in (0x71, 0x72)]
        iad = next((t.value for t in data if t.tag == 0x91), None)
        if iad is not None:
            yield from _issuer_auth(ctx, iad)
        code = (reply.code.encode("ascii", "replace") + b"  ")[:2]
        ctx.extra[0x8A] = code
        ask = TC if reply.code == "00" else AAC
    elif reply.kind == "unreachable":  # 10.7 default analysis; TVR unchanged
        approve = default_analysis(ctx) and reply.offline_ok
        ctx.extra[0x8A] = b"Y3" if approve else b"Z3"
        ask = TC if approve else AAC
    else:  # unknown: reversed, never approved offline
        ctx.extra[0x8A] = b"Z3"
        ask = AAC
    yield from _scripts(ctx, [s for s in scripts if s.tag == 0x71], tvr.SCRIPT_FAILED_BEFORE)
    host_ok = reply.kind == "answered" and reply.code == "00"
    result = yield from second(ctx, ask, "DECLINED BY CARD" if host_ok else "DECLINED")
    try:
        yield from _scripts(ctx, [s for s in scripts if s.tag == 0x72],
                            tvr.SCRIPT_FAILED_AFTER)
    except CardGone:
        # the card's final word is in; a card removed during the scripts that follow it
        # fails those scripts, not the transaction (Book 3 10.10)
        ctx.set(tvr.SCRIPT_FAILED_AFTER)
    return _refresh(ctx, result)


def second(ctx: Ctx, ask: int, declined: str) -> Generator[Step, Reply, Outcome]:
    answer = yield from generate_ac(ctx, ask, 0x8D)
    if answer.cid & 0xC0 == TC and answer.cda_ok:
        return outcome(ctx, "approved", "second", "APPROVED")
    return outcome(ctx, "declined", "second", declined)


def _host_data(field55: bytes) -> tuple[tlv.Tlv, ...]:
    try:
        return tlv.parse(field55)
    except tlv.TlvError:
        return ()  # 10.9: unusable issuer data is treated as absent


def _issuer_auth(ctx: Ctx, iad: bytes) -> Generator[Step, Reply, None]:
    """10.9: EXTERNAL AUTHENTICATE when the AIP supports it and CDOL2 does not carry 91."""
    ctx.extra[0x91] = iad
    try:
        in_cdol2 = any(tag == 0x91 for tag, _ in tlv.parse_dol(ctx.card[0x8D]))
    except tlv.TlvError:
        in_cdol2 = False
    if not ctx.card[0x82][0] & 0x04 or in_cdol2:
        return  # the card checks 91 itself in the second GENERATE AC (or not at all)
    if not 8 <= len(iad) <= 16:
        ctx.set(tvr.ISSUER_AUTH_FAILED)
        return
    r = yield from send(ctx, apdu(0x00, 0x82, 0x00, 0x00, iad, le=False),
                        "EXTERNAL AUTHENTICATE")
    ctx.tsi_set(tvr.TSI_ISSUER_AUTH)
    if r.sw != 0x9000:
        ctx.set(tvr.ISSUER_AUTH_FAILED)


def _scripts(ctx: Ctx, scripts: list[tlv.Tlv], failed_bit: tvr.Bit) -> Generator[
        Step, Reply, None]:
    """10.10, Book 4 6.3.9 and A5: each 86 command in order; a status other than 90xx,
    62xx, 63xx stops that script. 9F5B gets 5 bytes per script."""
    for script in scripts:
        ident = tlv.find(script.children, 0x9F18) or bytes(4)
        commands = [c.value for c in script.children if c.tag == 0x86]
        result = 0x20  # successful
        for number, command in enumerate(commands[:MAX_SCRIPT_COMMANDS], start=1):
            if len(command) < 4:
                result = 0x10 | min(number, 15)
                break
            r = yield from send(ctx, command, "ISSUER SCRIPT")
            if r.sw >> 8 not in (0x90, 0x62, 0x63):
                result = 0x10 | min(number, 15)
                break
        if not commands:
            result = 0x10
        if result & 0xF0 == 0x10:
            ctx.set(failed_bit)
        ctx.tsi_set(tvr.TSI_SCRIPT)
        ctx.script_results += bytes([result]) + (ident + bytes(4))[:4]


def _refresh(ctx: Ctx, result: Outcome) -> Outcome:
    """The outcome with TVR/TSI after the scripts that followed the last cryptogram."""
    if ctx.chip is None:
        return result
    return outcome(ctx, result.decision, result.stage, result.message)


def outcome(ctx: Ctx, decision: str, stage: str, message: str, detail: str = "") -> Outcome:
    chip = ctx.chip
    if chip is not None:
        chip = replace(chip, tvr=bytes(ctx.tvr).hex().upper(),
                       tsi=bytes(ctx.tsi).hex().upper())
    return Outcome(decision, stage, message, detail, chip, bytes(ctx.script_results),
                   ctx.apdus, ctx.moved)
