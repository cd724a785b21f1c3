"""hwsim's chip cards (hw-sim/chipcard.py, chipprofiles.py, chipfiles.py, chiptxn.py,
emvca.py), driven APDU by APDU as a terminal would, each test naming the EMV 4.4 section
it checks. Certificates and signatures are checked here from the books' tables with
plain RSA arithmetic, not with the code that built them."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from firmware.core.emv import tlv
from hwsim import chipcard, emvca, emvkeys
from hwsim.chipcard import CardPulled, ChipCard, make
from hwsim.chipprofiles import PROFILES, describe

CREDIT = "F0000000011010"
PSE = b"1PAY.SYS.DDF01".hex()
# CDOL1 values: 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 (host-interface 8.2's example data)
EXAMPLE = {0x9F02: "000000001250", 0x9F03: "000000000000", 0x9F1A: "0276",
           0x95: "0000008000", 0x5F2A: "0978", 0x9A: "261207", 0x9C: "00",
           0x9F37: "11223344"}


def cdol1(amount: int = 1250, un: str = "11223344") -> str:
    v = {**EXAMPLE, 0x9F02: f"{amount:012d}", 0x9F37: un}
    return "".join(v[t] for t in (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37))


def apdu(card: ChipCard, hexcmd: str) -> tuple[bytes, int]:
    r = card.apdu(bytes.fromhex(hexcmd.replace(" ", "")))
    return r[:-2], int.from_bytes(r[-2:], "big")


def cmd(cla_ins_p1p2: str, data: str = "", le: bool = True) -> str:
    n = len(data) // 2
    return cla_ins_p1p2 + (f"{n:02X}" + data if n else "") + ("00" if le else "")


def select_app(card: ChipCard, aid: str = CREDIT) -> tuple[bytes, int]:
    card.power_on()
    return apdu(card, cmd("00A40400", aid))


def gpo(card: ChipCard, pdol_data: str = "") -> tuple[bytes, int]:
    return apdu(card, cmd("80A80000", "83" + f"{len(pdol_data) // 2:02X}" + pdol_data))


def first_ac(card: ChipCard, p1: str = "40", amount: int = 1250,
             un: str = "11223344") -> dict[int, bytes]:
    data, sw = apdu(card, cmd("80AE" + p1 + "00", cdol1(amount, un)))
    assert sw == 0x9000
    return ac_fields(data)


def ac_fields(data: bytes) -> dict[int, bytes]:
    """A GENERATE AC answer, format 1 or 2 (Book 3 6.5.5.4), as tag -> value."""
    top = tlv.parse(data)[0]
    if top.tag == 0x80:
        v = top.value
        return {0x9F27: v[:1], 0x9F36: v[1:3], 0x9F26: v[3:11], 0x9F10: v[11:]}
    return {t.tag: t.value for t in top.children}


def records(card: ChipCard, afl: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        for n in range(first, last + 1):
            data, sw = apdu(card, f"00B2{n:02X}{sfi << 3 | 4:02X}00")
            assert sw == 0x9000
            for t in tlv.walk(tlv.parse(data)):
                if not t.constructed:
                    out[t.tag] = t.value
    return out


def afl_of(data: bytes) -> tuple[bytes, bytes]:
    top = tlv.parse(data)[0]
    if top.tag == 0x80:
        return top.value[:2], top.value[2:]
    kids = {t.tag: t.value for t in top.children}
    return kids[0x82], kids[0x94]


def expected_ac(profile_name: str, atc: int, aip: bytes, iad: bytes,
                values: dict[int, str]) -> bytes:
    p = PROFILES[profile_name]
    mk = emvkeys.icc_master_key(emvkeys.IMK_AC, p.pan, p.psn or "00")
    sk = emvkeys.session_key(mk, atc)
    data = {t: bytes.fromhex(v) for t, v in values.items()}
    data.update({0x82: aip, 0x9F36: atc.to_bytes(2, "big"), 0x9F10: iad})
    return emvkeys.cryptogram(sk, emvkeys.cryptogram_data(data))


# -- answer to reset (Book 1 8.3; ISO/IEC 7816-3 8.2) ---------------------------

def parse_atr(atr: bytes) -> tuple[set[int], int]:
    """The protocols an ATR offers and its historical byte count; checks TCK."""
    assert atr[0] == 0x3B  # TS: direct convention
    y, k = atr[1] >> 4, atr[1] & 0x0F
    i, protocols = 2, set()
    while True:
        i += bin(y & 0x7).count("1")  # TA, TB, TC
        if not y & 0x8:
            break
        td = atr[i]
        i += 1
        protocols.add(td & 0x0F)
        y = td >> 4
    protocols = protocols or {0}
    rest = atr[i + k:]
    if protocols != {0}:
        assert len(rest) == 1 and _xor(atr[1:]) == 0  # TCK
    else:
        assert rest == b""
    return protocols, k


def _xor(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def test_atr_t1_book1_8_3() -> None:
    atr = make("online-pin").power_on()
    assert atr.hex().upper().startswith("3BE900008131FE45")
    assert parse_atr(atr) == ({1}, 9)


def test_atr_t0_book1_8_3() -> None:
    atr = make("t0").power_on()
    assert atr.hex().upper().startswith("3B6E0000")
    assert parse_atr(atr) == ({0}, 14)


def test_mute_card_gives_no_atr_and_no_answer() -> None:
    card = make("mute")
    assert card.power_on() == b""
    assert card.apdu(bytes.fromhex("00A404000E" + PSE + "00")) == b""


# -- T=0 (Book 1 9.3.1, Annex A) ---------------------------------------------------

def test_t0_case4_answers_61xx_then_get_response_book1_annex_a() -> None:
    card = make("t0")
    card.power_on()
    r = card.apdu(bytes.fromhex("00A4040007" + CREDIT))  # case 4 without Le, as under T=0
    assert r[0] == 0x61
    data = card.apdu(bytes([0, 0xC0, 0, 0, r[1]]))
    assert data[-2:] == b"\x90\x00" and len(data) - 2 == r[1]
    assert tlv.parse(data[:-2])[0].tag == 0x6F


def test_t0_case2_wrong_le_answers_6cxx_book1_annex_a() -> None:
    card = make("t0")
    card.power_on()
    select = card.apdu(bytes.fromhex("00A404000E" + PSE))
    card.apdu(bytes([0, 0xC0, 0, 0, select[1]]))
    r = card.apdu(bytes.fromhex("00B2010C00"))
    assert r[0] == 0x6C and len(r) == 2
    full = card.apdu(bytes([0, 0xB2, 1, 0x0C, r[1]]))
    assert full[-2:] == b"\x90\x00" and len(full) == r[1] + 2
    assert card.apdu(bytes([0, 0xB2, 1, 0x0C, r[1] - 1]))[:1] == b"\x6c"


def test_t0_61_variant_and_get_response_in_parts_book1_annex_a() -> None:
    card = make("t0-61")
    card.power_on()
    r = card.apdu(bytes.fromhex("00A404000E" + PSE))
    card.apdu(bytes([0, 0xC0, 0, 0, r[1]]))
    r = card.apdu(bytes.fromhex("00B2010C00"))
    assert r[0] == 0x61
    part = card.apdu(bytes([0, 0xC0, 0, 0, 4]))
    assert len(part) == 6 and part[-2] == 0x61 and part[-1] == r[1] - 4
    rest = card.apdu(bytes([0, 0xC0, 0, 0, part[-1]]))
    assert rest[-2:] == b"\x90\x00"
    assert tlv.parse(part[:4] + rest[:-2])[0].tag == 0x70


def test_t0_warning_then_data_book1_annex_a() -> None:
    card = ChipCard("t0 blocked", replace(PROFILES["blocked-app"], protocol="T=0"))
    card.power_on()
    assert card.apdu(bytes.fromhex("00A4040007" + CREDIT)) == b"\x62\x83"
    r = card.apdu(bytes.fromhex("00C0000000"))
    assert r[0] == 0x6C
    data = card.apdu(bytes([0, 0xC0, 0, 0, r[1]]))
    assert data[-2:] == b"\x90\x00" and tlv.parse(data[:-2])[0].tag == 0x6F


def test_t1_answers_data_and_9000_directly() -> None:
    data, sw = select_app(make("online-pin"))
    assert sw == 0x9000 and tlv.find(tlv.parse(data), 0x84) == bytes.fromhex(CREDIT)


# -- selection (Book 1 12.2, 12.3; Book 3 6.5.11) -----------------------------------

def test_pse_directory_book1_12_2_3() -> None:
    card = make("no-pse")
    card.power_on()
    assert apdu(card, cmd("00A40400", PSE))[1] == 0x6A82
    card = ChipCard("pse two", replace(PROFILES["no-pse"], pse=True))
    card.power_on()
    fci, sw = apdu(card, cmd("00A40400", PSE))
    assert sw == 0x9000 and tlv.find(tlv.parse(fci), 0x88) == b"\x01"
    rec, sw = apdu(card, "00B2010C00")
    entries = [t for t in tlv.parse(rec)[0].children if t.tag == 0x61]
    assert [tlv.find(e.children, 0x4F).hex().upper() for e in entries] == \
        [CREDIT, "F0000000012010"]  # type: ignore[union-attr]
    assert [tlv.find(e.children, 0x87) for e in entries] == [b"\x01", b"\x02"]
    assert apdu(card, "00B2020C00")[1] == 0x6A83


def test_partial_aid_and_next_occurrence_book1_12_3_3() -> None:
    card = make("partial-aid")
    card.power_on()
    fci, sw = apdu(card, cmd("00A40400", CREDIT))
    assert sw == 0x9000 and tlv.find(tlv.parse(fci), 0x84).hex().upper() == CREDIT + "01"  # type: ignore[union-attr]
    fci, sw = apdu(card, cmd("00A40402", CREDIT))
    assert sw == 0x9000 and tlv.find(tlv.parse(fci), 0x84).hex().upper() == CREDIT + "02"  # type: ignore[union-attr]
    assert apdu(card, cmd("00A40402", CREDIT))[1] == 0x6A82


def test_blocked_app_6283_and_blocked_card_6a81_book1_12_3_2() -> None:
    fci, sw = select_app(make("blocked-app"))
    assert sw == 0x6283 and tlv.parse(fci)[0].tag == 0x6F
    card = make("blocked-card")
    card.power_on()
    assert apdu(card, cmd("00A40400", PSE)) == (b"", 0x6A81)
    assert apdu(card, cmd("00A40400", CREDIT)) == (b"", 0x6A81)


# -- errors (Book 3 6.3.5) ------------------------------------------------------------

def test_unknown_ins_wrong_cla_p1p2_length_book3_6_3_5() -> None:
    card = make("online-pin")
    select_app(card)
    assert apdu(card, "00FE000000")[1] == 0x6D00
    assert apdu(card, "00A8000002830000")[1] == 0x6E00  # GPO takes CLA 80
    assert apdu(card, "B0A4040000")[1] == 0x6E00
    assert apdu(card, cmd("00A40300", CREDIT))[1] == 0x6A86
    assert apdu(card, "00B2010000")[1] == 0x6A86
    assert apdu(card, "80A800000583000000")[1] == 0x6700  # wrong Lc for its data
    assert apdu(card, "80A80000038301AA00")[1] == 0x6700  # PDOL data, no PDOL
    assert apdu(card, "00B2")[1] == 0x6700
    assert gpo(card)[1] == 0x9000
    assert apdu(card, cmd("80AE4000", "00" * 28))[1] == 0x6700  # CDOL1 is 29 bytes
    assert apdu(card, "00B2091400")[1] == 0x6A83  # SFI 2 has no record 9
    assert apdu(card, "00B2015C00")[1] == 0x6A82  # no SFI 11
    assert apdu(card, "00B2010C00")[1] == 0x9000


# -- GPO, records, GENERATE AC, issuer authentication --------------------------------

def test_online_card_arqc_equals_emvkeys_and_second_ac_book3_10_8_host_interface_8_2() -> None:
    card = make("online-pin")
    select_app(card)
    data, sw = gpo(card)
    aip, afl = afl_of(data)
    assert sw == 0x9000 and aip == bytes.fromhex("3C00")
    recs = records(card, afl)
    assert recs[0x5A] == bytes.fromhex("4761739001010218") and recs[0x5F34] == b"\x01"
    assert {0x8C, 0x8D, 0x5F24, 0x8E, 0x90, 0x9F46, 0x8F} <= recs.keys()
    ac = first_ac(card, "40")  # a TC asked for: an online-only card answers an ARQC
    assert ac[0x9F27] == b"\x80" and ac[0x9F36] == b"\x00\x21"
    assert ac[0x9F10][:3] == bytes.fromhex("06010A") and len(ac[0x9F10]) == 7
    assert ac[0x9F26] == expected_ac("online-pin", 0x21, aip, ac[0x9F10], EXAMPLE)
    mk = emvkeys.icc_master_key(emvkeys.IMK_AC, "4761739001010218", "01")
    sk = emvkeys.session_key(mk, 0x21)
    arpc = emvkeys.arpc(sk, ac[0x9F26], b"00")
    assert apdu(card, cmd("00820000", arpc.hex() + "3030", le=False)) == (b"", 0x9000)
    cdol2 = cdol1() + "3030"
    data, sw = apdu(card, cmd("80AE4000", cdol2))
    tc = ac_fields(data)
    assert sw == 0x9000 and tc[0x9F27] == b"\x40" and tc[0x9F36] == b"\x00\x21"
    assert tc[0x9F26] == expected_ac("online-pin", 0x21, aip, tc[0x9F10], EXAMPLE)
    assert apdu(card, "80CA9F1300")[0] == bytes.fromhex("9F13020021")
    assert apdu(card, cmd("80AE4000", cdol2))[1] == 0x6985  # the transaction is over


def test_worked_example_through_the_card_host_interface_8_2() -> None:
    card = make("worked-example")
    select_app(card)
    aip, _ = afl_of(gpo(card)[0])
    assert aip == bytes.fromhex("3900")
    ac = first_ac(card, "80")
    assert ac[0x9F36] == b"\x00\x01" and ac[0x9F10] == bytes.fromhex("06010A03A00000")
    assert ac[0x9F26] == bytes.fromhex("CA00FC7521318666")
    ext = "8F42F33023B58454" + "3030"
    assert apdu(card, cmd("00820000", ext, le=False)) == (b"", 0x9000)


def test_wrong_arpc_6300_then_aac_book3_10_9() -> None:
    card = make("online-pin")
    select_app(card)
    gpo(card)
    first_ac(card, "80")
    assert apdu(card, cmd("00820000", "00" * 8 + "3030", le=False))[1] == 0x6300
    tc = ac_fields(apdu(card, cmd("80AE4000", cdol1() + "3030"))[0])
    assert tc[0x9F27] == b"\x00" and tc[0x9F10][4] & 0x08  # CVR: issuer auth failed


def test_offline_card_tc_under_limit_arqc_above_and_y3_book3_10_8() -> None:
    card = make("offline-pin")
    select_app(card)
    gpo(card)
    assert first_ac(card, "40", amount=5000)[0x9F27] == b"\x40"  # Y1
    select_app(card)
    gpo(card)
    assert first_ac(card, "40", amount=20000)[0x9F27] == b"\x80"
    tc = ac_fields(apdu(card, cmd("80AE4000", cdol1(20000) + b"Y3".hex()))[0])
    assert tc[0x9F27] == b"\x40" and tc[0x9F36] == b"\x00\x22"  # ATC counts each first AC
    online = make("online-pin")
    select_app(online)
    gpo(online)
    first_ac(online, "80")
    aac = ac_fields(apdu(online, cmd("80AE4000", cdol1() + b"Y3".hex()))[0])
    assert aac[0x9F27] == b"\x00"


def test_aac_request_and_aac_first_book3_6_5_5() -> None:
    card = make("offline-pin")
    select_app(card)
    gpo(card)
    assert first_ac(card, "00")[0x9F27] == b"\x00"
    card = make("aac-first")
    select_app(card)
    gpo(card)
    assert first_ac(card, "40", amount=100)[0x9F27] == b"\x00"
    assert apdu(card, cmd("80AE4000", cdol1() + "3030"))[1] == 0x6985  # no second AC after AAC


def test_velocity_and_new_card_go_online_book3_10_6_3() -> None:
    for name, last in (("velocity-limit", b"\x00\x14"), ("new-card", b"\x00\x00")):
        card = make(name)
        select_app(card)
        gpo(card)
        assert apdu(card, "80CA9F1300")[0] == b"\x9f\x13\x02" + last
        assert apdu(card, "80CA9F3600")[0] == bytes.fromhex("9F36020020")
        assert first_ac(card, "40", amount=100)[0x9F27] == b"\x80"


def test_arpc_in_cdol2_book3_6_5_5_and_book2_8_2() -> None:
    for good in (True, False):
        card = make("arpc-required")
        select_app(card)
        recs = records(card, afl_of(gpo(card)[0])[1])
        assert recs[0x8D].endswith(bytes.fromhex("8A02910A"))
        ac = first_ac(card, "80")
        p = PROFILES["arpc-required"]
        sk = emvkeys.session_key(emvkeys.icc_master_key(emvkeys.IMK_AC, p.pan, "01"), 0x21)
        arpc = emvkeys.arpc(sk, ac[0x9F26], b"00") if good else bytes(8)
        out = ac_fields(apdu(card, cmd("80AE4000", cdol1() + "3030" + arpc.hex() + "3030"))[0])
        assert out[0x9F27] == (b"\x40" if good else b"\x00")


def test_pulled_at_each_step_raises_card_pulled() -> None:
    steps = {"gpo": 0, "read-record": 1, "first-ac": 2, "second-ac": 3}
    for step, at in steps.items():
        card = make(f"pulled-at-{step}")
        select_app(card)
        with pytest.raises(CardPulled):
            gpo(card)
            if at >= 1:
                apdu(card, "00B2010C00")
            if at >= 2:
                first_ac(card, "80")
            if at >= 3:
                apdu(card, cmd("80AE4000", cdol1() + "3030"))
            pytest.fail("not pulled")


# -- cardholder verification (Book 3 6.5.12, Book 2 7.2) ------------------------------

def test_plaintext_pin_try_counter_decrements_and_blocks_book3_6_5_12() -> None:
    card = make("offline-pin")
    select_app(card)
    good, bad = "241234FFFFFFFFFF", "249999FFFFFFFFFF"
    assert apdu(card, cmd("00200080", bad, le=False))[1] == 0x63C2
    assert apdu(card, cmd("00200080", good, le=False))[1] == 0x9000
    assert apdu(card, "80CA9F1700")[0] == b"\x9f\x17\x01\x03"
    for left in (2, 1, 0):
        assert apdu(card, cmd("00200080", bad, le=False))[1] == 0x63C0 | left
    assert apdu(card, cmd("00200080", good, le=False))[1] == 0x6983
    assert apdu(card, cmd("00200080", "1F1234FFFFFFFFFF", le=False))[1] == 0x6983
    # a script's PIN UNBLOCK (CLA 84, INS 24, MAC in Lc) resets the counter
    assert apdu(card, cmd("84240000", "01020304", le=False))[1] == 0x9000
    assert apdu(card, cmd("00200080", good, le=False))[1] == 0x9000


def test_pin_blocked_card_6983_book3_6_5_12() -> None:
    card = make("pin-blocked")
    select_app(card)
    assert apdu(card, "80CA9F1700")[0] == b"\x9f\x17\x01\x00"
    assert apdu(card, cmd("00200080", "241234FFFFFFFFFF", le=False))[1] == 0x6983


def test_plaintext_pin_block_format_checked() -> None:
    card = make("offline-pin")
    select_app(card)
    assert apdu(card, cmd("00200080", "141234FFFFFFFFFF", le=False))[1] == 0x6A80
    assert apdu(card, cmd("00200080", "2412", le=False))[1] == 0x6A80


def _icc_public(card: ChipCard) -> tuple[bytes, int]:
    """The ICC public key recovered from the card's records (Book 2 6.4) via the CA."""
    select_app(card)
    data, _ = gpo(card, "0276" + "22") if card.profile.apps[0].pdol else gpo(card)
    recs = records(card, afl_of(data)[1])
    issuer = recover_issuer(recs, card.profile.pan)
    return recover_icc(issuer, recs, card.profile.pan, _static_data(card))


