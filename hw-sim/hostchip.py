"""The simulated host's chip rules: fields 22, 23, 52, 53 and 55 (host-interface 1.2,
sections 4, 7, 8.1, 8.2, 9).

`Books` (ledger.py) calls these in the order section 7 gives: `check_format` first
(any format error is answered `30` before anything else), then, for a 0200 after the
busy cents conventions (`91`, `96`), `check_icc` (field 55 malformed or inconsistent:
`30`) and `verify` (a wrong cryptogram or an application whose keys the host does not
hold: `05`); PIN checks come after (a hook in `Books`), then the other cents
conventions. `issuer_data` builds the 0210's field 55: tag 91 (ARPC || ARC, EMV 4.4
Book 2 8.2.1 method 1) and, when a test asked for them, issuer scripts (templates 71
and 72, Book 3 10.10).

Field 55 is parsed strictly: BER-TLV (Book 3 Annex B) with minimal lengths (one byte
for 0-127, `81` and one byte for 128-255), no padding, each top-level tag once, at
most 255 bytes. Card data that fields 2, 14 and 35 carry, and PIN data, never belong
in it: such a tag is a format error, and the wire log never shows its value
(`hostproto.icc_view`). No I/O here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from firmware.core.emv import tlv

from . import emvkeys
from .hostproto import ICC_CARD_DATA, FormatProblem, Message

log = logging.getLogger("hwsim.host")

PURCHASE: Final = "000000"
REFUND: Final = "200000"
MAX_ICC: Final = 255
MAX_SCRIPTS: Final = 128
TEST_SCHEME: Final = "F000000001"  # the RID of the test cards' AIDs (hardware.md)

# 8.1: the mandatory data objects of a 0200/0220's field 55, with their lengths
# (Book 3 Annex A), and the optional ones the host reads.
MANDATORY: Final[Mapping[int, tuple[int, int]]] = {
    0x9F26: (8, 8), 0x9F27: (1, 1), 0x9F10: (1, 32), 0x9F37: (4, 4), 0x9F36: (2, 2),
    0x95: (5, 5), 0x9A: (3, 3), 0x9C: (1, 1), 0x9F02: (6, 6), 0x9F03: (6, 6),
    0x5F2A: (2, 2), 0x82: (2, 2), 0x9F1A: (2, 2), 0x9F34: (3, 3), 0x9F33: (3, 3),
    0x9F35: (1, 1), 0x84: (5, 16),
}  # fmt: skip
OPTIONAL: Final[Mapping[int, tuple[int, int]]] = {
    0x5F34: (1, 1), 0x9F09: (2, 2), 0x9F1E: (8, 8), 0x9F41: (2, 4), 0x9B: (2, 2),
    0x4F: (5, 16),
}  # fmt: skip
# numeric (BCD) data objects: every nibble a digit
NUMERIC: Final = frozenset({0x9F02, 0x9F03, 0x9A, 0x9C, 0x5F2A, 0x9F1A, 0x5F34, 0x9F41})
# 8.1: never in field 55 (track, PAN, names, expiry, service code, PIN data...)
FORBIDDEN: Final = ICC_CARD_DATA
# 4: a card's decline after the host's approval (0400 reason 06), and a 0320's upload
DECLINE_TAGS: Final = frozenset({0x9F26, 0x9F27, 0x9F36})
UPLOAD_TAGS: Final = frozenset({0x9F26, 0x9F27, 0x9F36, 0x95, 0x9B, 0x9F5B})
# 9: PIN data, and the lengths allowed (bytes)
PIN_BLOCK_LENGTHS: Final = (8, 16)
KSN_LENGTHS: Final = (10, 12)

# Book 3 Table 14: bits 8-7 of the cryptogram information data
AAC, TC, ARQC = "AAC", "TC", "ARQC"
_KINDS: Final = {0x00: AAC, 0x40: TC, 0x80: ARQC}


@dataclass(frozen=True)
class Icc:
    """A field 55 parsed: the top-level data objects by tag."""

    tags: Mapping[int, bytes]

    @property
    def aid(self) -> str:
        return self.tags.get(0x84, b"").hex().upper()

    @property
    def kind(self) -> str:
        """"ARQC", "TC", "AAC" (or "RFU"), from 9F27 bits 8-7."""
        cid = self.tags.get(0x9F27, b"\x00")
        return _KINDS.get(cid[0] & 0xC0, "RFU") if cid else "RFU"

    @property
    def psn(self) -> str:
        value = self.tags.get(0x5F34)
        return value.hex() if value else "00"

    @property
    def atc(self) -> int:
        return int.from_bytes(self.tags.get(0x9F36, bytes(2)), "big")


def chip_entry(req: Message) -> bool:
    """Whether field 22 says chip (`05x`)."""
    return req.get("22", "").startswith("05")


def parse_icc(hexvalue: str) -> Icc:
    """Field 55 (hex, as the codec gives it) strictly parsed; FormatProblem naming the
    fault otherwise (never a value)."""
    try:
        raw = bytes.fromhex(hexvalue)
    except ValueError:
        raise FormatProblem("field 55 is not binary data") from None
    if not raw or len(raw) > MAX_ICC:
        raise FormatProblem(f"field 55 of {len(raw)} bytes (1 to {MAX_ICC})")
    try:
        objects = tlv.parse(raw)
    except tlv.TlvError as exc:
        raise FormatProblem(f"field 55 is not BER-TLV: {exc}") from None
    if tlv.encode_all((o.tag, o.value) for o in objects) != raw:
        raise FormatProblem("field 55 has a length not in its shortest form")
    tags: dict[int, bytes] = {}
    for o in objects:
        if o.tag in tags:
            raise FormatProblem(f"field 55 carries tag {o.tag:X} twice")
        tags[o.tag] = o.value
    carried = sorted({o.tag for o in tlv.walk(objects)} & FORBIDDEN)
    if carried:
        raise FormatProblem("field 55 carries data it must not: tag(s) "
                            + ", ".join(f"{t:X}" for t in carried))
    return Icc(tags)


def _lengths(icc: Icc, table: Mapping[int, tuple[int, int]]) -> None:
    for tag, (low, high) in table.items():
        value = icc.tags.get(tag)
        if value is None:
            continue
        if not low <= len(value) <= high:
            raise FormatProblem(f"field 55 tag {tag:X} of {len(value)} bytes")
        if tag in NUMERIC and not value.hex().isdigit():
            raise FormatProblem(f"field 55 tag {tag:X} is not numeric")


def check_format(req: Message) -> None:
    """The section-2/4/8.1/9 format rules of fields 22, 23, 52, 53 and 55 in any request;
    FormatProblem (answered `30`) for the first broken one. Field 55's content is
    `check_icc`'s (0200/0220) or checked here (0400, 0320)."""
    mti = req["t"][:3] + "0"
    chip = chip_entry(req)
    if "23" in req:
        if not (len(req["23"]) == 3 and req["23"].isdigit()):
            raise FormatProblem("field 23 is not 3 digits")
        if not chip:
            raise FormatProblem("field 23 without entry mode 05x")
    for field in ("52", "53"):
        if field in req and mti != "0200":
            raise FormatProblem(f"field {field} in a {req['t']}")
    if ("52" in req) != ("53" in req):
        raise FormatProblem("field 52 without 53, or 53 without 52")
    if "52" in req:
        if len(req["52"]) // 2 not in PIN_BLOCK_LENGTHS:
            raise FormatProblem(f"field 52 of {len(req['52']) // 2} bytes (8 or 16)")
        if len(req["53"]) // 2 not in KSN_LENGTHS:
            raise FormatProblem(f"field 53 of {len(req['53']) // 2} bytes (10 or 12)")
    if mti in ("0200", "0220"):
        if "55" in req and not chip:
            raise FormatProblem("field 55 without entry mode 05x")
        if chip and "55" not in req:
            raise FormatProblem("entry mode 05x without field 55")
    elif mti == "0400" and "55" in req:
        if req.get("39") != "06":
            raise FormatProblem("field 55 in a reversal other than reason 06")
        icc = parse_icc(req["55"])
        if set(icc.tags) != DECLINE_TAGS:
            raise FormatProblem("field 55 of a reversal carries other than 9F26, 9F27, 9F36")
        _lengths(icc, MANDATORY)
        if icc.kind != AAC:
            raise FormatProblem(f"field 55 of a reversal carries an {icc.kind}, not an AAC")
    elif mti == "0320" and "55" in req:
        icc = parse_icc(req["55"])
        other = set(icc.tags) - UPLOAD_TAGS
        if other:
            raise FormatProblem("field 55 of an upload carries tag(s) "
                                + ", ".join(f"{t:X}" for t in sorted(other)))
        _lengths(icc, MANDATORY)
        log.info("upload stan=%s carries %s", req.get("11", "-"), " ".join(
            f"{t:X}={v.hex().upper()}" for t, v in icc.tags.items()))
    elif "55" in req:
        raise FormatProblem(f"field 55 in a {req['t']}")


