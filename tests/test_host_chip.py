"""The simulated host's chip rules (host-interface 1.2, sections 2, 4, 7, 8.1, 8.2, 9.2),
with hand-built 0200, 0220, 0400 and 0320 messages on `Books` (the host's decisions)
and through the ISO codec (fields 52 and 53).

Cryptograms are checked against the keys of EMV 4.4 Book 2 A1.4.1 / A1.3 and 8.1.2
(hwsim.emvkeys, pinned to 8.2's worked example in test_hwsim_emvkeys.py); the ARPC
is Book 2 8.2.1 method 1; issuer scripts are Book 3 10.10 templates 71/72."""

from __future__ import annotations

import random

import iso8583
import pytest

from firmware.core.emv import tlv
from hwsim import emvkeys, hostchip, hostproto
from hwsim.host import AcquirerHost
from hwsim.ledger import Books

PAN, PSN = "4761739001010218", "01"
AID = "F0000000011010"
F7 = "1207101500"
ARQC = "CA00FC7521318666"  # 8.2's worked example

# 8.2's worked example as field 55 objects, and the other mandatory ones
EXAMPLE = [
    (0x9F02, "000000001250"), (0x9F03, "000000000000"), (0x9F1A, "0276"),
    (0x95, "0000008000"), (0x5F2A, "0978"), (0x9A, "261207"), (0x9C, "00"),
    (0x9F37, "11223344"), (0x82, "3900"), (0x9F36, "0001"), (0x9F10, "06010A03A00000"),
    (0x9F26, ARQC), (0x9F27, "80"), (0x9F34, "420300"), (0x9F33, "E0F8C8"),
    (0x9F35, "22"), (0x84, AID), (0x5F34, PSN),
]  # fmt: skip


def icc(objects: list[tuple[int, str]] | None = None, **changes: str) -> str:
    """Field 55 (hex) from (tag, hex) pairs; `changes` replace or drop (``) by tag name
    such as t9F26=..."""
    out = []
    for tag, value in objects or EXAMPLE:
        value = changes.get(f"t{tag:X}", value)
        if value != "-":
            out.append((tag, bytes.fromhex(value)))
    return tlv.encode_all(out).hex().upper()


def with_cryptogram(objects: list[tuple[int, str]], pan: str = PAN, psn: str = PSN) -> list[
        tuple[int, str]]:
    """`objects` with 9F26 computed over them under the test keys."""
    values = {t: bytes.fromhex(v) for t, v in objects}
    sk = emvkeys.session_key(emvkeys.icc_master_key(emvkeys.IMK_AC, pan, psn),
                             int.from_bytes(values[0x9F36], "big"))
    ac = emvkeys.cryptogram(sk, emvkeys.cryptogram_data(values)).hex().upper()
    return [(t, ac if t == 0x9F26 else v) for t, v in objects]


def sale(stan: str = "000001", **fields: str) -> dict[str, str]:
    msg = {"t": "0200", "2": PAN, "3": "000000", "4": "000000001250", "7": F7, "11": stan,
           "12": "101500", "13": "1207", "14": "3012", "22": "051", "23": "001", "25": "00",
           "41": "TERM0001", "42": "MERCHANT0000001", "49": "978", "55": icc(),
           "60": "000001", "62": "000001"}
    msg.update(fields)
    return {k: v for k, v in msg.items() if v != "-"}


@pytest.fixture
def books() -> Books:
    return Books(random.Random(1))


def tags91(answer: dict[str, str]) -> bytes | None:
    if "55" not in answer:
        return None
    return tlv.find(tlv.parse(bytes.fromhex(answer["55"])), 0x91)


# -- 8.2: the cryptogram and tag 91 ----------------------------------------------