def test_enciphered_pin_book2_7_2() -> None:
    card = make("cda-enciphered-pin")
    modulus, exponent = _icc_public(card)
    for pin, challenge_ok, sw in (("1234", True, 0x9000), ("4321", True, 0x63C2),
                                  ("1234", False, 0x6A80)):
        challenge, sw1 = apdu(card, "0084000000")
        assert sw1 == 0x9000 and len(challenge) == 8
        block = bytes.fromhex(f"24{pin}FFFFFFFFFF")
        un = challenge if challenge_ok else bytes(8)
        plain = b"\x7f" + block + un + b"\x55" * (len(modulus) - 17)
        enc = pow(int.from_bytes(plain, "big"), exponent, int.from_bytes(modulus, "big"))
        assert apdu(card, cmd("00200088", enc.to_bytes(len(modulus), "big").hex(),
                              le=False))[1] == sw
    assert apdu(card, cmd("00200088", "00" * len(modulus), le=False))[1] == 0x6985  # no challenge


# -- offline data authentication (Book 2 5, 6) ---------------------------------------

def _rsa(modulus: bytes, exponent: int, data: bytes) -> bytes:
    n = int.from_bytes(modulus, "big")
    return pow(int.from_bytes(data, "big"), exponent, n).to_bytes(len(modulus), "big")


