"""The EMV kernel from offline data authentication to completion (EMV 4.4 Book 3
10.3 to 10.10, Book 4 6.3, host-interface 8.1), on the scripted card of
test_emv_kernel.py. Each test names the section it checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from firmware.core.emv import oda, tlv
from firmware.core.emv.params import CaKey
from firmware.core.emv.steps import ChipData, HostReply, Response
from tests.test_emv_kernel import (
    OK, FakeCard, default_records, drive, e, offline_terminal, sent, test_terminal,
    txn,
)


def with_records(**extra: bytes) -> dict[tuple[int, int], bytes]:
    """Default records with record 2's objects replaced or added (by hex tag name)."""
    records = default_records()
    for key in records:
        objs = {o.tag: o.value for o in tlv.parse(records[key])[0].children}
        for name, value in extra.items():
            tag = int(name[1:], 16)
            if tag in objs:
                objs[tag] = value
        records[key] = e(0x70, b"".join(e(t, v) for t, v in objs.items() if v != b"-"))
    present = {o.tag for k in records for o in tlv.parse(records[k])[0].children}
    add = b"".join(e(int(n[1:], 16), v) for n, v in extra.items()
                   if int(n[1:], 16) not in present and v != b"-")
    records[(2, 2)] = e(0x70, tlv.parse(records[(2, 2)])[0].value + add)
    return records


def tvr(run_chip: ChipData | None) -> bytes:
    assert run_chip is not None
    return bytes.fromhex(run_chip.tvr)


def bit(tvr_: bytes, byte: int, mask: int) -> bool:
    return bool(tvr_[byte - 1] & mask)


def first_gac_p1(card: FakeCard) -> int:
    return sent(card, 0xAE)[0][2]


# -- 10.3 offline data authentication --------------------------------------------

def test_no_common_oda_method_sets_not_performed_book3_10_3() -> None:
    """Book 3 10.3, Annex C5 byte 1 bit 8: AIP without SDA/DDA/CDA -> ODA not performed."""
    run = drive(FakeCard(), terminal=offline_terminal())
    t = tvr(run.outcome.chip)
    assert bit(t, 1, 0x80) and not bytes.fromhex(run.outcome.chip.tsi)[0] & 0x80  # type: ignore[union-attr]


def _ca() -> CaKey:
    return CaKey(rid=bytes.fromhex("F000000001"), index=1, modulus=bytes(64), exponent=3,
                 expiry=date(2030, 12, 31))


ODA_DATA = {"t8F": b"\x01", "t90": bytes(16), "t9F32": b"\x03", "t9F46": bytes(16),
            "t9F47": b"\x03"}


def _patch_oda(monkeypatch: pytest.MonkeyPatch, fail: str = "") -> list[tuple[str, object]]:
    calls: list[tuple[str, object]] = []

    def step(name: str, result: object):  # type: ignore[no-untyped-def]
        def f(*args: object) -> object:
            calls.append((name, args))
            if name == fail:
                raise oda.OdaError(name)
            return result
        return f
    key = oda.PublicKey(bytes(16), 3)
    monkeypatch.setattr(oda, "static_data", step("static", b"STATIC"))
    monkeypatch.setattr(oda, "issuer_key", step("issuer", key))
    monkeypatch.setattr(oda, "icc_key", step("icc", key))
    monkeypatch.setattr(oda, "verify_sda", step("sda", b"\x12\x34"))
    monkeypatch.setattr(oda, "verify_dda", step("dda", b"\x01\x02\x03\x04"))
    monkeypatch.setattr(oda, "verify_cda", step("cda", bytes.fromhex("CA00FC7521318666")))
    return calls