def test_right_arqc_approved_with_tag_91_of_the_worked_example_8_2(books: Books) -> None:
    """8.2: the worked example's ARQC is right; 0210 00 carries 91 = 8F42F33023B584543030."""
    answer = books.answer(sale())
    assert answer["39"] == "00"
    assert answer["55"] == "91" "0A" "8F42F33023B58454" "3030"
    (entry,) = books.entries()
    assert entry["charged"] and entry["entry_mode"] == "051"
    assert entry["aid"] == AID and entry["cryptogram"] == "ARQC"
    assert PAN not in str(entry)


def test_wrong_arqc_declined_05_never_charged_8_2(books: Books) -> None:
    answer = books.answer(sale(**{"55": icc(t9F26="CA00FC7521318667")}))
    assert answer["39"] == "05"
    (entry,) = books.entries()
    assert not entry["charged"] and entry["code"] == "05"
    # the host checked it: tag 91 with ARC "05", over the ARQC received
    sk = hostchip.session_key(sale(), hostchip.parse_icc(icc()))
    assert tags91(answer) == emvkeys.arpc(sk, bytes.fromhex("CA00FC7521318667"), b"05") + b"05"


def test_another_scheme_declined_05_without_tag_91_8_2(books: Books) -> None:
    answer = books.answer(sale(**{"55": icc(t84="A0000000031010")}))
    assert answer["39"] == "05" and "55" not in answer
    assert not books.entries()[0]["charged"]


def test_cents_decline_after_a_right_arqc_carries_91_with_its_code_7_8_1() -> None:
    """Section 7: the other cents conventions come after the cryptogram; the ARC is the
    host's own field 39 (8.1)."""
    books = Books(random.Random(1))
    objects = with_cryptogram([(t, "000000001251" if t == 0x9F02 else v) for t, v in EXAMPLE])
    answer = books.answer(sale(**{"4": "000000001251", "55": icc(objects)}))
    assert answer["39"] == "51"
    assert tags91(answer)[8:] == b"51"  # type: ignore[index]


def test_busy_cents_come_before_field_55_checks_section_7(books: Books) -> None:
    """Section 7: 91/96 cents before field 55 malformed; no field 55 with 91/96."""
    answer = books.answer(sale(**{"4": "000000001291", "55": icc(t9F26="-")}))
    assert answer["39"] == "91" and "55" not in answer


def test_a_wrong_cryptogram_comes_before_other_cents_section_7(books: Books) -> None:
    objects = [(t, "000000001251" if t == 0x9F02 else v) for t, v in EXAMPLE]  # ARQC stale
    answer = books.answer(sale(**{"4": "000000001251", "55": icc(objects)}))
    assert answer["39"] == "05"


def test_refund_checks_no_cryptogram_and_gets_no_91_8_1(books: Books) -> None:
    objects = [(t, {0x9C: "20", 0x9F27: "00", 0x9F26: "0102030405060708"}.get(t, v))
               for t, v in EXAMPLE]
    answer = books.answer(sale(**{"3": "200000", "55": icc(objects)}))
    assert answer["39"] == "00" and "55" not in answer
    (entry,) = books.entries()
    assert entry["credited"] and entry["cryptogram"] == "AAC"


def test_tc_in_an_advice_checked_8_2(books: Books) -> None:
    objects = with_cryptogram([(t, "40" if t == 0x9F27 else v) for t, v in EXAMPLE])
    advice = sale(**{"t": "0220", "38": "Y10001", "55": icc(objects)})
    answer = books.answer(advice)
    assert answer["39"] == "00" and "55" not in answer
    assert books.entries()[0]["cryptogram"] == "TC"
    wrong = sale("000002", **{"t": "0220", "38": "Y10002", "55": icc(
        [(t, "0011223344556677" if t == 0x9F26 else v) for t, v in objects])})
    assert books.answer(wrong)["39"] == "05"
    assert not books.entries()[1]["charged"]


# -- 8.1: field 55 malformed, forbidden, inconsistent -> 30 ------------------------