def recover_issuer(recs: dict[int, bytes], pan: str, *, check_hash: bool = True
                   ) -> tuple[bytes, int]:
    """Book 2 5.3: the issuer public key from 90, 92, 9F32 with the CA key of 8F."""
    ca = next(k for k in emvca.TEST_CA_KEYS if k.index == recs[0x8F][0])
    x = _rsa(ca.modulus, ca.exponent, recs[0x90])
    assert x[0] == 0x6A and x[1] == 0x02 and x[-1] == 0xBC
    assert x[2:4].hex().upper() == pan[:4] and x[4:6].hex().upper()[:2] == pan[4:6]
    n_i, e_len = x[13], x[14]
    leftmost = x[15:len(ca.modulus) - 21]
    digest = x[-21:-1]
    remainder = recs.get(0x92, b"")
    if check_hash:
        assert hashlib.sha1(x[1:-21] + remainder + recs[0x9F32]).digest() == digest
    assert e_len == len(recs[0x9F32])
    return (leftmost + remainder)[:n_i], int.from_bytes(recs[0x9F32], "big")


def recover_icc(issuer: tuple[bytes, int], recs: dict[int, bytes], pan: str,
                static: bytes) -> tuple[bytes, int]:
    """Book 2 6.4: the ICC public key from 9F46, 9F48, 9F47 and the static data."""
    x = _rsa(*issuer, recs[0x9F46])
    assert x[0] == 0x6A and x[1] == 0x04 and x[-1] == 0xBC
    assert x[2:12].hex().upper().rstrip("F") == pan
    n_ic = x[19]
    remainder = recs.get(0x9F48, b"")
    assert hashlib.sha1(x[1:-21] + remainder + recs[0x9F47] + static).digest() == x[-21:-1]
    return (x[21:len(issuer[0]) - 21] + remainder)[:n_ic], int.from_bytes(recs[0x9F47], "big")


