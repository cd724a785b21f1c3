"""Parse one line from a magnetic stripe reader into card data or a bad-read reason.

The reader sends, per swipe, an optional track 1 (ISO/IEC 7813 format B) and
track 2, each between its start sentinel (`%` or `;`) and `?`:

    %B<PAN>^<NAME>^<YYMM><SVC><discretionary>?;<PAN>=<YYMM><SVC><discretionary>?

Track 2 is what counts; track 1 only adds the cardholder name, and when both are
read their account numbers must agree. A track the reader could not decode is
sent as `%E?` or `;E?`.

`parse_swipe` is pure and never raises: every kind of bad read becomes a
`CardReadFailed` with a short display text and a log detail that holds only
lengths and counts, never track data. `unterminated` and `overlong` give the bad
read for bytes the framer had to give up on: a line the reader never ended
(it went quiet first) and a run of bytes too long to be a swipe. Luhn and
expiry-in-the-past checks are the core's business, not the parser's.
"""

from __future__ import annotations

from firmware.core.card import CardData
from firmware.core.events import CardReadFailed

MAX_LINE = 256  # longer than any real swipe: treated as noise
TRACK2_MAX = 37  # ISO/IEC 7813: data characters between the track 2 sentinels

# Display texts (at most 20 characters), one per kind of bad read.
TRACK2_NOT_READ = "TRACK 2 NOT READ"
CARD_NOT_READ = "CARD NOT READ"
INCOMPLETE_SWIPE = "INCOMPLETE SWIPE"
INVALID_CARD_NUMBER = "INVALID CARD NUMBER"
INVALID_EXPIRY = "INVALID EXPIRY"
TRACKS_DO_NOT_MATCH = "TRACKS DO NOT MATCH"

_DIGITS = frozenset("0123456789")
# Characters track 2 discretionary data may hold (the 5-bit track 2 set without sentinels).
_TRACK2_DISCRETIONARY = frozenset("0123456789:<=>")
_STRIP = b"\x00\t\r\n "  # line-ending and idle-line bytes around a swipe


def parse_swipe(line: bytes) -> CardData | CardReadFailed:
    """Parse one line the reader sent (without its trailing CR)."""
    data = line.strip(_STRIP)
    if not data:
        return CardReadFailed(CARD_NOT_READ, "empty line from the reader")
    if len(data) > MAX_LINE:
        return CardReadFailed(CARD_NOT_READ, f"line of {len(data)} bytes is too long for a swipe")
    unprintable = sum(1 for b in data if not 0x20 <= b <= 0x7E)
    if unprintable:
        return CardReadFailed(
            CARD_NOT_READ, f"line noise: {unprintable} of {len(data)} bytes are not printable ASCII"
        )
    split = _split_tracks(data.decode("ascii"))
    if isinstance(split, CardReadFailed):
        return split
    track1, track2 = split
    return _card_from_tracks(track1, track2)


def unterminated(data: bytes, silence: float | None) -> CardReadFailed:
    """The bad read for bytes that no line end followed before `silence` seconds of
    quiet passed (None: before the reader was lost).

    Bytes that start like a swipe (a start sentinel) are an incomplete swipe, even
    if both tracks are there: a reader always ends a swipe with CR, so a line
    without one is not trusted. Anything else is line noise.
    """
    body = data.strip(_STRIP)
    if silence is None:
        what = f"{len(data)} bytes, then the reader was lost"
    else:
        what = f"{len(data)} bytes and no carriage return within {silence:g} s"
    if body[:1] in (b"%", b";"):
        return CardReadFailed(INCOMPLETE_SWIPE, f"swipe cut short: {what}")
    return CardReadFailed(CARD_NOT_READ, f"line noise: {what}")


def overlong(limit: int = MAX_LINE) -> CardReadFailed:
    """The bad read for more than `limit` bytes without a line end (the rest is dropped)."""
    return CardReadFailed(CARD_NOT_READ, f"more than {limit} bytes without a carriage return")