def check_icc(req: Message) -> Icc:
    """Field 55 of a 0200/0220: parsed, every mandatory tag there, lengths right, values
    agreeing with the message (8.1); FormatProblem (`30`) otherwise."""
    icc = parse_icc(req["55"])
    missing = [f"{t:X}" for t in MANDATORY if t not in icc.tags]
    if missing:
        raise FormatProblem(f"field 55 lacks mandatory tag(s) {', '.join(missing)}")
    _lengths(icc, MANDATORY)
    _lengths(icc, OPTIONAL)
    t = icc.tags
    if t[0x9F02].hex() != req["4"]:
        raise FormatProblem("field 55 tag 9F02 is not field 4")
    currency = t[0x5F2A].hex()
    if currency[0] != "0" or currency[1:] != req.get("49", ""):
        raise FormatProblem("field 55 tag 5F2A is not field 49")
    expected_type = {PURCHASE: "00", REFUND: "20"}.get(req["3"])
    if expected_type is not None and t[0x9C].hex() != expected_type:
        raise FormatProblem(f"field 55 tag 9C is not {expected_type} with processing code "
                            f"{req['3']}")
    if "23" in req or 0x5F34 in t:
        if "23" not in req or 0x5F34 not in t or "0" + t[0x5F34].hex() != req["23"]:
            raise FormatProblem("field 55 tag 5F34 is not field 23")
    if "13" in req and t[0x9A].hex()[2:] != req["13"]:
        raise FormatProblem("field 55 tag 9A's month and day are not field 13")
    want = AAC if req["3"] == REFUND else ARQC if req["t"].startswith("020") else TC
    if icc.kind != want:
        raise FormatProblem(f"field 55 tag 9F27 says {icc.kind}; a "
                            f"{'refund' if want == AAC else req['t']} carries an {want}")
    return icc


