"""Offline data authentication (EMV 4.4 Book 3 10.3, Book 2 sections 5 and 6) and
processing restrictions (Book 3 10.4).

The method is the best that card and terminal share: CDA, else DDA, else SDA (AIP
byte 1 bits 1, 6, 7 against 9F33 byte 3 bits 4, 7, 8); none sets "offline data
authentication was not performed". The certificates and signatures are `oda`'s: this
module chooses the CA key (RID of the selected AID, index 8F), asks INTERNAL
AUTHENTICATE for DDA, and turns `oda.OdaError` into the TVR bit of the method. CDA's
signature is checked at GENERATE AC (`complete.py`) with the key recovered here.
`pin_key` gives offline enciphered PIN its key (Book 2 7.1), from ODA's keys or
recovered for it."""

from __future__ import annotations

from collections.abc import Generator
from datetime import date

from firmware.core.emv import oda, tlv, tvr
from firmware.core.emv.context import Ctx, Reply, Step, apdu, send
from firmware.core.emv.params import CaKey
from firmware.core.emv.records import pan

FAILED = {"SDA": tvr.SDA_FAILED, "DDA": tvr.DDA_FAILED, "CDA": tvr.CDA_FAILED}


def method(ctx: Ctx) -> str:
    """Book 3 10.3: CDA > DDA > SDA, when both AIP and terminal capabilities say so."""
    aip = ctx.card[0x82][0]
    caps = ctx.terminal.capabilities
    c3 = caps[2] if len(caps) > 2 else 0
    if aip & 0x01 and c3 & 0x08:
        return "CDA"
    if aip & 0x20 and c3 & 0x40:
        return "DDA"
    if aip & 0x40 and c3 & 0x80:
        return "SDA"
    return ""


def perform(ctx: Ctx) -> Generator[Step, Reply, None]:
    """Book 3 10.3: ODA with its TVR and TSI bits."""
    chosen = method(ctx)
    if not chosen:
        ctx.set(tvr.ODA_NOT_PERFORMED)
        return
    ctx.oda_method = chosen
    ctx.tsi_set(tvr.TSI_ODA)  # C6: "offline data authentication was performed"
    if chosen == "SDA":
        ctx.set(tvr.SDA_SELECTED)  # C5 byte 1 bit 2
    required = (0x8F, 0x90, 0x9F32) + ((0x93,) if chosen == "SDA" else (0x9F46, 0x9F47))
    if any(not ctx.card.get(tag) for tag in required):
        ctx.set(tvr.ICC_DATA_MISSING)  # 10.3: data the method needs is missing
        ctx.set(FAILED[chosen])
        return
    today = ctx.txn.local.date()
    ca = _ca_key(ctx, today)
    if ca is None:  # Book 2 5.2 / 6.2: no usable CA key -> the method failed
        ctx.set(FAILED[chosen])
        return
    card = ctx.card
    try:
        static = oda.static_data(ctx.oda_records, card.get(0x9F4A), card[0x82])
        issuer = oda.issuer_key(ca, card[0x90], card.get(0x92), card[0x9F32], pan(ctx),
                                today, ctx.terminal.revoked)
        ctx.issuer_public = issuer  # kept for offline enciphered PIN (Book 2 7.1)
        if chosen == "SDA":  # Book 2 5.4
            ctx.extra[0x9F45] = oda.verify_sda(issuer, card[0x93], static)
            return
        icc = oda.icc_key(issuer, card[0x9F46], card.get(0x9F48), card[0x9F47], static,
                          pan(ctx), today)
        ctx.icc_public = icc
    except oda.OdaError as exc:
        if isinstance(exc, oda.OdaMissing):  # a remainder the certificate needs
            ctx.set(tvr.ICC_DATA_MISSING)
        ctx.set(FAILED[chosen])
        return
    if chosen == "CDA":  # Book 2 6.6: the signature comes with GENERATE AC
        ctx.icc_key = icc
        return
    yield from _dda(ctx, icc)


def _ca_key(ctx: Ctx, today: date) -> CaKey | None:
    index = ctx.card[0x8F]
    assert ctx.app is not None
    key = ctx.terminal.ca_key(ctx.app.aid[:5], index[0]) if len(index) == 1 else None
    if key is None or key.expiry < today:
        return None
    return key


def pin_key(ctx: Ctx) -> oda.PublicKey | None:
    """Book 2 7.1: the key an offline PIN is enciphered under. The ICC PIN encipherment
    public key when the card has its certificate (9F2D, with 9F2E and 9F2F), else the
    ICC public key (9F46, 9F47, 9F48); either recovered with the issuer key and checked
    as 6.3 and 6.4 check them (the revocation list and the CA key's expiry included),
    reusing the keys ODA recovered. When ODA did not recover them (not performed, SDA,
    or it failed) they are recovered here from the card's data and the static data read.
    None when no key can be recovered: a card with a 9F2D that fails is not enciphered
    under its ICC key instead (7.1 makes the PIN encipherment key the one to use when
    present). The caller then fails the CVM."""
    card, today = ctx.card, ctx.txn.local.date()
    try:
        if card.get(0x9F2D):
            issuer = _issuer(ctx, today)
            exponent = card.get(0x9F2E)
            if issuer is None or not exponent:
                return None
            return oda.icc_pin_key(issuer, card[0x9F2D], card.get(0x9F2F), exponent,
                                   pan(ctx), today)
        if ctx.icc_public is not None:
            return ctx.icc_public
        if not card.get(0x9F46) or not card.get(0x9F47):
            return None
        issuer = _issuer(ctx, today)
        if issuer is None:
            return None
        static = oda.static_data(ctx.oda_records, card.get(0x9F4A), card[0x82])
        ctx.icc_public = oda.icc_key(issuer, card[0x9F46], card.get(0x9F48), card[0x9F47],
                                     static, pan(ctx), today)
        return ctx.icc_public
    except oda.OdaError:
        return None