def test_dda_internal_authenticate_with_default_ddol_book2_6_5(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 2 6.5 / Book 3 10.3: DDA chosen (AIP 20), INTERNAL AUTHENTICATE with the
    default DDOL 9F3704 (card has no 9F49), TSI ODA performed, no failure bit."""
    calls = _patch_oda(monkeypatch)
    card = FakeCard(aip=bytes.fromhex("3C00"), records=with_records(**ODA_DATA))
    run = drive(card, terminal=test_terminal(ca_keys=(_ca(),)))
    assert sent(card, 0x88) == [bytes.fromhex("008800000411223344" "00")]
    assert [c[0] for c in calls] == ["static", "issuer", "icc", "dda"]
    assert calls[3][1][2] == bytes.fromhex("11223344")
    t = tvr(run.outcome.chip)
    assert t[0] == 0 and bytes.fromhex(run.outcome.chip.tsi)[0] & 0x80  # type: ignore[union-attr]


@pytest.mark.parametrize("fail", ["issuer", "icc", "dda"])
def test_dda_failure_sets_its_bit_book3_10_3(monkeypatch: pytest.MonkeyPatch,
                                             fail: str) -> None:
    """Book 3 10.3, Annex C5 byte 1 bit 4: any DDA step failing -> DDA failed."""
    _patch_oda(monkeypatch, fail)
    card = FakeCard(aip=bytes.fromhex("3C00"), records=with_records(**ODA_DATA))
    run = drive(card, terminal=test_terminal(ca_keys=(_ca(),)))
    assert tvr(run.outcome.chip)[0] == 0x08


def test_missing_ca_key_fails_sda_book2_5_2() -> None:
    """Book 2 5.2 / Book 3 10.3: SDA chosen, no CA key for (RID, 8F): SDA failed, and
    SDA selected (C5 byte 1 bit 2)."""
    card = FakeCard(aip=bytes.fromhex("5C00"),
                    records=with_records(**{**ODA_DATA, "t93": bytes(16)}))
    run = drive(card)
    assert tvr(run.outcome.chip)[0] == 0x40 | 0x02


def test_missing_oda_data_sets_icc_data_missing_book3_10_3() -> None:
    """Book 3 10.3: data the method needs is missing -> ICC data missing + DDA failed."""
    card = FakeCard(aip=bytes.fromhex("3C00"))
    run = drive(card, terminal=test_terminal(ca_keys=(_ca(),)))
    assert tvr(run.outcome.chip)[0] == 0x20 | 0x08


def test_default_ddol_without_unpredictable_number_book2_6_5_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 2 6.5.1: no card DDOL and a default DDOL without 9F37 -> no INTERNAL
    AUTHENTICATE; DDA failed and ICC data missing."""
    _patch_oda(monkeypatch)
    t = test_terminal(ca_keys=(_ca(),))
    t = replace(t, aids=(replace(t.aids[0], ddol=bytes.fromhex("9F0206")),))
    card = FakeCard(aip=bytes.fromhex("3C00"), records=with_records(**ODA_DATA))
    run = drive(card, terminal=t)
    assert sent(card, 0x88) == []
    assert tvr(run.outcome.chip)[0] == 0x20 | 0x08


def test_cda_requested_and_verified_at_generate_ac_book2_6_6(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 2 6.6: CDA chosen (AIP bit 1): GENERATE AC P1 bit 5 set; the cryptogram is
    the one verify_cda recovers from 9F4B; its inputs are the UN, CID, the answer
    without 9F4B, the PDOL and CDOL1 data."""
    calls = _patch_oda(monkeypatch)

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0xAE:
            card.gacs.append(apdu)
            body = e(0x9F27, b"\x80") + e(0x9F36, b"\x00\x08") + e(0x9F10, b"\x06\x01")
            return Response(e(0x77, body + e(0x9F4B, bytes(64))), OK)
        return None
    card = FakeCard(aip=bytes.fromhex("1D01"), records=with_records(**ODA_DATA), hook=hook)
    run = drive(card, t=txn(amount=6000), terminal=test_terminal(ca_keys=(_ca(),)),
                host=lambda chip: HostReply("unknown"))
    assert first_gac_p1(card) == 0x90  # ARQC with CDA
    cda = [c for c in calls if c[0] == "cda"][0][1]
    assert cda[2] == bytes.fromhex("11223344") and cda[3] == 0x80  # type: ignore[index]
    assert cda[4] == e(0x9F27, b"\x80") + e(0x9F36, b"\x00\x08") + e(0x9F10, b"\x06\x01")  # type: ignore[index]
    assert cda[5] == b"" and cda[6] == sent(card, 0xAE)[0][5:-1]  # type: ignore[index]
    assert run.online[0].cryptogram == "CA00FC7521318666"
    assert sent(card, 0xAE)[1][2] == 0x00  # unknown -> AAC, no CDA for an AAC


def test_cda_at_second_generate_ac_hashes_cdol1_and_cdol2_book2_6_6_2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 2 6.6.2 step 9: at the second GENERATE AC (TC asked with CDA, P1 50) the
    transaction data hash covers the CDOL1 data then the CDOL2 data."""
    calls = _patch_oda(monkeypatch)

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0xAE:
            cid = b"\x80" if apdu[2] & 0xC0 == 0x80 else b"\x40"
            return Response(e(0x77, e(0x9F27, cid) + e(0x9F36, b"\x00\x08")
                              + e(0x9F4B, bytes(64))), OK)
        return None
    card = FakeCard(aip=bytes.fromhex("1D01"), records=with_records(**ODA_DATA), hook=hook)
    run = drive(card, t=txn(amount=6000), terminal=test_terminal(ca_keys=(_ca(),)),
                host=lambda chip: HostReply("unreachable", offline_ok=True))
    gacs = sent(card, 0xAE)
    assert [g[2] for g in gacs] == [0x90, 0x50]
    cdas = [c[1] for c in calls if c[0] == "cda"]
    assert cdas[1][6] == gacs[0][5:-1] + gacs[1][5:-1]  # type: ignore[index]
    assert run.outcome.decision == "approved" and run.outcome.chip is not None
    assert run.outcome.chip.cryptogram == "CA00FC7521318666"


def test_cda_failure_on_tc_declines_book2_6_6_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 2 6.6.2 / Book 3 10.8: CDA signature failing on a TC -> CDA failed, declined."""
    _patch_oda(monkeypatch, fail="cda")

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0xAE:
            body = e(0x9F27, b"\x40") + e(0x9F36, b"\x00\x08") + e(0x9F4B, bytes(64))
            return Response(e(0x77, body), OK)
        return None
    t = offline_terminal()
    card = FakeCard(aip=bytes.fromhex("1D01"), records=with_records(**ODA_DATA), hook=hook)
    run = drive(card, terminal=replace(t, ca_keys=(_ca(),)))
    assert (run.outcome.decision, run.outcome.stage) == ("declined", "first")
    assert tvr(run.outcome.chip)[0] & 0x04


# -- 10.4 processing restrictions -------------------------------------------------

@pytest.mark.parametrize("extra, byte2", [
    ({"t5F24": bytes.fromhex("261130")}, 0x40),  # expired (Nov 2026 < 7 Dec 2026)
    ({"t5F25": bytes.fromhex("270101")}, 0x20),  # not yet effective
    ({"t9F08": bytes.fromhex("0003")}, 0x80),  # different versions
    ({"t9F07": bytes.fromhex("2900"), "t5F28": bytes.fromhex("0840")}, 0x10),  # domestic only
    ({"t9F07": bytes.fromhex("FE00")}, 0x10),  # not valid at terminals other than ATMs
])
def test_processing_restrictions_book3_10_4(extra: dict[str, bytes], byte2: int) -> None:
    """Book 3 10.4.1-10.4.3: version, AUC (domestic/international goods and services),
    effective and expiration dates -> TVR byte 2."""
    run = drive(FakeCard(records=with_records(**extra)), host=lambda c: HostReply("unknown"))
    assert tvr(run.outcome.chip)[1] == byte2


def test_auc_international_goods_allowed_book3_10_4_2() -> None:
    """Book 3 10.4.2: an international card whose AUC allows international goods."""
    run = drive(FakeCard(records=with_records(t9F07=bytes.fromhex("1100"),
                                              t5F28=bytes.fromhex("0840"))),
                terminal=offline_terminal())
    assert tvr(run.outcome.chip)[1] == 0


# -- 10.5 cardholder verification ------------------------------------------------

@pytest.mark.parametrize("cvm_list, results, text, byte3, tsi", [
    # online PIN always, go on -> PIN pad absent; signature always
    ("42001E00", "1E0000", "SIGNATURE", 0x10, True),
    # online PIN if terminal supports: skipped quietly; then signature
    ("42031E03", "1E0300", "SIGNATURE", 0x00, True),
    ("1F00", "1F0002", "NO CVM", 0x00, True),
    ("0000", "000001", "CVM FAILED", 0x80, True),  # Fail CVM processing
    ("0200", "3F0001", "CVM FAILED", 0x80 | 0x10, True),  # PIN, stop on failure
    ("1500", "3F0001", "CVM FAILED", 0x80 | 0x40, True),  # RFU code: unrecognised
    ("1E0A", "3F0001", "CVM FAILED", 0x80, True),  # RFU condition: never satisfied
    ("1E061F00", "1F0002", "NO CVM", 0x00, True),  # under X (10.00): 12.50 is not
    ("1E071F00", "1E0700", "SIGNATURE", 0x00, True),  # over X
    ("", "3F0000", "NO CVM", 0x00, False),  # no rules: not performed
])
def test_cvm_list_walk_book3_10_5(cvm_list: str, results: str, text: str, byte3: int,
                                  tsi: bool) -> None:
    """Book 3 10.5 and Annex C3, Book 4 6.3.4.5 Table 2: the rules in order, conditions,
    bit 7 'apply succeeding', the terminal without PIN pad, CVM results, TVR byte 3."""
    x = bytes.fromhex("000003E8" "00000000")  # X = 10.00
    card = FakeCard(records=with_records(t8E=x + bytes.fromhex(cvm_list)))
    run = drive(card, host=lambda c: HostReply("unknown"))
    chip = run.outcome.chip
    assert chip is not None
    assert (chip.cvm_results, chip.cvm) == (results, text)
    assert tvr(chip)[2] == byte3
    assert bool(bytes.fromhex(chip.tsi)[0] & 0x40) == tsi


def test_aip_without_cardholder_verification_book3_10_5() -> None:
    """Book 3 10.5: AIP byte 1 bit 5 clear -> CVM results 3F0000, TSI bit clear."""
    run = drive(FakeCard(aip=bytes.fromhex("0C00")), terminal=offline_terminal())
    assert run.outcome.chip is not None and run.outcome.chip.cvm_results == "3F0000"
    assert not bytes.fromhex(run.outcome.chip.tsi)[0] & 0x40


# -- 10.6 terminal risk management ------------------------------------------------

def test_floor_limit_book3_10_6_1() -> None:
    """Book 3 10.6.1: amount >= floor limit -> TVR byte 4 bit 8 (and ARQC by TAC)."""
    card = FakeCard()
    run = drive(card, t=txn(amount=5000), host=lambda c: HostReply("unknown"))
    assert tvr(run.outcome.chip)[3] & 0x80 and first_gac_p1(card) == 0x80
    run = drive(FakeCard(), t=txn(amount=4999), terminal=offline_terminal())
    assert not tvr(run.outcome.chip)[3] & 0x80


def test_offline_rules_count_as_floor_limit_book3_10_6_1() -> None:
    """txn.offline_ok False: the terminal's own rules -> as if over the floor limit."""
    run = drive(FakeCard(), t=txn(offline_ok=False), host=lambda c: HostReply("unknown"))
    assert tvr(run.outcome.chip)[3] & 0x80


@pytest.mark.parametrize("amount, draw, selected", [
    (100, 25, True), (100, 26, False),  # under the threshold: target 25 %
    (3000, 50, True), (3000, 51, False),  # halfway to the floor limit: 25 + (75-25)/2
    (4999, 74, True),
    (5000, 1, False),  # at the floor limit: no random selection
])
def test_random_transaction_selection_book3_10_6_2(amount: int, draw: int,
                                                   selected: bool) -> None:
    """Book 3 10.6.2: target percentage under the threshold, rising linearly to the
    maximum target at the floor limit; selected when the draw is <= the percentage."""
    t = offline_terminal()
    t = replace(t, aids=(replace(t.aids[0], random_threshold=1000, random_target=25,
                                 random_max_target=75),))
    run = drive(FakeCard(), t=txn(amount=amount, random_percent=draw), terminal=t,
                host=lambda c: HostReply("unknown"))
    assert bool(tvr(run.outcome.chip)[3] & 0x10) == selected


@pytest.mark.parametrize("atc, last, sw, byte4, new_card", [
    (7, 5, OK, 0x00, False),
    (9, 5, OK, 0x40, False),  # 4 offline > LCOL 3
    (12, 5, OK, 0x60, False),  # 7 offline > UCOL 6
    (2, 0, OK, 0x00, True),  # never online: new card
    (7, 5, 0x6A88, 0x60, False),  # GET DATA fails: both bits
])
def test_velocity_checking_book3_10_6_3(atc: int, last: int, sw: int, byte4: int,
                                       new_card: bool) -> None:
    """Book 3 10.6.3: GET DATA 9F36 and 9F13 when the card has 9F14 and 9F23."""
    card = FakeCard(records=with_records(t9F14=b"\x03", t9F23=b"\x06"), atc=atc,
                    last_online=last, get_data_sw=sw)
    run = drive(card, terminal=offline_terminal(), host=lambda c: HostReply("unknown"))
    assert [a[:4] for a in sent(card, 0xCA)] == [bytes.fromhex("80CA9F36"),
                                                 bytes.fromhex("80CA9F13")]
    t = tvr(run.outcome.chip)
    assert t[3] & 0x60 == byte4 and bool(t[1] & 0x08) == new_card
    assert bytes.fromhex(run.outcome.chip.tsi)[0] & 0x08  # type: ignore[union-attr]


def test_no_velocity_without_limits_book3_10_6_3() -> None:
    """Book 3 10.6.3: without 9F14/9F23 no GET DATA."""
    card = FakeCard()
    drive(card, terminal=offline_terminal())
    assert sent(card, 0xCA) == []


# -- 10.7 terminal action analysis ------------------------------------------------

@pytest.mark.parametrize("tac_denial, iac_denial, tac_online, iac_online, p1", [
    ("0000000000", "0000000000", "0000000000", "0000000000", 0x40),  # TC
    ("8000000000", "0000000000", "0000000000", "0000000000", 0x00),  # TAC denial
    ("0000000000", "8000000000", "0000000000", "0000000000", 0x00),  # IAC denial
    ("0000000000", "0000000000", "8000000000", "0000000000", 0x80),  # TAC online
    ("0000000000", "0000000000", "0000000000", "8000000000", 0x80),  # IAC online
    ("0000000000", "0000000000", "0000000000", "-", 0x80),  # IAC online absent: all ones
])
def test_terminal_action_analysis_book3_10_7(tac_denial: str, iac_denial: str,
                                            tac_online: str, iac_online: str,
                                            p1: int) -> None:
    """Book 3 10.7: TVR (ODA not performed) against TAC | IAC denial, then online."""
    t = test_terminal()
    t = replace(t, aids=(replace(t.aids[0], tac_denial=bytes.fromhex(tac_denial),
                                 tac_online=bytes.fromhex(tac_online)),))
    iac = b"-" if iac_online == "-" else bytes.fromhex(iac_online)
    card = FakeCard(records=with_records(t9F0E=bytes.fromhex(iac_denial), t9F0F=iac))
    drive(card, terminal=t, host=lambda c: HostReply("unknown"))
    assert first_gac_p1(card) == p1


@pytest.mark.parametrize("tac_default, p1", [("0000000000", 0x40), ("8000000000", 0x00)])
def test_offline_only_terminal_uses_default_codes_book3_10_7(tac_default: str,
                                                             p1: int) -> None:
    """Book 3 10.7: an offline-only terminal (type 23) applies TAC | IAC default."""
    t = test_terminal(type=0x23)
    t = replace(t, aids=(replace(t.aids[0], tac_default=bytes.fromhex(tac_default)),))
    card = FakeCard()
    drive(card, terminal=t)
    assert first_gac_p1(card) == p1


# -- 10.8 first GENERATE AC -------------------------------------------------------

def test_tc_at_first_generate_ac_is_y1_book3_10_8() -> None:
    """Book 3 10.8: TC asked and given: approved at the first stage (Y1), no online."""
    card = FakeCard()
    run = drive(card, terminal=offline_terminal())
    o = run.outcome
    assert (o.decision, o.stage, o.message) == ("approved", "first", "APPROVED")
    assert run.online == [] and o.chip is not None and o.chip.kind == "TC"
    assert sent(card, 0xAE)[0] == bytes.fromhex(
        "80AE4000" "1D" "000000001250" "000000000000" "0276" "8000000000" "0978" "261207"
        "00" "11223344" "00")
    assert o.apdus == len(card.log) and o.bytes_moved > 0


def test_aac_at_first_generate_ac_declines_book3_10_8() -> None:
    """Book 3 10.8: the card answers AAC to a TC request: declined offline."""
    card = FakeCard(decide=lambda asked, n: 0x00)
    run = drive(card, terminal=offline_terminal())
    assert (run.outcome.decision, run.outcome.stage) == ("declined", "first")


def test_arqc_to_tc_request_goes_online_book3_10_8() -> None:
    """Book 3 10.8, Table 12: the card may answer an ARQC to a TC request."""
    card = FakeCard(decide=lambda asked, n: 0x80 if n == 1 else asked)
    run = drive(card, terminal=offline_terminal())
    assert len(run.online) == 1 and run.outcome.stage == "second"


def test_higher_cryptogram_than_asked_is_an_error_book3_10_8() -> None:
    """Book 3 10.8: a TC to an ARQC request is an error: failed."""
    card = FakeCard(decide=lambda asked, n: 0x40)
    run = drive(card)
    assert (run.outcome.decision, run.outcome.message) == ("failed", "CARD ERROR")


def test_generate_ac_format_2_book3_6_5_5() -> None:
    """Book 3 6.5.5.4: format 2 answer (77 with 9F27, 9F36, 9F26, 9F10)."""
    run = drive(FakeCard(gac_format=2), terminal=offline_terminal())
    assert run.outcome.decision == "approved" and run.outcome.chip is not None
    assert run.outcome.chip.atc == "0008"


# -- 10.9, 10.10 online processing and completion ---------------------------------

def scripts_reply(chip: ChipData) -> HostReply:
    s71 = e(0x71, e(0x9F18, b"\x00\x00\x00\x01") + e(0x86, bytes.fromhex("8418000004AABBCCDD")))
    s72 = e(0x72, e(0x9F18, b"\x00\x00\x00\x02") + e(0x86, bytes.fromhex("8424000004AABBCCDD"))
            + e(0x86, bytes.fromhex("8424000004AABBCCDD")))
    return HostReply("answered", "00", e(0x91, bytes.fromhex("8F42F33023B584543030"))
                     + s71 + s72)


def test_online_approval_with_issuer_authentication_and_scripts_book3_10_9() -> None:
    """Book 3 10.9, 10.10; Book 4 6.3.8, 6.3.9: ARQC -> Online; 91 to EXTERNAL
    AUTHENTICATE (AIP bit 3, CDOL2 without 91); 71 before, 72 after the second
    GENERATE AC (TC with 8A = '00'); 9F5B per script; TSI bits."""
    card = FakeCard(script_sws=[OK, OK, 0x6A80])
    run = drive(card, host=scripts_reply)
    kinds = [(a[0], a[1]) for a in card.log]
    ext = kinds.index((0x00, 0x82))
    assert kinds[ext + 1] == (0x84, 0x18)  # script 71
    assert kinds[ext + 2] == (0x80, 0xAE)  # second GENERATE AC
    assert kinds[ext + 3:] == [(0x84, 0x24), (0x84, 0x24)]
    assert card.log[ext] == bytes.fromhex("008200000A8F42F33023B584543030")  # case 3
    second = sent(card, 0xAE)[1]
    assert second[2] == 0x40 and second[-3:-1] == b"00"  # TC, 8A = 3030
    o = run.outcome
    assert (o.decision, o.stage, o.message) == ("approved", "second", "APPROVED")
    assert o.script_results == bytes.fromhex("2000000001" "1200000002")
    assert o.chip is not None and o.chip.kind == "TC"
    assert bytes.fromhex(o.chip.tsi)[0] == 0x40 | 0x20 | 0x10 | 0x08 | 0x04
    assert tvr(o.chip)[4] == 0x10  # script failed after the final GENERATE AC


def test_arpc_rejected_by_the_card_book3_10_9() -> None:
    """Book 3 10.9: EXTERNAL AUTHENTICATE fails -> TVR issuer authentication failed;
    the card then declines: DECLINED BY CARD (host-interface 8.1)."""
    card = FakeCard(ext_auth_sw=0x6300, decide=lambda asked, n: asked if n == 1 else 0x00)
    run = drive(card)
    o = run.outcome
    assert (o.decision, o.stage, o.message) == ("declined", "second", "DECLINED BY CARD")
    assert tvr(o.chip)[4] & 0x40
    assert bytes.fromhex(o.chip.tsi)[0] & 0x10  # type: ignore[union-attr]


def test_issuer_authentication_data_in_cdol2_book3_10_9() -> None:
    """Book 3 10.9: CDOL2 asks for 91 -> no EXTERNAL AUTHENTICATE, 91 in CDOL2 data."""
    card = FakeCard(records=with_records(t8D=bytes.fromhex("8A02910A")))
    drive(card, host=scripts_reply)
    assert sent(card, 0x82) == []
    assert sent(card, 0xAE)[1][5:-1] == b"00" + bytes.fromhex("8F42F33023B584543030")


def test_host_declines_asks_aac_book3_10_9() -> None:
    """Book 3 10.9 / host-interface 8.1: host declines (05) -> AAC with 8A '05'."""
    card = FakeCard()
    run = drive(card, host=lambda c: HostReply("answered", "05"))
    second = sent(card, 0xAE)[1]
    assert second[2] == 0x00 and second[-3:-1] == b"05"
    assert (run.outcome.decision, run.outcome.message) == ("declined", "DECLINED")


@pytest.mark.parametrize("offline_ok, tac_default, p1, arc, decision", [
    (True, "0000000000", 0x40, b"Y3", "approved"),
    (False, "0000000000", 0x00, b"Z3", "declined"),
    (True, "0000008000", 0x00, b"Z3", "declined"),  # floor limit bit in TAC default
])
def test_unreachable_host_default_analysis_book3_10_7(offline_ok: bool, tac_default: str,
                                                     p1: int, arc: bytes,
                                                     decision: str) -> None:
    """Book 3 10.7 (unable to go online), host-interface 8.1: TAC/IAC default and the
    terminal's offline rules -> TC with Y3 or AAC with Z3."""
    t = test_terminal()
    t = replace(t, aids=(replace(t.aids[0], tac_default=bytes.fromhex(tac_default)),))
    card = FakeCard(records=with_records(t9F0D=bytes(5)))
    run = drive(card, t=txn(amount=6000), terminal=t,
                host=lambda c: HostReply("unreachable", offline_ok=offline_ok))
    second = sent(card, 0xAE)[1]
    assert second[2] == p1 and second[-3:-1] == arc
    assert (run.outcome.decision, run.outcome.stage) == (decision, "second")


def test_unknown_outcome_asks_aac_book3_10_9() -> None:
    """host-interface 8.1: sent, no answer -> AAC with Z3, never approved offline."""
    card = FakeCard()
    run = drive(card, host=lambda c: HostReply("unknown"))
    second = sent(card, 0xAE)[1]
    assert second[2] == 0x00 and second[-3:-1] == b"Z3"
    assert run.outcome.decision == "declined"


@pytest.mark.parametrize("code, decision", [("00", "approved"), ("05", "declined")])
def test_refund_aac_goes_online_without_second_ac_host_interface_8_1(
        code: str, decision: str) -> None:
    """host-interface 8.1, Book 3 10.7: a refund asks an AAC; Online with it; the host
    decides; no second GENERATE AC."""
    card = FakeCard()
    run = drive(card, t=txn(kind="refund"), host=lambda c: HostReply("answered", code))
    assert len(sent(card, 0xAE)) == 1 and first_gac_p1(card) == 0x00
    assert run.online[0].kind == "AAC"
    assert tlv.find(tlv.parse(run.online[0].field55), 0x9C) == b"\x20"
    assert (run.outcome.decision, run.outcome.stage) == (decision, "second")


def test_second_generate_ac_answering_arqc_is_an_error_book3_10_9() -> None:
    """Book 3 10.9 (Table 13): the second GENERATE AC answers TC or AAC only."""
    card = FakeCard(decide=lambda asked, n: 0x80)
    run = drive(card)
    assert run.outcome.decision == "failed" and run.outcome.chip is not None
    assert run.outcome.chip.kind == "ARQC"  # the last cryptogram the card gave


def test_removed_after_arqc_is_failed_with_chip_data() -> None:
    """A reader error after the first cryptogram: failed, with that cryptogram."""
    def hook(apdu: bytes) -> Response | None:
        return Response(b"", 0, "CARD REMOVED") if apdu[1] == 0x82 else None
    run = drive(FakeCard(hook=hook))
    o = run.outcome
    assert (o.decision, o.message) == ("failed", "CARD REMOVED")
    assert o.chip is not None and o.chip.kind == "ARQC"


# -- field 55 (host-interface 8.1) ------------------------------------------------

def test_field55_content_host_interface_8_1() -> None:
    """host-interface 8.1: mandatory tags each once, 9F02 = amount BCD, no card data
    (57, 5A, 5F20, 5F24, 5F30...), 5F34 since the card has it; ChipData.card from
    5A, 5F24, 5F30 and 57."""
    run = drive(FakeCard(), t=txn(amount=123456))
    chip = run.online[0]
    objs = tlv.parse(chip.field55)
    tags = [o.tag for o in objs]
    assert len(tags) == len(set(tags))
    for tag in (0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95, 0x9A, 0x9C, 0x9F02, 0x9F03,
                0x5F2A, 0x82, 0x9F1A, 0x9F34, 0x9F33, 0x9F35, 0x84, 0x5F34):
        assert tag in tags, hex(tag)
    assert not set(tags) & {0x57, 0x5A, 0x56, 0x5F20, 0x5F24, 0x5F30, 0x9F1F, 0x9F20,
                            0x9F6B, 0x99}
    value = {o.tag: o.value for o in objs}
    assert value[0x9F02] == bytes.fromhex("000000123456")
    assert value[0x9F37] == bytes.fromhex("11223344") and value[0x9A] == bytes.fromhex("261207")
    assert value[0x9F26].hex().upper() == chip.cryptogram and value[0x9F27] == b"\x80"
    assert chip.card.pan == "5413330089010020" and chip.card.expiry == "2812"
    assert chip.card.service_code == "201" and chip.psn == "00"
    assert chip.card.track2 == "5413330089010020=281220110000000000"


def test_final_field55_has_the_second_cryptogram_and_cdol2_values_host_interface_8_1(
        ) -> None:
    """host-interface 8.1: a TC of the second GENERATE AC: its 9F26/9F27/9F36/9F10 and
    the CDOL2 values (95 as sent then)."""
    card = FakeCard()
    run = drive(card, host=scripts_reply)
    chip = run.outcome.chip
    assert chip is not None
    value = {o.tag: o.value for o in tlv.parse(chip.field55)}
    assert value[0x9F27] == b"\x40" and value[0x9F26].hex().upper() == chip.cryptogram
    cdol2_tvr = sent(card, 0xAE)[1][5 + 6 + 6 + 2:5 + 6 + 6 + 2 + 5]
    assert value[0x95] == cdol2_tvr


def test_removed_during_scripts_after_the_final_cryptogram_book3_10_10() -> None:
    """Book 3 10.10: the card's TC is final; removed during the 72 scripts that follow
    it, the sale stays approved and the scripts count as failed."""
    def hook(apdu: bytes) -> Response | None:
        return Response(b"", 0, "CARD REMOVED") if apdu[1] == 0x24 else None
    run = drive(FakeCard(hook=hook), host=scripts_reply)
    o = run.outcome
    assert (o.decision, o.stage) == ("approved", "second")
    assert tvr(o.chip)[4] & 0x10


def test_removed_at_second_generate_ac_is_failed_at_second_stage() -> None:
    """After the online step a reader error is "failed" at stage "second" (the host's
    approval must then be reversed: host-interface 8.1)."""
    def hook(apdu: bytes) -> Response | None:
        return Response(b"", 0, "CARD REMOVED") if apdu[1] == 0xAE and card.gacs else None
    card = FakeCard()
    card.hook = hook
    run = drive(card)
    assert (run.outcome.decision, run.outcome.stage) == ("failed", "second")
    assert run.outcome.chip is not None and run.outcome.chip.kind == "ARQC"


def test_service_not_allowed_book4_6_3_7() -> None:
    """Book 4 6.3.7 Table 3: an AAC with CID reason 'service not allowed': NOT ACCEPTED."""
    run = drive(FakeCard(decide=lambda asked, n: 0x09), terminal=offline_terminal())
    assert (run.outcome.decision, run.outcome.message) == ("declined", "NOT ACCEPTED")


def test_tc_hash_with_default_tdol_book3_5_4() -> None:
    """Book 3 5.4 / Annex C5 byte 5 bit 8: CDOL1 asks for the TC hash value (98) and the
    card has no TDOL: SHA-1 over the default TDOL's data, "default TDOL used" set."""
    import hashlib
    t = offline_terminal()
    t = replace(t, aids=(replace(t.aids[0], tdol=bytes.fromhex("9F0206")),))
    card = FakeCard(records=with_records(t8C=CDOL1_98))
    run = drive(card, terminal=t)
    assert sent(card, 0xAE)[0][5:-1][-20:] == hashlib.sha1(
        bytes.fromhex("000000001250")).digest()
    assert tvr(run.outcome.chip)[4] & 0x80
    card = FakeCard()  # CDOL1 without 98: no TDOL used, no bit
    run = drive(card, terminal=t)
    assert not tvr(run.outcome.chip)[4] & 0x80


CDOL1_98 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F37049814")


def test_cda_failure_on_arqc_declines_offline_book2_6_6_2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 2 6.6.2 / Book 4 6.3.2: CDA failing on an ARQC: no online step; the card is
    closed with a second GENERATE AC asking an AAC (8A Z1); declined at the first stage."""
    _patch_oda(monkeypatch, fail="cda")

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0xAE:
            cid = b"\x80" if apdu[2] & 0xC0 == 0x80 else b"\x00"
            return Response(e(0x77, e(0x9F27, cid) + e(0x9F36, b"\x00\x08")
                              + e(0x9F26, bytes(8)) + e(0x9F4B, bytes(64))), OK)
        return None
    card = FakeCard(aip=bytes.fromhex("1D01"), records=with_records(**ODA_DATA), hook=hook)
    run = drive(card, t=txn(amount=6000), terminal=test_terminal(ca_keys=(_ca(),)))
    assert run.online == []
    gacs = sent(card, 0xAE)
    assert [g[2] for g in gacs] == [0x90, 0x00] and gacs[1][-3:-1] == b"Z1"
    assert (run.outcome.decision, run.outcome.stage) == ("declined", "first")
    assert tvr(run.outcome.chip)[0] & 0x04