@pytest.mark.parametrize("field55, why", [
    (icc() + "00", "padding after the objects (Annex B; 8.1: no padding)"),
    ("00" + icc(), "padding before"),
    (icc()[:-2], "a length past the end"),
    (icc() + "9F3602" + "0001", "a tag twice"),
    ("9F02" "8106" "000000001250" + icc(t9F02="-"), "a length not in its shortest form"),
    (icc(t9F37="-"), "a mandatory tag missing (9F37)"),
    (icc(t84="-"), "a mandatory tag missing (84)"),
    (icc(t9F02="0000000012"), "9F02 of the wrong length"),
    (icc(t9A="2612AB"), "9A not numeric"),
])  # fmt: skip
def test_malformed_field_55_is_30_8_1(books: Books, field55: str, why: str) -> None:
    answer = books.answer(sale(**{"55": field55}))
    assert answer["39"] == "30", why
    assert "55" not in answer and books.entries() == []


@pytest.mark.parametrize("tag", [0x57, 0x5A, 0x56, 0x5F20, 0x5F24, 0x5F30, 0x9F1F, 0x9F20,
                                 0x9F6B, 0x99])
def test_forbidden_tag_is_30_8_1(books: Books, tag: int) -> None:
    answer = books.answer(sale(**{"55": icc(EXAMPLE + [(tag, "4761739001010218")])}))
    assert answer["39"] == "30" and "55" not in answer


def test_forbidden_tag_inside_a_template_is_30_8_1(books: Books) -> None:
    inner = tlv.encode(0x5A, bytes.fromhex(PAN)).hex()
    answer = books.answer(sale(**{"55": icc(EXAMPLE + [(0xBF0C, inner)])}))
    assert answer["39"] == "30"


def test_other_tags_are_ignored_8_1(books: Books) -> None:
    answer = books.answer(sale(**{"55": icc(EXAMPLE + [(0x9F09, "0002"), (0xDF01, "00")])}))
    assert answer["39"] == "00"


@pytest.mark.parametrize("fields, why", [
    ({"55": icc(t9F02="000000001350")}, "9F02 is not field 4"),
    ({"4": "000000001350"}, "field 4 is not 9F02"),
    ({"49": "840"}, "5F2A is not field 49"),
    ({"55": icc(t9C="20")}, "9C 20 with processing code 000000"),
    ({"23": "002"}, "5F34 is not field 23"),
    ({"23": "-"}, "5F34 without field 23"),
    ({"55": icc(t5F34="-")}, "field 23 without 5F34"),
    ({"13": "1208"}, "9A's month and day are not field 13"),
    ({"55": icc(t9F27="40")}, "a TC in a purchase 0200"),
    ({"55": icc(t9F27="00")}, "an AAC in a purchase 0200"),
    ({"3": "200000", "55": icc(t9C="20")}, "an ARQC in a refund"),
])  # fmt: skip
def test_inconsistent_field_55_is_30_8_1(books: Books, fields: dict[str, str],
                                         why: str) -> None:
    answer = books.answer(sale(**fields))
    assert answer["39"] == "30", why
    assert "55" not in answer


def test_an_arqc_in_an_advice_is_30_8_1(books: Books) -> None:
    answer = books.answer(sale(**{"t": "0220", "38": "Y10001"}))
    assert answer["39"] == "30"


@pytest.mark.parametrize("fields, why", [
    ({"22": "901"}, "field 55 with a swipe"),
    ({"22": "801", "23": "-"}, "field 55 with a fallback swipe"),
    ({"55": "-", "23": "-"}, "entry mode 05x without field 55"),
    ({"22": "901", "55": "-"}, "field 23 without entry mode 05x"),
    ({"23": "01A"}, "field 23 not n3"),
])  # fmt: skip
def test_entry_mode_and_fields_23_55_go_together_4_8_1(books: Books, fields: dict[str, str],
                                                       why: str) -> None:
    assert books.answer(sale(**fields))["39"] == "30", why


