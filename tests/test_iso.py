"""Message building and parsing against host-interface.md section 4."""

from __future__ import annotations

from datetime import datetime, timezone

import iso8583
import pytest
from iso8583.specs import default as SPEC

from firmware.core import iso
from firmware.core.card import CardData

IDENT = iso.Identity("TERM1", "SHOP1", "978")
CARD = CardData(pan="4761739001010010", expiry="3012", service_code="101",
                track2="4761739001010010=30122011000000000000")
LOCAL = datetime(2026, 11, 23, 9, 5, 7)
UTC = datetime(2026, 11, 23, 8, 5, 7, tzinfo=timezone.utc)


def base() -> dict[str, str]:
    return iso.sale_fields(IDENT, card=CARD, amount=1250, processing_code=iso.PURCHASE,
                           local=LOCAL, batch=1, invoice=42)


def test_0200_has_every_mandatory_field_formatted_per_spec() -> None:
    doc = iso.financial_request(base(), stan=17, utc=UTC, track2=CARD.track2)
    raw = iso.encode(doc)
    back, _ = iso8583.decode(raw, SPEC)
    assert back["t"] == "0200"
    for f in ("2", "3", "4", "7", "11", "12", "13", "14", "22", "25", "35", "41", "42", "49",
              "60", "62"):
        assert f in back, f
    assert back["4"] == "000000001250"
    assert back["7"] == "1123080507"
    assert back["11"] == "000017"
    assert back["12"] == "090507" and back["13"] == "1123"
    assert back["22"] == "902" and back["25"] == "00"
    assert back["41"] == "TERM1   " and back["42"] == "SHOP1          "
    assert back["60"] == "000001" and back["62"] == "000042"
    assert "1" not in back  # no secondary bitmap without fields 65-128


def test_reversal_field_90_and_repeat() -> None:
    orig = iso.financial_request(base(), stan=17, utc=UTC, track2=CARD.track2)
    rev = iso.reversal(orig, orig_mti="0200", orig_stan="000017", orig_f7=orig["7"], stan=18,
                       f7="1123080600", reason="68")
    assert rev["t"] == "0400" and rev["39"] == "68" and "35" not in rev
    assert rev["90"] == "0200" + "000017" + "1123080507" + "0" * 22
    raw = iso.encode(rev)
    back, _ = iso8583.decode(raw, SPEC)
    assert "1" in back  # field 90 needs the secondary bitmap
    rep = iso.repeat(rev)
    assert rep["t"] == "0401" and {k: v for k, v in rep.items() if k != "t"} == \
        {k: v for k, v in rev.items() if k != "t"}


def test_advice_has_no_track_and_carries_offline_code() -> None:
    orig = iso.financial_request(base(), stan=17, utc=UTC, track2=CARD.track2)
    adv = iso.advice(orig, approval="Y31234", stan=20, f7="1123090000")
    assert adv["t"] == "0220" and "35" not in adv and adv["38"] == "Y31234"
    assert adv["12"] == orig["12"] and adv["11"] == "000020"
    with pytest.raises(iso.MessageError):
        iso.repeat(orig)


def test_signon_and_echo() -> None:
    doc = iso.network(IDENT, code="001", stan=1, utc=UTC)
    back, _ = iso8583.decode(iso.encode(doc), SPEC)
    assert back["t"] == "0800" and back["70"] == "001" and back["41"] == "TERM1   "


def test_decode_rejects_garbage_without_leaking_digits() -> None:
    with pytest.raises(iso.MessageError) as err:
        iso.decode(b"0210" + b"\xff" * 8 + b"4761739001010010")
    assert "4761739001010010" not in str(err.value)


def test_mismatch_detection() -> None:
    req = iso.financial_request(base(), stan=17, utc=UTC, track2=None)
    ok = {"t": "0210", "3": req["3"], "4": req["4"], "11": req["11"], "41": req["41"],
          "49": req["49"], "39": "00"}
    assert iso.mismatch(req, ok) is None
    assert "field 4" in (iso.mismatch(req, {**ok, "4": "000000009999"}) or "")
    assert iso.mismatch(req, {k: v for k, v in ok.items() if k != "39"})


def test_framing() -> None:
    assert iso.frame(b"abc") == b"\x00\x03abc"
    with pytest.raises(iso.MessageError):
        iso.frame(b"x" * 2049)


def test_stan_wraps() -> None:
    assert iso.next_stan(999999) == 1 and iso.next_stan(1) == 2
