"""A test chip card's transaction commands (EMV 4.4 Book 3 6.5, 10; Book 2 6, 8):
GET PROCESSING OPTIONS, INTERNAL AUTHENTICATE, GENERATE AC (first and second),
EXTERNAL AUTHENTICATE, GET DATA, VERIFY.

`Memory` is what the card keeps between transactions (ATC, last online ATC, PIN and
its try counter, blocked applications); `Session` is one transaction's state, cleared
at every reset and SELECT. Each command returns (data, status word) or raises `Sw`.

The card's risk management (its own, not the terminal's):
- first GENERATE AC: never more than asked (TC > ARQC > AAC). An AAC when asked for
  one, when the application is blocked, or for the `aac-first` profile; an ARQC when
  asked; to a TC request an ARQC when the card is online only, the amount is above its
  offline limit, ATC - last online ATC exceeds UCOL, or it has never been online
  (last online ATC 0); else a TC.
- second GENERATE AC (only after an ARQC): an AAC when asked; with 8A `Y3` (host
  unreachable, terminal approves) a TC unless the card is online only; with 8A `00`
  a TC when issuer authentication passed (EXTERNAL AUTHENTICATE, or 91 in CDOL2)
  or is not required, and the last online ATC becomes the ATC; any other 8A: AAC.
- Cryptograms per host-interface 8.2 (`emvkeys`), over CDOL values of 9F02 9F03 9F1A
  95 5F2A 9A 9C 9F37, the AIP, the ATC and the issuer application data (9F10, Visa
  CVN 10 layout: 06 DKI 0A CVR(4); CVR byte 2 the cryptograms and offline PIN, byte 3
  PIN try limit exceeded, byte 4 the number of issuer script commands).
- CDA (Book 2 6.6) when P1 bit 5 asks for it, the AIP has it, and the answer is a TC
  or an ARQC: format 2 with 9F4B instead of 9F26.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from firmware.core.emv.tlv import TlvError, encode, encode_all, parse, parse_dol
from hwsim import emvca, emvkeys
from hwsim.chipfiles import AppFiles
from hwsim.chipprofiles import Profile

AAC, TC, ARQC = 0x00, 0x40, 0x80
PIN_TRY_LIMIT = 3
ARC_APPROVED, ARC_Y3, ARC_Z3 = b"00", b"Y3", b"Z3"


class Sw(Exception):
    """Answer with this status word and no data."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


@dataclass
class Memory:
    """What the card remembers between transactions."""

    atc: int
    last_online_atc: int
    pin: str
    pin_tries: int
    blocked: set[bytes] = field(default_factory=set)  # AIDs
    card_blocked: bool = False
    mk: bytes = field(repr=False, default=b"")  # ICC master key (AC)


@dataclass
class Session:
    """One transaction's state: cleared at reset and at every SELECT."""

    app: AppFiles | None = None
    pse: bool = False
    gpo_done: bool = False
    pdol_data: bytes = b""
    cdol1_data: bytes = b""
    first: int | None = None  # CID of the first GENERATE AC
    second: int | None = None
    arqc: bytes = b""
    sk: bytes = field(repr=False, default=b"")
    issuer_auth: bool | None = None  # None: not performed
    ext_auth_tried: bool = False
    challenge: bytes | None = field(repr=False, default=None)
    offline_pin: bool | None = None  # None: not performed; False: failed
    scripts: int = 0


def dol_values(dol: bytes, data: bytes) -> dict[int, bytes]:
    """The values a terminal sent for `dol`; Sw 6700 when the length is not the DOL's."""
    try:
        pairs = parse_dol(dol)
    except TlvError as exc:  # our own DOLs always parse
        raise Sw(0x6F00) from exc
    if len(data) != sum(length for _, length in pairs):
        raise Sw(0x6700)
    out: dict[int, bytes] = {}
    i = 0
    for tag, length in pairs:
        out[tag] = data[i:i + length]
        i += length
    return out


def _answer(fmt: int, items: list[tuple[int, bytes]]) -> bytes:
    """Response format 1 (80: the values concatenated) or 2 (77: the data objects)."""
    if fmt == 1:
        return encode(0x80, b"".join(v for _, v in items))
    return encode(0x77, encode_all(items))


def _app(sess: Session) -> AppFiles:
    if sess.app is None:
        raise Sw(0x6985)
    return sess.app