def holds_keys(icc: Icc) -> bool:
    """Whether the host holds the application's keys (8.2: AIDs beginning F000000001)."""
    return icc.aid.startswith(TEST_SCHEME)


def session_key(req: Message, icc: Icc) -> bytes:
    mk = emvkeys.icc_master_key(emvkeys.IMK_AC, req["2"], icc.psn)
    return emvkeys.session_key(mk, icc.atc)


def verify(req: Message, icc: Icc) -> bool:
    """Whether 9F26 is the cryptogram of the test scheme's keys over 8.2's data (the
    caller has checked `holds_keys`)."""
    if not req.get("2", "").isdigit():
        return False
    sk = session_key(req, icc)
    expected = emvkeys.cryptogram(sk, emvkeys.cryptogram_data(icc.tags))
    return expected == icc.tags[0x9F26]


# -- the 0210's field 55 -------------------------------------------------------

@dataclass(frozen=True)
class Script:
    """One issuer script command: CLA 84, INS, P1, P2 and its data (the MAC is added)."""

    name: str
    ins: int
    p1: int
    p2: int
    data: bytes = b""


# The commands a test may send (Book 3 Annex A and the test cards' own): each ends with
# a 4-byte MAC counted in Lc.
SCRIPT_COMMANDS: Final[Mapping[str, Script]] = {
    s.name: s for s in (
        Script("put-data", 0xDA, 0x9F, 0x58, b"\x05"),  # lower consecutive offline limit
        Script("unblock", 0x18, 0x00, 0x00),  # APPLICATION UNBLOCK
        Script("block", 0x1E, 0x00, 0x00),  # APPLICATION BLOCK
        Script("pin-unblock", 0x24, 0x00, 0x00),  # PIN CHANGE/UNBLOCK, no new PIN
    )
}
SCRIPT_TEMPLATES: Final = {"71": (0x71,), "72": (0x72,), "both": (0x71, 0x72)}


def script_command(script: Script, sk: bytes, atc: int, arqc: bytes) -> bytes:
    """The command APDU with its MAC: the first 4 bytes of MAC algorithm 3 over the
    header, Lc, the ATC, the ARQC and the data (Book 2 9.2.3's shape; the test cards
    do not check it)."""
    lc = len(script.data) + 4
    header = bytes([0x84, script.ins, script.p1, script.p2, lc])
    mac = emvkeys.mac3(sk, header + atc.to_bytes(2, "big") + arqc + script.data)[:4]
    return header + script.data + mac


def scripts_size(templates: str, commands: tuple[str, ...]) -> int:
    """The bytes the scripts take in field 55 (whole templates)."""
    return len(build_scripts(templates, commands, bytes(16), 0, bytes(8), 1))


def build_scripts(templates: str, commands: tuple[str, ...], sk: bytes, atc: int,
                  arqc: bytes, number: int) -> bytes:
    """Templates 71 and/or 72, each a 9F18 script identifier and the 86 commands."""
    out = b""
    for i, template in enumerate(SCRIPT_TEMPLATES[templates]):
        ident = tlv.encode(0x9F18, (number + i).to_bytes(4, "big"))
        body = ident + b"".join(
            tlv.encode(0x86, script_command(SCRIPT_COMMANDS[c], sk, atc, arqc))
            for c in commands)
        out += tlv.encode(template, body)
    return out


def issuer_data(req: Message, icc: Icc, code: str, *, wrong_arpc: bool = False,
                scripts: bytes = b"") -> str:
    """The 0210's field 55 (hex): tag 91 = ARPC || ARC (the ARC is field 39 in ASCII),
    then `scripts`. `wrong_arpc`: the ARPC of another ARQC (the ARC stays right)."""
    sk = session_key(req, icc)
    arc = code.encode("ascii")
    arqc = icc.tags[0x9F26]
    if wrong_arpc:
        arqc = bytes(b ^ 0xFF for b in arqc)
    data = tlv.encode(0x91, emvkeys.arpc(sk, arqc, arc) + arc) + scripts
    return data.hex().upper()