@pytest.mark.parametrize("mode", ["901", "902", "801", "802", "011"])
def test_swipes_and_fallbacks_accepted_as_before_8_1(books: Books, mode: str) -> None:
    answer = books.answer(sale(**{"22": mode, "23": "-", "55": "-"}))
    assert answer["39"] == "00" and "55" not in answer
    assert books.entries()[0]["entry_mode"] == mode
    assert books.entries()[0]["cryptogram"] is None


def test_a_format_error_comes_before_busy_cents_section_7(books: Books) -> None:
    assert books.answer(sale(**{"4": "000000001291", "22": "901"}))["39"] == "30"


# -- faults: a wrong ARPC, issuer scripts -----------------------------------------

def test_wrong_arpc_fault_keeps_the_arc_8_2() -> None:
    host = AcquirerHost(rng_seed=1)
    host.chip_wrong_arpc()
    books = host._books
    swipe = books.answer(sale("000001", **{"22": "901", "23": "-", "55": "-"}))
    assert "55" not in swipe  # a swipe's 0210 does not take the fault
    first = tags91(books.answer(sale("000002")))
    assert first is not None and first[8:] == b"00"
    assert first[:8] != bytes.fromhex("8F42F33023B58454")
    assert tags91(books.answer(sale("000003"))) == bytes.fromhex("8F42F33023B584543030")
    assert host.faults() == []


def test_repeat_replays_the_answer_without_taking_a_fault_3_8_2() -> None:
    host = AcquirerHost(rng_seed=1)
    books = host._books
    first = books.answer(sale())
    host.chip_wrong_arpc()
    assert books.answer(sale()) == first  # same (41, 11, 7): the stored answer
    assert host.faults()[0]["kind"] == "chip_wrong_arpc"


def test_scripts_fault_within_128_bytes_with_mac_in_lc_8_1_8_2() -> None:
    host = AcquirerHost(rng_seed=1)
    size = host.chip_scripts("both", ("put-data", "unblock"))
    assert size <= hostchip.MAX_SCRIPTS
    answer = host._books.answer(sale())
    objects = tlv.parse(bytes.fromhex(answer["55"]))
    assert objects[0].tag == 0x91
    assert objects[0].value == bytes.fromhex("8F42F33023B584543030")
    templates = objects[1:]
    assert [t.tag for t in templates] == [0x71, 0x72]
    assert sum(len(t.encode()) for t in templates) == size <= 128
    for t in templates:
        assert t.children[0].tag == 0x9F18 and len(t.children[0].value) == 4
        commands = [c.value for c in t.children[1:]]
        assert [c.tag for c in t.children[1:]] == [0x86, 0x86]
        for apdu in commands:
            assert apdu[0] == 0x84
            assert apdu[4] == len(apdu) - 5  # Lc counts the data and the 4-byte MAC
        assert commands[1][4] == 4  # no data: Lc 04
    assert host.faults() == []


def test_scripts_over_128_bytes_refused_8_1() -> None:
    host = AcquirerHost(rng_seed=1)
    with pytest.raises(ValueError, match="at most 128"):
        host.chip_scripts("both", ("put-data",) * 5)
    with pytest.raises(ValueError, match="script commands"):
        host.chip_scripts("72", ("format-card",))


def test_no_scripts_for_a_refund_nor_without_91_8_1() -> None:
    host = AcquirerHost(rng_seed=1)
    host.chip_scripts("72", ("unblock",))
    objects = [(t, {0x9C: "20", 0x9F27: "00"}.get(t, v)) for t, v in EXAMPLE]
    answer = host._books.answer(sale(**{"3": "200000", "55": icc(objects)}))
    assert "55" not in answer
    assert len(host.faults()) == 1  # still waiting for a 0210 with tag 91
    host.clear_faults()
    assert host.faults() == []


# -- 0400 and 0320 shapes ---------------------------------------------------------