def gpo(profile: Profile, mem: Memory, sess: Session, p1: int, p2: int,
        data: bytes) -> tuple[bytes, int]:
    """GET PROCESSING OPTIONS (Book 3 6.5.8): the PDOL data in template 83."""
    if p1 or p2:
        raise Sw(0x6A86)
    app = _app(sess)
    if sess.gpo_done or app.aid in mem.blocked:
        raise Sw(0x6985)
    try:
        tlvs = parse(data)
    except TlvError as exc:
        raise Sw(0x6A80) from exc
    if len(tlvs) != 1 or tlvs[0].tag != 0x83:
        raise Sw(0x6A80)
    values = dol_values(app.pdol, tlvs[0].value)
    if profile.fault == "gpo-6985" and 0x9F1A in values and values[0x9F1A] != b"\x08\x40":
        raise Sw(0x6985)  # conditions of use not satisfied: this country is refused
    sess.gpo_done = True
    sess.pdol_data = tlvs[0].value
    sw = 0x9001 if profile.fault == "wrong-sw" else 0x9000
    if profile.fault == "gpo-no-afl":
        return encode(0x77, encode(0x82, app.aip)), sw
    if profile.gpo_format == 1:
        return encode(0x80, app.aip + app.afl), sw
    return encode(0x77, encode_all([(0x82, app.aip), (0x94, app.afl)])), sw


def get_data(mem: Memory, sess: Session, p1: int, p2: int) -> tuple[bytes, int]:
    """GET DATA (Book 3 6.5.7): ATC, last online ATC, PIN try counter."""
    _app(sess)
    tag = p1 << 8 | p2
    values = {0x9F36: mem.atc.to_bytes(2, "big"),
              0x9F13: mem.last_online_atc.to_bytes(2, "big"),
              0x9F17: bytes([mem.pin_tries])}
    if tag not in values:
        raise Sw(0x6A88)
    return encode(tag, values[tag]), 0x9000


def internal_authenticate(profile: Profile, sess: Session, p1: int, p2: int,
                          data: bytes) -> tuple[bytes, int]:
    """INTERNAL AUTHENTICATE (Book 3 6.5.9, Book 2 6.5): the SDAD over the DDOL data."""
    app = _app(sess)
    if app.icc_key is None:
        raise Sw(0x6D00)  # an SDA card has no such command
    if p1 or p2:
        raise Sw(0x6A86)
    if not data:
        raise Sw(0x6700)
    if not sess.gpo_done:
        raise Sw(0x6985)
    sdad = emvca.sdad_dda(app.icc_key, os.urandom(8), data,
                          corrupt=profile.fault == "bad-sdad")
    return _answer(profile.gpo_format, [(0x9F4B, sdad)]), 0x9000


def _pin_ok(block: bytes, pin: str) -> bool | None:
    """A plaintext PIN block (Book 3 6.5.12: control 2, length, BCD digits, F padding)
    against the card's PIN; None when the block is not one."""
    nibbles = block.hex().upper()
    if len(block) != 8 or nibbles[0] != "2":
        return None
    n = int(nibbles[1], 16)
    digits, pad = nibbles[2:2 + n], nibbles[2 + n:]
    if not 4 <= n <= 12 or not digits.isdigit() or pad != "F" * len(pad):
        return None
    return digits == pin


def verify(mem: Memory, sess: Session, p1: int, p2: int, data: bytes) -> tuple[bytes, int]:
    """VERIFY (Book 3 6.5.12): P2 80 plaintext, 88 enciphered (Book 2 7.2) under the ICC
    key (the test cards have no separate PIN encipherment key)."""
    app = _app(sess)
    if p1 or p2 not in (0x80, 0x88):
        raise Sw(0x6A86)
    if p2 == 0x88 and app.icc_key is None:
        raise Sw(0x6A86)
    if mem.pin_tries == 0:
        raise Sw(0x6983)
    if p2 == 0x80:
        block = data
    else:
        if len(data) != app.icc_key.size:  # type: ignore[union-attr]
            raise Sw(0x6700)
        challenge, sess.challenge = sess.challenge, None
        if challenge is None:
            raise Sw(0x6985)
        plain = emvca.decipher_pin(app.icc_key, data)  # type: ignore[arg-type]
        if plain[0] != 0x7F or plain[9:17] != challenge:
            raise Sw(0x6A80)  # Book 2 7.2: not enciphered for this card and challenge
        block = plain[1:9]
    ok = _pin_ok(block, mem.pin)
    if ok is None:
        raise Sw(0x6A80)
    if ok:
        mem.pin_tries = PIN_TRY_LIMIT
        sess.offline_pin = True
        return b"", 0x9000
    mem.pin_tries -= 1
    sess.offline_pin = False
    return b"", 0x63C0 | mem.pin_tries


def _cvr(mem: Memory, sess: Session, first: int, second: int | None) -> bytes:
    b2 = {AAC: 0x00, TC: 0x10, ARQC: 0x20}[first]
    b2 |= 0x80 if second is None else {AAC: 0x00, TC: 0x40}[second]
    if sess.issuer_auth is False:
        b2 |= 0x08
    if sess.offline_pin is not None:
        b2 |= 0x04 | (0x02 if sess.offline_pin is False else 0)
    b3 = 0x80 if mem.pin_tries == 0 else 0x00
    b4 = min(sess.scripts, 15) << 4
    return bytes([0x03, b2, b3, b4])


