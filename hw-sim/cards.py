"""Test cards and the exact bytes a magnetic stripe reader sends for a swipe.

`TEST_CARDS` is the test card table of the hardware description as data.
`swipe_line` builds a good swipe (track 1 and track 2, then CR) and `bad_swipe`
the kinds of bad read a real reader produces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRACK2_MAX = 37  # ISO/IEC 7813: data characters between the track 2 sentinels
DISCRETIONARY_LENGTH = 13  # zeros after the service code, as in the reference example
DEFAULT_SERVICE_CODE = "101"
DEFAULT_NAME = "CARDHOLDER/TEST"


@dataclass(frozen=True)
class CardProfile:
    pan: str
    service_code: str
    meant_for: str


TEST_CARDS: tuple[CardProfile, ...] = (
    CardProfile("4761739001010010", "101", "plain magstripe card: online and offline"),
    CardProfile("5413330089010012", "101", "plain magstripe card"),
    CardProfile("4005550000000019", "121", "online authorization required: never offline"),
    CardProfile("4111111111111111", "201", "chip card swiped: never offline"),
    CardProfile("6011000990139424", "120", "PIN required"),
    CardProfile("4000000000000002", "101", "plain card"),
)
LUHN_FAIL_PAN = "4000000000000003"  # one digit off 4000000000000002

BAD_SWIPE_KINDS = ("track2_error", "both_error", "noise", "partial", "overlong")

# Bytes that can never start or shape a track, and never end the line.
_NOISE_BYTES = bytes(b for b in range(256) if b not in b"%;?^=\r\n")


def service_code_for(pan: str) -> str:
    """The table's service code for a test card, else the plain-card default."""
    for card in TEST_CARDS:
        if card.pan == pan:
            return card.service_code
    return DEFAULT_SERVICE_CODE


def swipe_line(
    pan: str,
    *,
    expiry: str = "3012",
    service_code: str | None = None,
    name: str = DEFAULT_NAME,
) -> bytes:
    """The reader's ASCII output for one good swipe, ending with CR.

    Values are not checked, so a test can build a card with a bad number or date.
    """
    svc = service_code_for(pan) if service_code is None else service_code
    zeros = "0" * max(0, min(DISCRETIONARY_LENGTH, TRACK2_MAX - len(pan) - 8))
    track1 = f"%B{pan}^{name}^{expiry}{svc}{zeros}?"
    track2 = f";{pan}={expiry}{svc}{zeros}?"
    return (track1 + track2 + "\r").encode("ascii")


def bad_swipe(kind: str, *, seed: int | None = None) -> bytes:
    """Bytes for one bad read of the given kind (see BAD_SWIPE_KINDS).

    `seed` makes "noise" repeatable.
    """
    pan = TEST_CARDS[0].pan
    good = swipe_line(pan)
    track1 = good[: good.index(b"?") + 1]
    if kind == "track2_error":
        return track1 + b";E?\r"
    if kind == "both_error":
        return b"%E?;E?\r"
    if kind == "noise":
        rng = random.Random(seed)
        return bytes(rng.choice(_NOISE_BYTES) for _ in range(rng.randint(8, 40))) + b"\r"
    if kind == "partial":
        return track1 + f";{pan}=3012".encode("ascii") + b"\r"
    if kind == "overlong":
        return b";" + b"0" * 299 + b"\r"
    raise ValueError(f"unknown bad swipe kind {kind!r}: use one of {', '.join(BAD_SWIPE_KINDS)}")