def _static_data(card: ChipCard) -> bytes:
    """Book 3 10.3: SFI 1 record 1's value (the AFL marks one record), then the AIP."""
    rec = tlv.parse(card.apdu(bytes.fromhex("00B2010C00"))[:-2])[0].value
    return rec + card.files.apps[0].aip


def test_certificates_and_dda_signature_recover_with_the_ca_key_book2_5_3_6_4_6_5() -> None:
    for name in ("online-pin", "offline-pin", "no-pse"):
        card = make(name)
        modulus, exponent = _icc_public(card)  # checks both certificates' hashes
        sdad_data, sw = apdu(card, cmd("00880000", "A1B2C3D4"))
        top = tlv.parse(sdad_data)[0]
        sdad = top.value if top.tag == 0x80 else tlv.find(top.children, 0x9F4B)
        y = _rsa(modulus, exponent, sdad)  # type: ignore[arg-type]
        assert y[:3] == b"\x6a\x05\x01" and y[-1] == 0xBC
        assert hashlib.sha1(y[1:-21] + bytes.fromhex("A1B2C3D4")).digest() == y[-21:-1]


def test_cda_signature_recoverable_with_the_ca_key_book2_6_6() -> None:
    card = make("cda-enciphered-pin")
    modulus, exponent = _icc_public(card)  # selects, GPO with PDOL 9F1A 9F35, reads
    select_app(card)
    pdol_data = "0276" + "22"
    assert gpo(card, pdol_data)[1] == 0x9000
    un = "CAFEBABE"
    data, sw = apdu(card, cmd("80AE9000", cdol1(1250, un)))  # ARQC with CDA
    items = tlv.parse(data)[0].children
    assert [t.tag for t in items] == [0x9F27, 0x9F36, 0x9F4B, 0x9F10]
    x = _rsa(modulus, exponent, items[2].value)
    assert x[:3] == b"\x6a\x05\x01" and x[-1] == 0xBC
    ldd = x[3]
    dyn = x[4:4 + ldd]
    n = dyn[0]
    cid, ac, hash_code = dyn[1 + n], dyn[2 + n:10 + n], dyn[10 + n:30 + n]
    assert cid == 0x80 and len(ac) == 8
    assert hashlib.sha1(x[1:-21] + bytes.fromhex(un)).digest() == x[-21:-1]
    tx = bytes.fromhex(pdol_data + cdol1(1250, un)) + b"".join(
        t.encode() for t in items if t.tag != 0x9F4B)
    assert hashlib.sha1(tx).digest() == hash_code
    iad = items[3].value
    assert ac == expected_ac("cda-enciphered-pin", 0x21, bytes.fromhex("3D00"), iad,
                             {**EXAMPLE, 0x9F37: un})