def _issuer(ctx: Ctx, today: date) -> oda.PublicKey | None:
    """The issuer public key ODA recovered, else recovered now (Book 2 6.3); raises
    OdaError when its certificate fails."""
    if ctx.issuer_public is not None:
        return ctx.issuer_public
    card = ctx.card
    if any(not card.get(tag) for tag in (0x8F, 0x90, 0x9F32)):
        return None
    ca = _ca_key(ctx, today)
    if ca is None:
        return None
    ctx.issuer_public = oda.issuer_key(ca, card[0x90], card.get(0x92), card[0x9F32],
                                       pan(ctx), today, ctx.terminal.revoked)
    return ctx.issuer_public


def _dda(ctx: Ctx, icc: oda.PublicKey) -> Generator[Step, Reply, None]:
    """Book 2 6.5: INTERNAL AUTHENTICATE with the card's DDOL (9F49), else the AID's
    default DDOL; a DDOL without the unpredictable number (9F37) fails DDA (6.5.1)."""
    card_ddol = ctx.card.get(0x9F49)
    ddol = card_ddol if card_ddol is not None else ctx.params.ddol
    try:
        has_un = any(tag == 0x9F37 for tag, _ in tlv.parse_dol(ddol))
        data = ctx.dol(ddol)
    except tlv.TlvError:
        has_un, data = False, b""
    if not has_un or not data:
        if card_ddol is None:
            ctx.set(tvr.ICC_DATA_MISSING)  # no usable DDOL at all
        ctx.set(tvr.DDA_FAILED)
        return
    r = yield from send(ctx, apdu(0x00, 0x88, 0x00, 0x00, data), "INTERNAL AUTHENTICATE")
    sdad = _sdad(r.data) if r.sw == 0x9000 else None
    if sdad is None:
        ctx.set(tvr.DDA_FAILED)
        return
    try:
        ctx.extra[0x9F4C] = oda.verify_dda(icc, sdad, data)
    except oda.OdaError:
        ctx.set(tvr.DDA_FAILED)


def _sdad(data: bytes) -> bytes | None:
    """Book 2 6.5.1: format 1 (80: the signed data) or format 2 (77 with 9F4B)."""
    try:
        objs = tlv.parse(data)
    except tlv.TlvError:
        return None
    if len(objs) != 1:
        return None
    if objs[0].tag == 0x80:
        return objs[0].value or None
    if objs[0].tag == 0x77:
        return tlv.find(objs[0].children, 0x9F4B) or None
    return None


# -- processing restrictions, Book 3 10.4 --------------------------------------

def restrictions(ctx: Ctx) -> None:
    card = ctx.card
    # 10.4.1 application version number
    version = card.get(0x9F08)
    if version is not None and version != ctx.params.version:
        ctx.set(tvr.VERSION_DIFFERENT)
    # 10.4.2 application usage control
    auc = card.get(0x9F07)
    if auc is not None and len(auc) == 2 and not _auc_allows(ctx, auc):
        ctx.set(tvr.SERVICE_NOT_ALLOWED)
    # 10.4.3 effective and expiration dates
    today = ctx.txn.local.strftime("%Y%m%d")
    effective = _date(card.get(0x5F25))
    if card.get(0x5F25) is not None and (effective is None or effective > today):
        ctx.set(tvr.NOT_EFFECTIVE)
    expiry = _date(card.get(0x5F24))
    if expiry is None or expiry < today:
        ctx.set(tvr.EXPIRED)


def _auc_allows(ctx: Ctx, auc: bytes) -> bool:
    """10.4.2: not at an ATM unless valid at ATMs, else valid at other terminals; the
    issuer's country (5F28) against the terminal's says domestic or international; a
    purchase needs goods or services allowed for that (a refund is checked only for
    the kind of terminal: AUC has no refund bit)."""
    atm = ctx.terminal.type in (0x14, 0x15, 0x16) and bool(ctx.terminal.additional[:1]
                                                         and ctx.terminal.additional[0] & 0x80)
    if not (auc[0] & (0x02 if atm else 0x01)):  # byte 1 bit 2 ATMs, bit 1 other terminals
        return False
    country = ctx.card.get(0x5F28)
    if country is None or ctx.txn.kind == "refund":
        return True
    domestic = country.hex() == ctx.terminal.country.lower()
    goods, services = (0x20, 0x08) if domestic else (0x10, 0x04)  # byte 1 bits 6/4, 5/3
    return bool(auc[0] & (goods | services))


def _date(raw: bytes | None) -> str | None:
    """YYMMDD (n6) as YYYYMMDD, YY < 50 being 20YY (Book 3 10.4.3); None when invalid."""
    if raw is None or len(raw) != 3:
        return None
    digits = raw.hex()
    if not digits.isdigit():
        return None
    year = int(digits[:2])
    return f"{2000 + year if year < 50 else 1900 + year}{digits[2:]}"