def _split_tracks(text: str) -> tuple[str | None, str | None] | CardReadFailed:
    """Cut the line into the text of track 1 and track 2 (None when absent)."""
    pos = 0
    track1: str | None = None
    track2: str | None = None
    if text.startswith("%"):
        end = text.find("?", 1)
        if end < 0:
            return CardReadFailed(INCOMPLETE_SWIPE, "track 1 has no end sentinel")
        track1 = text[1:end]
        if ";" in track1 or "%" in track1:
            return CardReadFailed(INCOMPLETE_SWIPE, "track 1 ends without its end sentinel")
        pos = end + 1
    if text.startswith(";", pos):
        end = text.find("?", pos + 1)
        if end < 0:
            return CardReadFailed(INCOMPLETE_SWIPE, "track 2 has no end sentinel")
        track2 = text[pos + 1 : end]
        pos = end + 1
    if track1 is None and track2 is None:
        return CardReadFailed(
            CARD_NOT_READ, f"line noise: {len(text)} characters without a track start sentinel"
        )
    if pos != len(text):
        return CardReadFailed(
            CARD_NOT_READ, f"{len(text) - pos} unexpected characters after the tracks"
        )
    return track1, track2


def _card_from_tracks(track1: str | None, track2: str | None) -> CardData | CardReadFailed:
    if track2 is None or track2 in ("", "E"):
        if track1 in ("", "E"):
            return CardReadFailed(CARD_NOT_READ, "neither track could be read")
        if track2 is None:
            return CardReadFailed(TRACK2_NOT_READ, "no track 2 on the line")
        if track2 == "E":
            return CardReadFailed(TRACK2_NOT_READ, "the reader reported a track 2 read error")
        return CardReadFailed(TRACK2_NOT_READ, "track 2 is empty")
    card = _parse_track2(track2)
    if isinstance(card, CardReadFailed):
        return card
    if track1 in (None, "", "E"):
        return card
    return _add_track1(card, track1)


def _parse_track2(track2: str) -> CardData | CardReadFailed:
    sep = track2.find("=")
    if sep < 0:
        return CardReadFailed(CARD_NOT_READ, "track 2 has no field separator")
    pan, rest = track2[:sep], track2[sep + 1 :]
    if not _all_digits(pan) or not 12 <= len(pan) <= 19:
        return CardReadFailed(
            INVALID_CARD_NUMBER,
            f"track 2 account number has {len(pan)} characters, "
            f"{sum(c in _DIGITS for c in pan)} of them digits (needs 12 to 19 digits)",
        )
    expiry, service_code, discretionary = rest[:4], rest[4:7], rest[7:]
    if len(expiry) != 4 or not _all_digits(expiry):
        return CardReadFailed(INVALID_EXPIRY, "track 2 expiry date is missing or not 4 digits")
    if not 1 <= int(expiry[2:]) <= 12:
        return CardReadFailed(INVALID_EXPIRY, "track 2 expiry month is not 01 to 12")
    if len(service_code) != 3 or not _all_digits(service_code):
        return CardReadFailed(CARD_NOT_READ, "track 2 service code is missing or not 3 digits")
    if not set(discretionary) <= _TRACK2_DISCRETIONARY:
        return CardReadFailed(CARD_NOT_READ, "track 2 discretionary data has invalid characters")
    if len(track2) > TRACK2_MAX:
        return CardReadFailed(
            CARD_NOT_READ, f"track 2 has {len(track2)} characters (at most {TRACK2_MAX})"
        )
    return CardData(pan=pan, expiry=expiry, service_code=service_code, track2=track2)


def _add_track1(card: CardData, track1: str) -> CardData | CardReadFailed:
    """Take the name from a format B track 1 whose account number agrees with track 2.

    A track 1 in another format adds nothing and is ignored: track 2 is enough.
    """
    fields = track1.split("^")
    if len(fields) < 3 or not fields[0].startswith("B"):
        return card
    if fields[0][1:].replace(" ", "") != card.pan:
        return CardReadFailed(
            TRACKS_DO_NOT_MATCH, "track 1 and track 2 carry different account numbers"
        )
    return CardData(
        pan=card.pan,
        expiry=card.expiry,
        service_code=card.service_code,
        track2=card.track2,
        name=fields[1].strip(),
    )


def _all_digits(text: str) -> bool:
    return bool(text) and set(text) <= _DIGITS