def _reversal(field55: str | None, reason: str = "06") -> dict[str, str]:
    msg = {"t": "0400", "2": PAN, "3": "000000", "4": "000000001250", "7": "1207101600",
           "11": "000002", "12": "101500", "13": "1207", "14": "3012", "22": "051",
           "23": "001", "25": "00", "39": reason, "41": "TERM0001",
           "42": "MERCHANT0000001", "49": "978", "60": "000001", "62": "000001",
           "90": "0200" "000001" + F7 + "0" * 22}
    if field55 is not None:
        msg["55"] = field55
    return msg


DECLINE = [(0x9F26, "1122334455667788"), (0x9F27, "00"), (0x9F36, "0002")]


def test_reversal_06_after_a_card_decline_reverses_4(books: Books) -> None:
    """Section 4: 55 of only 9F26, 9F27 (an AAC) and 9F36 -> reversed as usual."""
    assert books.answer(sale())["39"] == "00"
    assert books.answer(_reversal(icc(DECLINE)))["39"] == "00"
    (entry,) = books.entries()
    assert entry["reversed"] and not entry["charged"]


@pytest.mark.parametrize("field55, reason, why", [
    (icc(DECLINE + [(0x95, "0000000000")]), "06", "another tag"),
    (icc(DECLINE[:2]), "06", "9F36 missing"),
    (icc([(0x9F26, "1122334455667788"), (0x9F27, "40"), (0x9F36, "0002")]), "06", "a TC"),
    (icc(DECLINE) + icc([(0x9F36, "0002")]), "06", "9F36 twice"),
    (icc(DECLINE), "68", "field 55 with reason 68"),
    (icc(DECLINE), "17", "field 55 in a void"),
])  # fmt: skip
def test_other_reversal_shapes_are_30_4(books: Books, field55: str, reason: str,
                                        why: str) -> None:
    assert books.answer(sale())["39"] == "00"
    msg = _reversal(field55, reason)
    if reason == "17":
        for f in ("2", "14", "23"):
            del msg[f]
    assert books.answer(msg)["39"] == "30", why
    assert books.entries()[0]["charged"]


def test_reversal_68_of_a_chip_sale_without_55_reverses_4(books: Books) -> None:
    assert books.answer(sale())["39"] == "00"
    assert books.answer(_reversal(None, "68"))["39"] == "00"


def _upload(field55: str | None) -> dict[str, str]:
    msg = {"t": "0320", "3": "000000", "4": "000000001250", "7": "1207180000", "11": "000009",
           "12": "101500", "13": "1207", "37": "000001000001", "38": "123456", "39": "00",
           "41": "TERM0001", "42": "MERCHANT0000001", "49": "978", "60": "000001",
           "62": "000001", "90": "0200" "000001" + F7 + "0" * 22}
    if field55 is not None:
        msg["55"] = field55
    return msg


def test_upload_with_final_cryptogram_and_script_results_logged_4(books: Books) -> None:
    books.answer(sale())
    field55 = icc([(0x9F26, "1122334455667788"), (0x9F27, "40"), (0x9F36, "0001"),
                   (0x95, "0000008000"), (0x9B, "E800"), (0x9F5B, "2000000001")])
    assert books.answer(_upload(field55))["39"] == "00"
    assert books.entries()[0]["charged"]


def test_upload_with_another_tag_is_30_4(books: Books) -> None:
    books.answer(sale())
    assert books.answer(_upload(icc(DECLINE + [(0x9F10, "06010A03A00000")])))["39"] == "30"
    assert books.answer(_upload("9F2601"))["39"] == "30"


# -- section 2 and 9.2: fields 52 and 53 -------------------------------------------

def _codec(msg: dict[str, str]) -> dict[str, str]:
    return hostproto.decode(bytes(hostproto.encode(msg)))


