"""A hostile card never makes the EMV kernel raise or loop (EMV 4.4 Book 3 10.2 and
Annex B: data the terminal cannot parse ends the transaction with a clear outcome).

Seeded fuzzing: thousands of transactions where the scripted card's answers are
mutated (random bytes, truncations, flipped bytes, lengths past the end, wrong status
words, huge records, templates nested without end, GPO without AFL, reader errors),
with random choices and random host replies. Each run must return an `Outcome` within
a bounded number of steps (`drive` fails past its limit)."""

from __future__ import annotations

import random

from firmware.core.emv import tlv
from firmware.core.emv.steps import ChipData, HostReply, Outcome, Response
from tests.test_emv_kernel import FakeCard, drive, e, offline_terminal, test_terminal, txn

DECISIONS = {"approved", "declined", "failed", "fallback", "terminated", "cancelled"}
SWS = [0x9000, 0x6283, 0x6A81, 0x6A82, 0x6A83, 0x6985, 0x6300, 0x6F00, 0x6D00, 0x9001,
       0x6100, 0x0000, 0xFFFF]


def nested(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = e(0x70, inner) if len(inner) < 60000 else inner
    return inner


def mutate(rng: random.Random, r: Response) -> Response:
    data, sw = r.data, r.sw
    choice = rng.randrange(14)
    if choice == 0:
        data = rng.randbytes(rng.randrange(0, 300))
    elif choice == 1 and data:
        data = data[:rng.randrange(len(data))]
    elif choice == 2 and data:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    elif choice == 3 and len(data) > 1:
        data = data[:1] + bytes([rng.choice([0x81, 0x82, 0x83, 0x80, 0xFF, 0x7F])]) + data[2:]
    elif choice == 4:
        sw = rng.choice(SWS)
    elif choice == 5:
        data = e(0x70, rng.randbytes(rng.randrange(200, 4000)))
    elif choice == 6:
        data = nested(rng.randrange(5, 40))
    elif choice == 7:
        data = e(0x77, e(0x82, b"\x1c\x00"))  # GPO without AFL
    elif choice == 8:
        return Response(b"", 0, rng.choice(["CARD REMOVED", "CARD MUTE", "READER GONE"]))
    elif choice == 9:
        data = data + data  # duplicated objects
    elif choice == 10:
        data = e(0x80, rng.randbytes(rng.randrange(0, 60)))
    elif choice == 11:
        data = e(0x77, b"".join(e(rng.choice([0x9F27, 0x9F36, 0x9F26, 0x9F10, 0x82, 0x94,
                                              0x9F4B]), rng.randbytes(rng.randrange(0, 12)))
                                for _ in range(rng.randrange(0, 6))))
    elif choice == 12:
        data = e(0x6F, e(0x84, rng.randbytes(rng.randrange(0, 20)))
                 + e(0xA5, e(0x88, rng.randbytes(1)) + e(0x87, rng.randbytes(1))
                     + e(0x9F38, rng.randbytes(rng.randrange(0, 12)))))
    return Response(data, sw)


def host(rng: random.Random) -> HostReply:
    kind = rng.choice(["answered", "answered", "unknown", "unreachable"])
    f55 = rng.choice([
        b"", rng.randbytes(rng.randrange(0, 40)),
        e(0x91, rng.randbytes(rng.randrange(0, 20))),
        e(0x71, e(0x9F18, rng.randbytes(4)) + e(0x86, rng.randbytes(rng.randrange(0, 12))))
        + e(0x72, e(0x86, rng.randbytes(rng.randrange(0, 12))) * rng.randrange(0, 20)),
    ])
    return HostReply(kind, rng.choice(["00", "05", "51", "", "X", "ZZZ"]), f55,
                     rng.random() < 0.5)


def _check(outcome: Outcome) -> None:
    assert isinstance(outcome, Outcome)
    assert outcome.decision in DECISIONS
    assert len(outcome.message) <= 20
    if outcome.chip is not None:
        objs = tlv.parse(outcome.chip.field55)  # always well formed
        assert len({o.tag for o in objs}) == len(objs)


def test_mutated_card_answers_always_end_in_an_outcome_book3_annex_b() -> None:
    """Book 3 Annex B, 10.2: 3,000 seeded runs with one answer in four mutated."""
    rng = random.Random(20261207)
    seen: set[str] = set()
    for _ in range(3000):
        card = FakeCard(aip=rng.choice([bytes.fromhex("1C00"), bytes.fromhex("5C00"),
                                        bytes.fromhex("3C00"), bytes.fromhex("1D01")]),
                        gpo_format=rng.choice([1, 2]), gac_format=rng.choice([1, 2]),
                        pse=rng.choice(["yes", "none"]))
        rate = rng.choice([0.05, 0.25, 0.6])

        def answer(apdu: bytes, card: FakeCard = card, rate: float = rate) -> Response:
            r = card(apdu)
            return mutate(rng, r) if rng.random() < rate else r
        run = drive(answer, t=txn(amount=rng.choice([100, 1250, 6000]),
                                  kind=rng.choice(["purchase", "purchase", "refund"])),
                    terminal=rng.choice([test_terminal(), offline_terminal()]),
                    host=lambda chip: host(rng),
                    choose=lambda labels: rng.choice([0, 1, 5, -1, None]))
        _check(run.outcome)
        seen.add(run.outcome.decision)
    assert seen >= {"approved", "declined", "failed", "fallback", "terminated"}


def test_random_cards_always_end_in_an_outcome_book1_12() -> None:
    """Book 1 12 and Book 3 10: a card answering pure noise (random data and status
    words) to everything, 2,000 seeded runs."""
    rng = random.Random(4)
    for _ in range(2000):
        def answer(apdu: bytes) -> Response:
            return mutate(rng, Response(rng.randbytes(rng.randrange(0, 64)),
                                        rng.choice(SWS)))
        run = drive(answer, host=lambda chip: host(rng),
                    choose=lambda labels: rng.choice([0, None, 3]))
        _check(run.outcome)


def test_chip_data_never_leaks_card_data_in_field55_host_interface_8_1() -> None:
    """host-interface 8.1: whatever the card sends, field 55 never carries 57, 5A, 5F20,
    5F24 or 5F30."""
    rng = random.Random(9)
    forbidden = {0x57, 0x5A, 0x56, 0x5F20, 0x5F24, 0x5F30, 0x9F1F, 0x9F20, 0x9F6B, 0x99}
    chips: list[ChipData] = []
    for _ in range(300):
        card = FakeCard()

        def answer(apdu: bytes, card: FakeCard = card) -> Response:
            r = card(apdu)
            return mutate(rng, r) if rng.random() < 0.1 else r
        run = drive(answer, host=lambda chip: host(rng))
        chips += run.online + ([run.outcome.chip] if run.outcome.chip else [])
    assert chips
    for chip in chips:
        assert not {o.tag for o in tlv.parse(chip.field55)} & forbidden