def test_sda_ssad_book2_5_4() -> None:
    card = make("sda")
    select_app(card)
    aip, afl = afl_of(gpo(card)[0])
    recs = records(card, afl)
    assert aip == bytes.fromhex("5C00") and 0x9F46 not in recs
    issuer = recover_issuer(recs, card.profile.pan)
    x = _rsa(*issuer, recs[0x93])
    assert x[:3] == b"\x6a\x03\x01" and x[-1] == 0xBC
    assert hashlib.sha1(x[1:-21] + _static_data(card)).digest() == x[-21:-1]
    select_app(card)
    gpo(card)
    assert apdu(card, cmd("00880000", "A1B2C3D4"))[1] == 0x6D00


def test_bad_issuer_cert_bad_sdad_unknown_ca_index_book2_5_3_6_5() -> None:
    card = make("bad-issuer-cert")
    select_app(card)
    recs = records(card, afl_of(gpo(card)[0])[1])
    with pytest.raises(AssertionError):
        recover_issuer(recs, card.profile.pan)
    recover_issuer(recs, card.profile.pan, check_hash=False)  # only the hash is wrong
    card = make("bad-sdad")
    modulus, exponent = _icc_public(card)
    top = tlv.parse(apdu(card, cmd("00880000", "A1B2C3D4"))[0])[0]
    y = _rsa(modulus, exponent, top.value)
    assert y[:2] == b"\x6a\x05"
    assert hashlib.sha1(y[1:-21] + bytes.fromhex("A1B2C3D4")).digest() != y[-21:-1]
    card = make("unknown-ca-index")
    select_app(card)
    recs = records(card, afl_of(gpo(card)[0])[1])
    assert recs[0x8F] == b"\x99"
    assert 0x99 not in {k.index for k in emvca.TEST_CA_KEYS}


