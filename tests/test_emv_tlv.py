"""BER-TLV as EMV uses it (EMV 4.4 Book 3 Annex B) and data object lists (Book 3 5.4),
with a seeded fuzz campaign: whatever bytes a card sends, the codec answers with objects
or a TlvError, never anything else, and never loops."""

from __future__ import annotations

import random

import pytest

from firmware.core.emv import tlv
from firmware.core.emv.tlv import Tlv, TlvError

# a PSE FCI as cards send it (Book 1 11.3.4): 6F { 84 "1PAY.SYS.DDF01", A5 { 88 01, 5F2D "en" } }
FCI = bytes.fromhex("6F1A840E315041592E5359532E4444463031A5088801015F2D02656E")


def test_annex_b_tags_of_one_two_and_three_bytes() -> None:
    """Book 3 Annex B1: b5-b1 of the first byte all set -> more tag bytes while b8 is
    set in the next."""
    got = tlv.parse(bytes.fromhex("5A0147" "9F2601AA" "DF810102BBCC"))
    assert [(t.tag, t.value) for t in got] == [
        (0x5A, b"\x47"), (0x9F26, b"\xaa"), (0xDF8101, b"\xbb\xcc")]


def test_annex_b_lengths_short_and_long_forms() -> None:
    """Book 3 Annex B2: 0-127 in one byte; 81 xx; 82 xx xx."""
    assert tlv.parse(b"\x5a\x81\x80" + bytes(128))[0].value == bytes(128)
    assert tlv.parse(b"\x5a\x82\x01\x00" + bytes(256))[0].value == bytes(256)
    assert tlv.encode_length(127) == b"\x7f"
    assert tlv.encode_length(128) == b"\x81\x80"
    assert tlv.encode_length(256) == b"\x82\x01\x00"


@pytest.mark.parametrize("raw,why", [
    ("5A80", "indefinite"),  # BER's indefinite length: not in EMV
    ("5A830000010047", "3 bytes"),  # a length of more than two bytes
    ("5A05010203", "runs past the end"),
    ("5A8105", "runs past the end"),
    ("9F", "runs past the end"),  # a two-byte tag cut short
    ("5A", "no length"),
    ("9F8181810100", "longer than 3 bytes"),
    ("00", "where a tag was expected"),  # padding where the caller allows none (field 55)
])
def test_annex_b_rejects_what_emv_does_not_allow(raw: str, why: str) -> None:
    with pytest.raises(TlvError, match=why):
        tlv.parse(bytes.fromhex(raw))


def test_order_and_duplicates_are_kept_and_templates_descended() -> None:
    """Duplicates are the caller's to judge (Book 3 10.2: a redundant primitive in the
    records terminates the transaction); the codec keeps what came, in order."""
    got = tlv.parse(FCI)
    assert len(got) == 1 and got[0].constructed
    assert [c.tag for c in got[0].children] == [0x84, 0xA5]
    assert tlv.find(got, 0x88) == b"\x01" and tlv.find(got, 0x5F2D) == b"en"
    twice = tlv.parse(bytes.fromhex("5F2A0209785F2A020840"))
    assert tlv.find_all(twice, 0x5F2A) == [b"\x09\x78", b"\x08\x40"]


def test_padding_between_objects_only_where_allowed() -> None:
    """ISO/IEC 7816-4 5.2.2.1 / Book 3 Annex B: 00 (and FF) bytes between objects in a
    record are skipped when the caller allows them; field 55 allows none."""
    data = bytes.fromhex("00005A0147FF9F260100")
    assert [t.tag for t in tlv.parse(data, padding=True)] == [0x5A, 0x9F26]
    with pytest.raises(TlvError):
        tlv.parse(data)


def test_templates_nested_past_the_limit_are_refused() -> None:
    deep = b"\x5a\x01\x00"
    for _ in range(tlv.MAX_DEPTH + 2):
        deep = tlv.encode(0xE1, deep)
    with pytest.raises(TlvError, match="nested deeper"):
        tlv.parse(deep)


def test_encode_round_trips() -> None:
    items = [(0x9F02, bytes.fromhex("000000001250")), (0x5F2A, b"\x09\x78"), (0x82, b"\x39\x00"),
             (0x9F10, bytes(200))]
    raw = tlv.encode_all(items)
    assert [(t.tag, t.value) for t in tlv.parse(raw)] == items
    assert Tlv(0x9F36, b"\x00\x01").encode() == bytes.fromhex("9F36020001")


def test_dol_parse_and_build_by_book_3_5_4() -> None:
    """Book 3 5.4: each DOL entry gets exactly its length; n pads on the left and keeps
    the rightmost bytes, cn pads FF on the right, b and an pad zeros on the right and
    keep the leftmost bytes; an object the terminal does not know is zeros."""
    dol = bytes.fromhex("9F0206" "9F1A02" "5A0A" "9F3704" "9F4E04" "DF0102")
    assert tlv.parse_dol(dol) == ((0x9F02, 6), (0x9F1A, 2), (0x5A, 10), (0x9F37, 4),
                                  (0x9F4E, 4), (0xDF01, 2))
    values = {0x9F02: bytes.fromhex("1250"), 0x9F1A: bytes.fromhex("000276"),
              0x5A: bytes.fromhex("4761739001010218"), 0x9F37: b"\x11\x22\x33\x44",
              0x9F4E: b"SHOPNAME"}
    formats = {0x9F02: "n", 0x9F1A: "n", 0x5A: "cn", 0x9F4E: "ans"}
    out = tlv.build_dol(dol, values, formats)
    assert out.hex().upper() == ("000000001250" "0276" "4761739001010218FFFF" "11223344"
                                 "53484F50" "0000")


def test_seeded_fuzz_never_raises_anything_but_tlv_error() -> None:
    """20,000 seeded cases: random bytes, and valid encodings with one byte changed,
    truncated or extended; parse ends with objects or TlvError, whatever it is given."""
    rng = random.Random(19)
    seeds = [FCI, tlv.encode_all([(0x9F26, bytes(8)), (0x9F27, b"\x80"), (0x9F10, bytes(7))]),
             bytes.fromhex("7081B3" + "00" * 179),
             bytes.fromhex("770E9F2701809F360200019F2602AABB")]
    for i in range(20_000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif op == 1 and data:
                    del data[rng.randrange(len(data)):]
                else:
                    data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
            data = bytes(data)
        for padding in (False, True):
            try:
                got = tlv.parse(data, padding=padding)
            except TlvError:
                continue
            # what parsed encodes back to objects of the same tags and values
            again = tlv.parse(b"".join(t.encode() for t in got), padding=padding)
            assert [(t.tag, t.value) for t in again] \
                == [(t.tag, t.value) for t in got]
        try:
            tlv.parse_dol(data)
        except TlvError:
            pass
