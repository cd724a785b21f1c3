"""Initiate application processing and read application data (EMV 4.4 Book 3 10.1,
10.2).

GET PROCESSING OPTIONS carries the PDOL's data in template 83 (an empty `8300`
without a PDOL). `6985` means "conditions of use not satisfied": the application is
removed and selection starts again (10.1). The answer is format 1 (80: AIP and AFL)
or format 2 (77 with 82 and 94). A missing or malformed AFL ends the transaction: a
hostile card never gets further than a clear CARD ERROR.

READ RECORD follows each AFL entry; records of SFI 1 to 10 must be 70 templates
whose primitive objects are kept (a primitive object twice in the records ends the
transaction, 10.2); the records marked for offline data authentication are kept as
read for `oda.static_data`. Count and size of records are capped. The mandatory data
5A, 5F24, 8C and 8D are checked last (10.2)."""

from __future__ import annotations

from collections.abc import Generator

from firmware.core.emv import tlv
from firmware.core.emv.context import (
    MAX_RECORD_BYTES, MAX_RECORDS, Ctx, Reply, Step, Stop, apdu, send,
)

MANDATORY = (0x5A, 0x5F24, 0x8C, 0x8D)  # Book 3 10.2, Table 28 (7.2)


def _error(detail: str) -> Stop:
    return Stop("terminated", "CARD ERROR", detail)


def gpo(ctx: Ctx) -> Generator[Step, Reply, bool]:
    """Book 3 10.1. False when the card answers 6985 (try another application)."""
    pdol = ctx.fci.get(0x9F38)
    try:
        data = ctx.dol(pdol) if pdol else b""
    except tlv.TlvError as e:
        raise _error(f"PDOL: {e}") from None
    ctx.pdol_data = data
    command = apdu(0x80, 0xA8, 0x00, 0x00, tlv.encode(0x83, data))
    r = yield from send(ctx, command, "GET PROCESSING OPTIONS")
    if r.sw == 0x6985:
        return False
    if r.sw != 0x9000:
        raise _error(f"GET PROCESSING OPTIONS: {r.sw:04X}")
    try:
        objs = tlv.parse(r.data)
    except tlv.TlvError as e:
        raise _error(f"GET PROCESSING OPTIONS: {e}") from None
    if len(objs) != 1:
        raise _error("GET PROCESSING OPTIONS: not one template")
    found: dict[int, bytes] = {}
    if objs[0].tag == 0x80:  # format 1: AIP (2) then AFL
        if len(objs[0].value) < 2:
            raise _error("GET PROCESSING OPTIONS: format 1 too short")
        found = {0x82: objs[0].value[:2], 0x94: objs[0].value[2:]}
    elif objs[0].tag == 0x77:  # format 2: BER-TLV objects
        for obj in objs[0].children:
            if obj.constructed:
                continue
            if obj.tag in found:
                raise _error(f"GET PROCESSING OPTIONS: {obj.tag:X} twice")
            found[obj.tag] = obj.value
    else:
        raise _error(f"GET PROCESSING OPTIONS: template {objs[0].tag:X}")
    aip = found.get(0x82)
    if aip is None or len(aip) != 2:
        raise _error("GET PROCESSING OPTIONS: no AIP")
    check_afl(found.get(0x94))
    ctx.card = dict(found)
    return True


def check_afl(afl: bytes | None) -> list[tuple[int, int, int, int]]:
    """The AFL's entries (SFI, first, last, records for ODA); raises Stop when absent or
    malformed (Book 3 10.2: SFI 1..30, first record >= 1, last >= first, ODA count
    within the range)."""
    if not afl or len(afl) % 4:
        raise _error("AFL missing or not a multiple of 4 bytes")
    entries = []
    for i in range(0, len(afl), 4):
        sfi, first, last, oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        if not 1 <= sfi <= 30 or first == 0 or last < first or oda > last - first + 1:
            raise _error(f"AFL entry {afl[i:i + 4].hex().upper()} is malformed")
        entries.append((sfi, first, last, oda))
    return entries


def read(ctx: Ctx) -> Generator[Step, Reply, None]:
    """Book 3 10.2: every record of the AFL, in order."""
    entries = check_afl(ctx.card.get(0x94))
    if sum(last - first + 1 for _, first, last, _ in entries) > MAX_RECORDS:
        raise _error("AFL names too many records")
    seen: set[int] = set()
    total = 0
    for sfi, first, last, oda in entries:
        for number in range(first, last + 1):
            r = yield from send(ctx, apdu(0x00, 0xB2, number, (sfi << 3) | 4),
                                f"READ RECORD {sfi}.{number}")
            if r.sw != 0x9000:
                raise _error(f"READ RECORD {sfi}.{number}: {r.sw:04X}")
            total += len(r.data)
            if total > MAX_RECORD_BYTES:
                raise _error("records too large")
            if number < first + oda:  # Book 3 10.3: marked for offline data authentication
                ctx.oda_records.append((sfi, r.data))
            if sfi > 10:
                continue  # 10.2: records of SFI 11..30 are not the terminal's to read
            _keep(ctx, r.data, seen, f"{sfi}.{number}")
    for tag in MANDATORY:
        if not ctx.card.get(tag):
            raise _error(f"mandatory {tag:X} missing")
    if pan(ctx) == "":
        raise _error("PAN (5A) is not a card number")


def _keep(ctx: Ctx, data: bytes, seen: set[int], where: str) -> None:
    try:
        objs = tlv.parse(data)
    except tlv.TlvError as e:
        raise _error(f"record {where}: {e}") from None
    if len(objs) != 1 or objs[0].tag != 0x70:
        raise _error(f"record {where} is not a 70 template")
    for obj in tlv.walk(objs[0].children):
        if obj.constructed:
            continue
        if obj.tag in seen or obj.tag in (0x82, 0x94):
            raise _error(f"record {where}: {obj.tag:X} redundant")
        seen.add(obj.tag)
        ctx.card[obj.tag] = obj.value


def pan(ctx: Ctx) -> str:
    """The PAN from 5A (cn: digits, trailing F), "" when it is not 12..19 digits."""
    digits = (ctx.card.get(0x5A) or b"").hex().upper().rstrip("F")
    return digits if digits.isdigit() and 12 <= len(digits) <= 19 else ""