def test_test_ca_keys_book2_5_1() -> None:
    assert {(k.rid.hex().upper(), k.index, k.exponent, len(k.modulus))
            for k in emvca.TEST_CA_KEYS} == {("F000000001", 0x92, 3, 176),
                                              ("F000000001", 0x94, 3, 248),
                                              ("F000000001", 0x95, 65537, 144)}


# -- restrictions' data (Book 3 10.4) --------------------------------------------------

def test_expired_and_not_yet_effective_dates_book3_10_4_3() -> None:
    def dates(name: str) -> tuple[bytes, bytes]:
        card = make(name)
        select_app(card)
        recs = records(card, afl_of(gpo(card)[0])[1])
        return recs[0x5F24], recs[0x5F25]

    assert dates("expired")[0] == bytes.fromhex("221231")
    assert dates("not-yet-effective") == (bytes.fromhex("491231"), bytes.fromhex("451201"))


def test_gpo_6985_conditions_of_use_book3_6_5_8() -> None:
    card = make("gpo-6985")
    fci, _ = select_app(card)
    assert tlv.find(tlv.parse(fci), 0x9F38) == bytes.fromhex("9F1A02")
    assert gpo(card, "0276")[1] == 0x6985
    assert gpo(card, "0840")[1] == 0x9000
    select_app(card, "F0000000012010")
    assert gpo(card)[1] == 0x9000


