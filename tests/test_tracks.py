"""Tests of the magnetic stripe track parser (drivers.tracks)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.tracks import (
    CARD_NOT_READ,
    INCOMPLETE_SWIPE,
    INVALID_CARD_NUMBER,
    INVALID_EXPIRY,
    TRACK2_NOT_READ,
    TRACKS_DO_NOT_MATCH,
    overlong,
    parse_swipe,
    unterminated,
)
from firmware.core.card import CardData
from firmware.core.events import CardReadFailed
from hwsim.cards import (
    BAD_SWIPE_KINDS,
    LUHN_FAIL_PAN,
    TEST_CARDS,
    CardProfile,
    bad_swipe,
    swipe_line,
)

EXAMPLE = (
    b"%B4761739001010010^CARDHOLDER/TEST^30122011000000000000?"
    b";4761739001010010=30122011000000000000?"
)
REASONS = {
    CARD_NOT_READ,
    INCOMPLETE_SWIPE,
    INVALID_CARD_NUMBER,
    INVALID_EXPIRY,
    TRACK2_NOT_READ,
    TRACKS_DO_NOT_MATCH,
}


def line(data: bytes) -> bytes:
    """A reader line without its trailing CR."""
    assert data.endswith(b"\r")
    return data[:-1]


def failed(result: CardData | CardReadFailed) -> CardReadFailed:
    assert isinstance(result, CardReadFailed), result
    return result


def test_reference_example_parses() -> None:
    card = parse_swipe(EXAMPLE)
    assert card == CardData(
        pan="4761739001010010",
        expiry="3012",
        service_code="201",
        track2="4761739001010010=30122011000000000000",
        name="CARDHOLDER/TEST",
    )


def test_track2_alone_is_enough() -> None:
    card = parse_swipe(b";4761739001010010=30122011000000000000?")
    assert isinstance(card, CardData)
    assert (card.pan, card.name) == ("4761739001010010", "")


def test_unread_track1_leaves_the_name_empty() -> None:
    card = parse_swipe(b"%E?;5413330089010012=3012101?")
    assert isinstance(card, CardData)
    assert card.name == "" and card.track2 == "5413330089010012=3012101"


def test_name_is_stripped_and_trailing_line_end_tolerated() -> None:
    card = parse_swipe(b"%B4761739001010010^DOE/JOHN      ^3012101?;4761739001010010=3012101?\r\n")
    assert isinstance(card, CardData) and card.name == "DOE/JOHN"


@pytest.mark.parametrize("profile", TEST_CARDS, ids=lambda c: c.pan)
def test_every_test_card_round_trips(profile: CardProfile) -> None:
    card = parse_swipe(line(swipe_line(profile.pan, expiry="2711", name="SMITH/ANN")))
    assert isinstance(card, CardData)
    assert card.pan == profile.pan
    assert card.expiry == "2711"
    assert card.service_code == profile.service_code
    assert card.name == "SMITH/ANN"
    assert card.track2.startswith(f"{profile.pan}=2711{profile.service_code}")
    assert "?" not in card.track2 and ";" not in card.track2


def test_luhn_and_past_expiry_are_not_the_parsers_business() -> None:
    card = parse_swipe(line(swipe_line(LUHN_FAIL_PAN, expiry="0001")))
    assert isinstance(card, CardData) and card.pan == LUHN_FAIL_PAN and card.expiry == "0001"


@pytest.mark.parametrize("pan", ["476173900101", "4761739001010010123"])
def test_pan_lengths_12_and_19_are_accepted(pan: str) -> None:
    card = parse_swipe(line(swipe_line(pan)))
    assert isinstance(card, CardData) and card.pan == pan
    assert len(card.track2) <= 37


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("track2_error", TRACK2_NOT_READ),
        ("both_error", CARD_NOT_READ),
        ("noise", CARD_NOT_READ),
        ("partial", INCOMPLETE_SWIPE),
        ("overlong", CARD_NOT_READ),
    ],
)
def test_each_bad_read_kind_has_its_reason(kind: str, reason: str) -> None:
    assert kind in BAD_SWIPE_KINDS
    for seed in range(20):
        assert failed(parse_swipe(line(bad_swipe(kind, seed=seed)))).reason == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", CARD_NOT_READ),
        (b";E?", TRACK2_NOT_READ),
        (b"%B4761739001010010^A/B^3012101?", TRACK2_NOT_READ),
        (b"%E?", CARD_NOT_READ),
        (b"%B4761739001010010^A/B^3012101", INCOMPLETE_SWIPE),
        (b"%B4761739001010010^A/B^3012101;4761739001010010=3012101?", INCOMPLETE_SWIPE),
        (b";4761739001010010=3012101", INCOMPLETE_SWIPE),
        (b";47617390010=3012101?", INVALID_CARD_NUMBER),
        (b";47617390010100101234=3012101?", INVALID_CARD_NUMBER),
        (b";4761739001O10010=3012101?", INVALID_CARD_NUMBER),
        (b";=3012101?", INVALID_CARD_NUMBER),
        (b";4761739001010010=3013101?", INVALID_EXPIRY),
        (b";4761739001010010=3000101?", INVALID_EXPIRY),
        (b";4761739001010010=30?", INVALID_EXPIRY),
        (b";4761739001010010=3012?", CARD_NOT_READ),
        (b";4761739001010010?", CARD_NOT_READ),
        (b";4761739001010010=3012101ABC?", CARD_NOT_READ),
        (b";4761739001010010=3012101000000000000000000000?", CARD_NOT_READ),
        (b";4761739001010010=3012101?garbage", CARD_NOT_READ),
        (b"garbage;4761739001010010=3012101?", CARD_NOT_READ),
        (b";4761739001010010=3012101?\x00\xff", CARD_NOT_READ),
        (b"%B5413330089010012^A/B^3012101?;4761739001010010=3012101?", TRACKS_DO_NOT_MATCH),
    ],
)
def test_specific_bad_reads(data: bytes, reason: str) -> None:
    result = failed(parse_swipe(data))
    assert result.reason == reason
    assert result.detail


def test_reasons_fit_the_display() -> None:
    for reason in REASONS:
        assert len(reason) <= 20 and reason == reason.upper()


def _check(result: object, pan: str | None = None) -> None:
    assert isinstance(result, CardData | CardReadFailed)
    if isinstance(result, CardReadFailed):
        assert result.reason in REASONS
        # Details hold lengths and counts only: no run of digits long enough to be card data.
        assert not re.search(r"\d{4}", result.detail), result.detail
        if pan:
            assert pan not in result.detail and pan not in result.reason


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    _check(parse_swipe(data))


_PIECES = st.one_of(
    st.sampled_from([b"%", b";", b"?", b"^", b"=", b"E", b"B", b"%B", b";E?", b"%E?", b"\r"]),
    st.binary(max_size=4),
    st.from_regex(rb"\A[0-9]{1,20}\Z"),
    st.from_regex(rb"\A[A-Z /]{0,8}\Z"),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=25).map(b"".join))
def test_bytes_mixed_with_sentinels_never_raise(data: bytes) -> None:
    _check(parse_swipe(data))


@settings(max_examples=300, deadline=None)
@given(
    pan=st.from_regex(r"\A[0-9]{12,19}\Z"),
    expiry=st.from_regex(r"\A[0-9]{4}\Z"),
    cut=st.integers(min_value=0, max_value=120),
    junk=st.binary(max_size=6),
)
def test_damaged_swipes_never_leak_the_pan(pan: str, expiry: str, cut: int, junk: bytes) -> None:
    good = line(swipe_line(pan, expiry=expiry))
    for data in (good, good[:cut], good[:cut] + junk + good[cut:], junk + good):
        result = parse_swipe(data)
        _check(result, pan)
        if isinstance(result, CardData):
            assert result.pan == pan


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%B4761739001010010^A/B^30", INCOMPLETE_SWIPE),
        (b";4761739001010010=3012101?", INCOMPLETE_SWIPE),  # whole, but never ended
        (b"\x00 %E?", INCOMPLETE_SWIPE),
        (b"4761739001010010", CARD_NOT_READ),
        (b"\x1b[2J\xff", CARD_NOT_READ),
        (b"\x00", CARD_NOT_READ),
        (b"?;", CARD_NOT_READ),
    ],
)
def test_unterminated_bytes_are_a_bad_read(data: bytes, reason: str) -> None:
    result = unterminated(data, 0.3)
    assert result.reason == reason
    assert result.detail.endswith(f"{len(data)} bytes and no carriage return within 0.3 s")
    _check(result, "4761739001010010")
    lost = unterminated(data, None)
    assert lost.reason == reason and lost.detail.endswith("then the reader was lost")


def test_overlong_is_card_not_read() -> None:
    assert overlong() == CardReadFailed(
        CARD_NOT_READ, "more than 256 bytes without a carriage return"
    )
    _check(overlong())