def _first_decision(profile: Profile, mem: Memory, app: AppFiles, asked: int,
                    values: dict[int, bytes]) -> int:
    if app.aid in mem.blocked or profile.fault == "aac-first" or asked == AAC:
        return AAC
    if asked == ARQC:
        return ARQC
    amount = int(values[0x9F02].hex())
    if (profile.online_only or amount > profile.offline_limit or mem.last_online_atc == 0
            or mem.atc - mem.last_online_atc > profile.ucol):
        return ARQC
    return TC


def _second_decision(profile: Profile, mem: Memory, sess: Session, app: AppFiles,
                     asked: int, values: dict[int, bytes]) -> int:
    arc = values.get(0x8A, b"")
    if asked == AAC or app.aid in mem.blocked:
        return AAC
    if arc == ARC_Y3:
        return AAC if profile.online_only else TC
    if arc != ARC_APPROVED:
        return AAC
    if 0x91 in values:  # issuer authentication in the second GENERATE AC
        iad = values[0x91]
        sess.issuer_auth = emvkeys.arpc(sess.sk, sess.arqc, iad[8:10]) == iad[:8]
    required = profile.issuer_auth_required and bool(app.aip[0] & 0x04 or 0x91 in values)
    if sess.issuer_auth is False or (required and sess.issuer_auth is None):
        return AAC
    return TC


def generate_ac(profile: Profile, mem: Memory, sess: Session, p1: int, p2: int,
                data: bytes) -> tuple[bytes, int]:
    """GENERATE AC (Book 3 6.5.5): P1 bits 8-7 the cryptogram asked for, bit 5 CDA."""
    app = _app(sess)
    if p2 or p1 & 0x2F or p1 & 0xC0 == 0xC0:
        raise Sw(0x6A86)
    if not sess.gpo_done:
        raise Sw(0x6985)
    asked = p1 & 0xC0
    first = sess.first is None
    if not first and (sess.first != ARQC or sess.second is not None):
        raise Sw(0x6985)
    if not first and asked == ARQC:
        raise Sw(0x6A86)  # the second GENERATE AC asks for a TC or an AAC
    values = dol_values(app.cdol1 if first else app.cdol2, data)
    if first:
        if mem.atc >= 0xFFFF:
            raise Sw(0x6985)
        mem.atc += 1
        sess.cdol1_data = data
        sess.sk = emvkeys.session_key(mem.mk, mem.atc)
        cid = _first_decision(profile, mem, app, asked, values)
        sess.first = cid
        cvr = _cvr(mem, sess, cid, None)
        cdol_data = data
    else:
        cid = _second_decision(profile, mem, sess, app, asked, values)
        sess.second = cid
        if cid == TC and values.get(0x8A) == ARC_APPROVED or sess.issuer_auth:
            mem.last_online_atc = mem.atc
        cvr = _cvr(mem, sess, sess.first or AAC, cid)
        cdol_data = sess.cdol1_data + data
    atc = mem.atc.to_bytes(2, "big")
    iad = bytes([0x06, 0x01, 0x0A]) + cvr
    ac = emvkeys.cryptogram(sess.sk, emvkeys.cryptogram_data(
        {**values, 0x82: app.aip, 0x9F36: atc, 0x9F10: iad}))
    if first and cid == ARQC:
        sess.arqc = ac
    cda = bool(p1 & 0x10) and bool(app.aip[0] & 0x01) and cid != AAC
    if cda and app.icc_key is not None:
        signed = encode_all([(0x9F27, bytes([cid])), (0x9F36, atc), (0x9F10, iad)])
        hash_code = emvca.transaction_hash(sess.pdol_data, cdol_data, signed)
        sdad = emvca.sdad_cda(app.icc_key, os.urandom(8), cid, ac, hash_code,
                              values[0x9F37], corrupt=profile.fault == "bad-sdad")
        return encode(0x77, encode_all([(0x9F27, bytes([cid])), (0x9F36, atc),
                                        (0x9F4B, sdad), (0x9F10, iad)])), 0x9000
    return _answer(profile.gpo_format, [(0x9F27, bytes([cid])), (0x9F36, atc),
                                        (0x9F26, ac), (0x9F10, iad)]), 0x9000


def external_authenticate(sess: Session, p1: int, p2: int, data: bytes) -> tuple[bytes, int]:
    """EXTERNAL AUTHENTICATE (Book 3 6.5.4): the issuer authentication data of tag 91,
    ARPC (8) and ARC (2), checked by method 1 (Book 2 8.2.1): 9000 or 6300."""
    if p1 or p2:
        raise Sw(0x6A86)
    if not 8 <= len(data) <= 16 or len(data) < 10:
        raise Sw(0x6700)
    if sess.first != ARQC or sess.second is not None or sess.ext_auth_tried:
        raise Sw(0x6985)
    sess.ext_auth_tried = True
    sess.issuer_auth = emvkeys.arpc(sess.sk, sess.arqc, data[8:10]) == data[:8]
    return b"", 0x9000 if sess.issuer_auth else 0x6300