# -- issuer scripts (Book 3 10.10) -----------------------------------------------------

def test_script_application_block_and_unblock_book3_6_5_1() -> None:
    card = make("online-pin")
    select_app(card)
    assert apdu(card, "841E000000")[1] == 0x6700  # the MAC is counted in Lc
    assert apdu(card, cmd("841E0000", "11223344", le=False))[1] == 0x9000
    assert select_app(card)[1] == 0x6283
    assert apdu(card, cmd("84180000", "11223344", le=False))[1] == 0x9000
    assert select_app(card)[1] == 0x9000
    assert apdu(card, cmd("84DA9F14", "03" + "11223344", le=False))[1] == 0x9000
    assert apdu(card, cmd("80DA9F14", "03" + "11223344", le=False))[1] == 0x6E00


# -- hostile profiles (the kernel's defences) -------------------------------------------

def _read(card: ChipCard, p1p2: str) -> bytes:
    r = card.apdu(bytes.fromhex("00B2" + p1p2 + "00"))
    assert r[-2:] == b"\x90\x00"
    return r[:-2]


@pytest.mark.parametrize("name, error", [("garbage-tlv", "longer than 3 bytes"),
                                         ("length-past-end", "past the end"),
                                         ("recursive-template", "nested deeper")])
def test_hostile_records_are_not_ber_tlv_book3_annex_b(name: str, error: str) -> None:
    card = make(name)
    select_app(card)
    gpo(card)
    with pytest.raises(tlv.TlvError, match=error):
        tlv.parse(_read(card, "020C"), padding=True)


def test_huge_record_book3_10_2() -> None:
    card = make("huge-record")
    select_app(card)
    _, afl = afl_of(gpo(card)[0])
    assert afl[-4:] == bytes([3 << 3, 1, 255, 0])
    for n in (1, 255):
        rec = _read(card, f"{n:02X}1C")
        assert len(rec) == 256 and len(tlv.parse(rec)[0].value) == 253


def test_wrong_sw_and_gpo_without_afl_book3_6_5_8() -> None:
    card = make("wrong-sw")
    select_app(card)
    data, sw = gpo(card)
    assert sw == 0x9001 and tlv.parse(data)[0].tag == 0x80
    card = make("gpo-no-afl")
    select_app(card)
    data, sw = gpo(card)
    assert sw == 0x9000 and [t.tag for t in tlv.parse(data)[0].children] == [0x82]


# -- the profiles' table --------------------------------------------------------------