def test_fields_52_and_53_lengths_section_2(books: Books) -> None:
    """Section 2: 52 binary LL 8 or 16 bytes, 53 binary LL 10 or 12 bytes; other lengths
    decode (up to 99) and are answered 30."""
    books.pin_check = lambda req: None  # a right PIN
    ok = _codec(sale(**{"52": "11" * 16, "53": "FFFF9876543210E00001" + "0000"}))
    assert ok["52"] == "11" * 16
    assert books.answer(ok)["39"] == "00"
    raw = hostproto.encode(sale("000002", **{"52": "11" * 8, "53": "AB" * 10}))
    assert b"08" + bytes([0x11]) * 8 in raw and b"10" + bytes([0xAB]) * 10 in raw
    for stan, f52, f53 in (("000003", "11" * 12, "AB" * 10), ("000004", "11" * 8, "AB" * 11),
                           ("000005", "11" * 40, "AB" * 10)):
        msg = _codec(sale(stan, **{"52": f52, "53": f53}))
        assert books.answer(msg)["39"] == "30", (f52, f53)


def test_pin_block_without_a_pin_check_is_81_never_approved_section_7(books: Books) -> None:
    answer = books.answer(sale(**{"52": "11" * 16, "53": "AB" * 12}))
    assert answer["39"] == "81"
    assert not books.entries()[0]["charged"]


def test_pin_hook_comes_after_the_cryptogram_section_7(books: Books) -> None:
    seen: list[str] = []
    books.pin_check = lambda req: seen.append(req["11"]) or "55"  # type: ignore[func-returns-value]
    assert books.answer(sale(**{"52": "11" * 16, "53": "AB" * 12}))["39"] == "55"
    assert books.answer(sale("000002", **{"52": "11" * 16, "53": "AB" * 12,
                                          "55": icc(t9F26="0000000000000000")}))["39"] == "05"
    assert seen == ["000001"]


@pytest.mark.parametrize("fields", [{"52": "11" * 16}, {"53": "AB" * 12}])
def test_52_and_53_go_together_9_1(books: Books, fields: dict[str, str]) -> None:
    assert books.answer(sale(**fields))["39"] == "30"


def test_52_53_only_in_a_0200_9_1(books: Books) -> None:
    objects = with_cryptogram([(t, "40" if t == 0x9F27 else v) for t, v in EXAMPLE])
    advice = sale(**{"t": "0220", "38": "Y10001", "55": icc(objects), "52": "11" * 16,
                     "53": "AB" * 12})
    assert books.answer(advice)["39"] == "30"


def test_wire_view_masks_52_53_and_shows_55_without_card_data_9_2() -> None:
    msg = sale(**{"52": "1B9C1845EB993A7A", "53": "FFFF9876543210E00001",
                  "55": icc(EXAMPLE + [(0x5A, PAN[:16])])})
    view = hostproto.wire_view(msg)
    assert view["52"] == "0" * 16
    assert view["53"] == "FFFF98**********0001"
    assert "9F26=" + ARQC in view["55"] and "5A=[8 bytes hidden]" in view["55"]
    assert PAN not in str(view) and "1B9C1845" not in str(view)
    assert view["23"] == "001"


def test_chip_sale_over_the_wire_0210_carries_91_and_the_wire_log_no_card_data() -> None:
    """Sections 1, 2 and 8.1 over loopback: the 0210 decodes with field 55 = tag 91."""
    import asyncio
    import struct

    async def run() -> tuple[dict[str, str], list[dict[str, object]]]:
        host = AcquirerHost(rng_seed=1)
        events: list[dict[str, object]] = []
        host.on_wire = events.append
        port = await host.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(hostproto.frame(hostproto.encode(sale())))
            await writer.drain()
            (n,) = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 5))
            answer, _ = iso8583.decode(bytearray(await reader.readexactly(n)), hostproto.SPEC)
            writer.close()
            return answer, events
        finally:
            await host.stop()

    answer, events = asyncio.run(run())
    assert answer["t"] == "0210" and answer["39"] == "00"
    assert answer["55"] == "910A8F42F33023B584543030"
    assert PAN not in str(events)
    shown = [e for e in events if e.get("dir") == "out"][0]["fields"]
    assert shown["55"] == "91=8F42F33023B584543030"  # type: ignore[index]