def _luhn(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_profiles_table() -> None:
    assert list(describe()) == list(PROFILES)
    assert describe()["mute"] == PROFILES["mute"].describe()
    for required in ("online-pin", "offline-pin", "cda-enciphered-pin", "no-pse", "mute",
                     "blocked-app", "blocked-card", "expired", "not-yet-effective",
                     "aac-first", "bad-issuer-cert", "bad-sdad", "unknown-ca-index",
                     "velocity-limit", "new-card", "sda", "t0", "pulled-at-gpo",
                     "pulled-at-read-record", "pulled-at-first-ac", "pulled-at-second-ac",
                     "arpc-required", "garbage-tlv", "length-past-end", "wrong-sw",
                     "huge-record", "recursive-template", "gpo-no-afl"):
        assert required in PROFILES
    assert all(_luhn(p.pan) and p.description for p in PROFILES.values())
    assert {(n, PROFILES[n].pan, PROFILES[n].psn) for n in
            ("online-pin", "offline-pin", "cda-enciphered-pin", "no-pse", "mute")} == {
        ("online-pin", "4761739001010218", "01"), ("offline-pin", "5413330089010020", "00"),
        ("cda-enciphered-pin", "4761739001010333", "01"),
        ("no-pse", "4005550000000035", "01"), ("mute", "4761739001010457", "01")}
    with pytest.raises(KeyError, match="online-pin"):
        make("no-such-card")
    assert chipcard.make("sda").name == "sda"


def test_reset_clears_the_transaction_but_not_the_counters() -> None:
    card = make("offline-pin")
    select_app(card)
    gpo(card)
    first_ac(card, "80")
    assert card.reset() == chipcard.ATR_T1
    assert apdu(card, cmd("80AE4000", cdol1() + "3030"))[1] == 0x6985  # nothing selected
    select_app(card)
    gpo(card)
    assert first_ac(card, "80")[0x9F36] == b"\x00\x22"


def transmit(card: ChipCard, command: bytes) -> tuple[bytes, int]:
    """A terminal's transport layer (Book 1 9.3.1.1 and Annex A): under T=0, case 4
    commands go without Le, 61xx is fetched with GET RESPONSE, 6Cxx repeated with Le."""
    t0 = card.profile.protocol == "T=0"
    if t0 and len(command) > 5 and len(command) == 6 + command[4]:
        command = command[:-1]
    r = card.apdu(command)
    for _ in range(10):
        if t0 and r[0] == 0x6C:
            r = card.apdu(command[:4] + r[1:2])
        elif t0 and r[-2] == 0x61:
            data = r[:-2]
            r = card.apdu(bytes([0, 0xC0, 0, 0, r[-1]]))
            r = data + r
        else:
            break
    return r[:-2], int.from_bytes(r[-2:], "big")


PLAIN = [n for n, p in PROFILES.items() if not p.fault and not p.pulled_at
         and p.protocol != "mute"]


@pytest.mark.parametrize("name", PLAIN)
def test_every_plain_profile_runs_a_transaction_book3_10(name: str) -> None:
    """Selection (PSE or AID), GPO with zeros for the PDOL, the AFL's records, an ARQC
    that emvkeys reproduces; under T=0 through GET RESPONSE and 6Cxx."""
    card = make(name)
    card.power_on()
    if card.profile.pse:
        fci, sw = transmit(card, bytes.fromhex(cmd("00A40400", PSE)))
        assert sw == 0x9000
        sfi = tlv.find(tlv.parse(fci), 0x88)[0]  # type: ignore[index]
        directory, sw = transmit(card, bytes([0, 0xB2, 1, sfi << 3 | 4, 0]))
        aid = tlv.find(tlv.parse(directory), 0x4F)
    else:
        aid = card.files.apps[0].aid
    fci, sw = transmit(card, bytes.fromhex(cmd("00A40400", aid.hex())))  # type: ignore[union-attr]
    assert sw == 0x9000
    pdol = tlv.find(tlv.parse(fci), 0x9F38) or b""
    size = sum(n for _, n in tlv.parse_dol(pdol))
    data, sw = transmit(card, bytes.fromhex(cmd("80A80000", f"83{size:02X}" + "00" * size)))
    assert sw == 0x9000
    aip, afl = afl_of(data)
    for i in range(0, len(afl), 4):
        for n in range(afl[i + 1], afl[i + 2] + 1):
            rec, sw = transmit(card, bytes([0, 0xB2, n, afl[i] | 4, 0]))
            assert sw == 0x9000 and tlv.parse(rec)[0].tag == 0x70
    atc = card.memory.atc + 1
    data, sw = transmit(card, bytes.fromhex(cmd("80AE8000", cdol1())))
    assert sw == 0x9000
    ac = ac_fields(data)
    assert ac[0x9F27] == b"\x80" and int.from_bytes(ac[0x9F36], "big") == atc
    assert ac[0x9F26] == expected_ac(name, atc, aip, ac[0x9F10], EXAMPLE)
