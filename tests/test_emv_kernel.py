"""The EMV kernel (firmware/core/emv/kernel.py) driven against a scripted card: this
file holds the card and the driver, and the tests of application selection (EMV 4.4
Book 1 12), GET PROCESSING OPTIONS (Book 3 10.1) and reading the records (10.2).
test_emv_kernel_flow.py covers the rest of the flow, test_emv_kernel_fuzz.py hostile
cards. Each test names the section it checks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import pytest

from firmware.core.emv import kernel, tlv
from firmware.core.emv.params import AidParams, Terminal
from firmware.core.emv.steps import (
    ChipData, Choose, HostReply, Online, Outcome, PinResult, PinStep, Response, Send, Txn,
)

CREDIT = bytes.fromhex("F0000000011010")
DEBIT = bytes.fromhex("F0000000012010")
PSE = b"1PAY.SYS.DDF01"
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F3704")
CDOL2 = CDOL1 + bytes.fromhex("8A02")
OK = 0x9000


def e(tag: int, value: bytes) -> bytes:
    return tlv.encode(tag, value)


def test_terminal(**kw: object) -> Terminal:
    aids = (AidParams(aid=bytes.fromhex("F000000001"), partial=True, label="TEST",
                      tac_denial=bytes.fromhex("0010000000"),
                      tac_online=bytes.fromhex("DC4004F800"),
                      tac_default=bytes.fromhex("DC40002800"), floor_limit=5000),)
    return replace(Terminal(aids=aids), **kw)  # type: ignore[arg-type]


test_terminal.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def txn(**kw: object) -> Txn:
    base = Txn(kind="purchase", amount=1250, local=datetime(2026, 12, 7, 12, 30, 5),
               unpredictable=bytes.fromhex("11223344"), random_percent=99)
    return replace(base, **kw)  # type: ignore[arg-type]


@dataclass
class App:
    aid: bytes
    label: bytes = b"TEST CREDIT"
    priority: int | None = 1
    blocked: bool = False
    pdol: bytes | None = None


def default_records(pan: str = "5413330089010020") -> dict[tuple[int, int], bytes]:
    rec1 = (e(0x5A, bytes.fromhex(pan)) + e(0x5F24, bytes.fromhex("281231"))
            + e(0x5F25, bytes.fromhex("220101")) + e(0x5F34, b"\x00")
            + e(0x57, bytes.fromhex(pan + "D281220110000000000F"))
            + e(0x5F28, bytes.fromhex("0276")) + e(0x9F07, bytes.fromhex("FF00"))
            + e(0x9F08, bytes.fromhex("0002")) + e(0x5F30, bytes.fromhex("0201")))
    rec2 = (e(0x8C, CDOL1) + e(0x8D, CDOL2)
            + e(0x8E, bytes.fromhex("000000000000000042031E031F03"))
            + e(0x9F0D, bytes(5)) + e(0x9F0E, bytes(5)) + e(0x9F0F, bytes(5))
            + e(0x9F42, bytes.fromhex("0978")) + e(0x5F20, b"TEST/CARD"))
    return {(2, 1): e(0x70, rec1), (2, 2): e(0x70, rec2)}


@dataclass
class FakeCard:
    """A scripted card: answers each command from its state; `hook` may answer first
    (return None to let the card answer)."""

    apps: list[App] = field(default_factory=lambda: [App(CREDIT)])
    pse: str = "yes"  # "yes", "none" (6A82), "blocked" (6283), "6A81"
    aip: bytes = bytes.fromhex("1C00")
    afl: bytes = bytes.fromhex("10010200")
    gpo_format: int = 1
    gpo_sw: dict[bytes, int] = field(default_factory=dict)  # AID -> SW of GPO
    records: dict[tuple[int, int], bytes] = field(default_factory=default_records)
    atc: int = 7
    last_online: int = 5
    get_data_sw: int = OK
    ext_auth_sw: int = OK
    script_sws: list[int] = field(default_factory=list)
    decide: Callable[[int, int], int] | None = None  # (asked P1 & C0, nth GAC) -> CID
    gac_format: int = 1
    hook: Callable[[bytes], Response | None] | None = None
    log: list[bytes] = field(default_factory=list)
    current: bytes = b""
    _next: dict[bytes, int] = field(default_factory=dict)
    gacs: list[bytes] = field(default_factory=list)

    def __call__(self, apdu: bytes) -> Response:
        self.log.append(apdu)
        if self.hook is not None:
            r = self.hook(apdu)
            if r is not None:
                return r
        cla, ins, p1, p2 = apdu[:4]
        data = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if cla == 0x84:
            return Response(b"", self.script_sws.pop(0) if self.script_sws else OK)
        if ins == 0xA4:
            return self.select(data, p2)
        if ins == 0xB2:
            return self.read(p1, p2 >> 3)
        if ins == 0xA8:
            return self.gpo()
        if ins == 0xCA:
            value = {0x9F36: self.atc, 0x9F13: self.last_online}.get((p1 << 8) | p2)
            if value is None:
                return Response(b"", 0x6A88)
            return Response(e((p1 << 8) | p2, value.to_bytes(2, "big")), self.get_data_sw)
        if ins == 0x88:
            return Response(e(0x80, bytes(64)), OK)
        if ins == 0xAE:
            return self.generate(p1, data)
        if ins == 0x82:
            return Response(b"", self.ext_auth_sw)
        return Response(b"", 0x6D00)

    def fci(self, app: App) -> bytes:
        a5 = e(0x50, app.label)
        if app.priority is not None:
            a5 += e(0x87, bytes([app.priority]))
        if app.pdol is not None:
            a5 += e(0x9F38, app.pdol)
        return e(0x6F, e(0x84, app.aid) + e(0xA5, a5))

    def select(self, name: bytes, p2: int) -> Response:
        if name == PSE:
            self.current = PSE
            if self.pse == "yes":
                return Response(e(0x6F, e(0x84, PSE) + e(0xA5, e(0x88, b"\x01"))), OK)
            return Response(b"", {"none": 0x6A82, "blocked": 0x6283, "6A81": 0x6A81}[self.pse])
        matches = [a for a in self.apps if a.aid.startswith(name)]
        start = 0 if p2 == 0 else self._next.get(name, 0)
        if start >= len(matches):
            return Response(b"", 0x6A82)
        app = matches[start]
        self._next[name] = start + 1
        self.current = app.aid
        return Response(self.fci(app), 0x6283 if app.blocked else OK)

    def read(self, number: int, sfi: int) -> Response:
        if self.current == PSE:
            if sfi != 1 or number > 1:
                return Response(b"", 0x6A83)
            entries = b"".join(
                e(0x61, e(0x4F, a.aid) + e(0x50, a.label)
                  + (e(0x87, bytes([a.priority])) if a.priority is not None else b""))
                for a in self.apps)
            return Response(e(0x70, entries), OK)
        rec = self.records.get((sfi, number))
        return Response(rec, OK) if rec is not None else Response(b"", 0x6A83)

    def gpo(self) -> Response:
        sw = self.gpo_sw.get(self.current, OK)
        if sw != OK:
            return Response(b"", sw)
        if self.gpo_format == 1:
            return Response(e(0x80, self.aip + self.afl), OK)
        return Response(e(0x77, e(0x82, self.aip) + e(0x94, self.afl)), OK)

    def generate(self, p1: int, data: bytes) -> Response:
        self.gacs.append(bytes([p1]) + data)
        asked = p1 & 0xC0
        cid = self.decide(asked, len(self.gacs)) if self.decide else asked
        self.atc += 1 if len(self.gacs) == 1 else 0
        ac = hashlib.sha256(bytes([cid]) + data).digest()[:8]
        atc = self.atc.to_bytes(2, "big")
        iad = bytes.fromhex("06010A03A00000")
        if self.gac_format == 1:
            return Response(e(0x80, bytes([cid]) + atc + ac + iad), OK)
        return Response(e(0x77, e(0x9F27, bytes([cid])) + e(0x9F36, atc) + e(0x9F26, ac)
                              + e(0x9F10, iad)), OK)


def default_host(chip: ChipData) -> HostReply:
    return HostReply("answered", "00", e(0x91, bytes(8) + b"00"))


@dataclass
class Run:
    outcome: Outcome
    steps: list[object]
    online: list[ChipData]


def drive(card: Callable[[bytes], Response], t: Txn | None = None,
          terminal: Terminal | None = None,
          host: Callable[[ChipData], HostReply] = default_host,
          choose: Callable[[tuple[str, ...]], int | None] = lambda labels: 0,
          limit: int = 2000, pad: Callable[[PinStep], PinResult] | None = None) -> Run:
    """Run the kernel against `card`, answering its questions: the cardholder's choice,
    the host, and the PIN pad (`pad`; without one, "PIN pad not present")."""
    gen = kernel.run(t or txn(), terminal or test_terminal())
    steps: list[object] = []
    online: list[ChipData] = []
    reply: Response | int | None | HostReply | PinResult = None
    step = next(gen)
    for _ in range(limit):
        steps.append(step)
        if isinstance(step, Send):
            reply = card(step.apdu)
        elif isinstance(step, Choose):
            reply = choose(step.labels)
        elif isinstance(step, Online):
            online.append(step.chip)
            reply = host(step.chip)
        elif isinstance(step, PinStep):
            reply = pad(step) if pad is not None else PinResult("no_pinpad")
        else:
            raise AssertionError(f"unknown step {step!r}")
        try:
            step = gen.send(reply)
        except StopIteration as stop:
            assert isinstance(stop.value, Outcome)
            return Run(stop.value, steps, online)
    raise AssertionError("the kernel did not finish")


def sent(card: FakeCard, ins: int) -> list[bytes]:
    return [a for a in card.log if a[1] == ins]


def offline_terminal() -> Terminal:
    """The test scheme's terminal with an online TAC that lets a Y1 through."""
    t = test_terminal()
    return replace(t, aids=(replace(t.aids[0], tac_online=bytes.fromhex("0000000000")),))


# -- Book 1 12: application selection -----------------------------------------

def test_pse_directory_gives_the_candidate_book1_12_3_2() -> None:
    """Book 1 12.3.2: SELECT PSE, READ RECORD of its SFI until 6A83, entry 61/4F."""
    card = FakeCard()
    run = drive(card, terminal=offline_terminal())
    assert card.log[0] == bytes.fromhex("00A404000E") + PSE + b"\x00"
    assert card.log[1] == bytes.fromhex("00B2010C00")  # record 1 of SFI 1
    assert card.log[2] == bytes.fromhex("00B2020C00")  # until 6A83
    assert card.log[3] == bytes.fromhex("00A4040007") + CREDIT + b"\x00"  # final SELECT
    assert not any(isinstance(s, Choose) for s in run.steps)
    assert run.outcome.decision == "approved" and run.outcome.stage == "first"
    assert run.outcome.chip is not None and run.outcome.chip.aid == CREDIT.hex().upper()


@pytest.mark.parametrize("pse", ["none", "blocked"])
def test_no_pse_or_blocked_pse_uses_the_aid_list_book1_12_3_3(pse: str) -> None:
    """Book 1 12.3.2/12.3.3: 6A82 or 6283 to SELECT PSE -> SELECT each terminal AID."""
    card = FakeCard(pse=pse, apps=[App(CREDIT, b"CREDIT", 2), App(DEBIT, b"DEBIT", 1)])
    seen: list[tuple[str, ...]] = []

    def pick(labels: tuple[str, ...]) -> int:
        seen.append(labels)
        return 1
    run = drive(card, terminal=offline_terminal(), choose=pick)
    assert seen == [("DEBIT", "CREDIT")]  # Book 1 12.4: by priority
    assert run.outcome.chip is not None and run.outcome.chip.aid == CREDIT.hex().upper()
    assert not sent(card, 0xB2)[0].startswith(bytes.fromhex("00B2010C"))


def test_partial_aid_selects_next_occurrence_book1_12_3_3() -> None:
    """Book 1 12.3.3 steps 5-6: a longer DF name matches a partial AID; SELECT next
    occurrence (P2 02) while the card answers 9000/6283."""
    card = FakeCard(pse="none", apps=[App(CREDIT, b"CREDIT", 1), App(DEBIT, b"DEBIT", 2)])
    drive(card, terminal=offline_terminal())
    selects = sent(card, 0xA4)
    partial = bytes.fromhex("F000000001")
    assert selects[1] == bytes.fromhex("00A4040005") + partial + b"\x00"
    assert selects[2] == bytes.fromhex("00A4040205") + partial + b"\x00"
    assert selects[3] == bytes.fromhex("00A4040205") + partial + b"\x00"  # -> 6A82
    assert selects[4][5:-1] == CREDIT  # final SELECT of the first by priority


def test_exact_aid_without_partial_selection_book1_12_3_1() -> None:
    """Book 1 12.3.1: a terminal AID without partial selection matches only itself."""
    card = FakeCard(pse="none", apps=[App(CREDIT)])
    t = test_terminal()
    t = replace(t, aids=(replace(t.aids[0], partial=False),))
    run = drive(card, terminal=t)
    assert run.outcome.decision == "terminated" and run.outcome.message == "NOT ACCEPTED"


def test_blocked_application_is_not_a_candidate_book1_12_3_3() -> None:
    """Book 1 12.3.3: an application answering 6283 is blocked: not a candidate."""
    card = FakeCard(pse="none", apps=[App(CREDIT, blocked=True), App(DEBIT, b"DEBIT")])
    run = drive(card, terminal=offline_terminal())
    assert not any(isinstance(s, Choose) for s in run.steps)
    assert run.outcome.chip is not None and run.outcome.chip.aid == DEBIT.hex().upper()


def test_only_blocked_applications_not_accepted_book1_12_4() -> None:
    """Book 1 12.4: an empty candidate list ends the transaction, NOT ACCEPTED."""
    card = FakeCard(pse="none", apps=[App(CREDIT, blocked=True)])
    run = drive(card)
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "NOT ACCEPTED")


def test_pse_6a81_card_blocked_no_fallback_book1_12_3_2() -> None:
    """Book 1 12.3.2: 6A81 to SELECT PSE: card blocked, terminate (no fallback)."""
    run = drive(FakeCard(pse="6A81"))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "CARD BLOCKED")


def test_confirmation_asked_for_a_single_application_book1_12_4() -> None:
    """Book 1 12.4: 87 bit 8 asks the cardholder to confirm even one application;
    no answer cancels."""
    card = FakeCard(apps=[App(CREDIT, priority=0x81)])
    run = drive(card, choose=lambda labels: None)
    assert [s for s in run.steps if isinstance(s, Choose)] == [Choose(("TEST CREDIT",))]
    assert run.outcome.decision == "cancelled"


def test_labels_preferred_name_label_or_aid_book1_12_4() -> None:
    """Book 1 12.4: 9F12 when the code table (9F11) is supported by 9F40 byte 5, else
    50, else the AID in hex."""
    labels: list[tuple[str, ...]] = []

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0xB2 and card.current == PSE:
            entries = (e(0x61, e(0x4F, CREDIT) + e(0x50, b"LABEL") + e(0x9F12, b"PREFERRED")
                         + e(0x9F11, b"\x01") + e(0x87, b"\x01"))
                       + e(0x61, e(0x4F, DEBIT) + e(0x9F12, b"NOTABLE") + e(0x9F11, b"\x02")
                           + e(0x87, b"\x02")))
            return Response(e(0x70, entries), OK) if apdu[2] == 1 else Response(b"", 0x6A83)
        return None
    card = FakeCard(apps=[App(CREDIT), App(DEBIT)], hook=hook)
    drive(card, choose=lambda ls: labels.append(ls) or 0)  # type: ignore[func-returns-value]
    assert labels == [("PREFERRED", DEBIT.hex().upper())]


def test_final_select_failure_removes_the_candidate_book1_12_4() -> None:
    """Book 1 12.4: a final SELECT that fails (or an FCI that does not parse) removes
    that application and the choice starts again."""
    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0xA4 and apdu[5:-1] == DEBIT:
            return Response(b"\x6F\x05\x84", OK)  # truncated FCI
        return None
    card = FakeCard(apps=[App(CREDIT, b"CREDIT", 2), App(DEBIT, b"DEBIT", 1)], hook=hook)
    seen: list[tuple[str, ...]] = []
    run = drive(card, terminal=offline_terminal(),
                choose=lambda ls: seen.append(ls) or 0)  # type: ignore[func-returns-value]
    assert seen == [("DEBIT", "CREDIT")]  # one left after the failure: no second choice
    assert run.outcome.chip is not None and run.outcome.chip.aid == CREDIT.hex().upper()


# -- Book 3 10.1: initiate application processing -------------------------------

def test_gpo_6985_removes_the_application_book3_10_1() -> None:
    """Book 3 10.1: 6985 to GPO -> the application is removed, selection again."""
    card = FakeCard(apps=[App(CREDIT, b"CREDIT", 1), App(DEBIT, b"DEBIT", 2)],
                    gpo_sw={CREDIT: 0x6985})
    run = drive(card, terminal=offline_terminal())
    assert run.outcome.chip is not None and run.outcome.chip.aid == DEBIT.hex().upper()
    assert len([s for s in run.steps if isinstance(s, Choose)]) == 1


def test_gpo_6985_last_application_not_accepted_book3_10_1() -> None:
    """Book 3 10.1 / Book 1 12.4: 6985 and no candidate left: NOT ACCEPTED."""
    run = drive(FakeCard(gpo_sw={CREDIT: 0x6985}))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "NOT ACCEPTED")


def test_gpo_with_pdol_and_without_book3_10_1() -> None:
    """Book 3 10.1: GPO carries 83 with the PDOL's data (5.4 formats); 8300 without."""
    card = FakeCard(apps=[App(CREDIT, pdol=bytes.fromhex("9F02069F1A029F3704"))])
    drive(card, terminal=offline_terminal())
    assert sent(card, 0xA8)[0] == bytes.fromhex(
        "80A80000" "0E" "830C" "000000001250" "0276" "11223344" "00")
    card = FakeCard()
    drive(card, terminal=offline_terminal())
    assert sent(card, 0xA8)[0] == bytes.fromhex("80A80000028300" "00")


@pytest.mark.parametrize("fmt", [1, 2])
def test_gpo_response_formats_book3_6_5_8(fmt: int) -> None:
    """Book 3 6.5.8.4: format 1 (80: AIP, AFL) and format 2 (77 with 82, 94)."""
    card = FakeCard(gpo_format=fmt)
    run = drive(card, terminal=offline_terminal())
    assert run.outcome.decision == "approved"
    assert sent(card, 0xB2)[-2:] == [bytes.fromhex("00B2011400"), bytes.fromhex("00B2021400")]


@pytest.mark.parametrize("afl", ["", "100102", "00010100", "F8010100", "10000100",
                                 "10020100", "10010103"])
def test_bad_afl_is_a_card_error_book3_10_2(afl: str) -> None:
    """Book 3 10.2: no AFL, length not a multiple of 4, SFI 0 or 31, first record 0,
    last < first, more ODA records than the range: terminate, CARD ERROR."""
    run = drive(FakeCard(afl=bytes.fromhex(afl)))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "CARD ERROR")


def test_gpo_without_afl_format_2_book3_10_1() -> None:
    """Book 3 10.1: a format 2 answer without 94 ends the transaction."""
    def hook(apdu: bytes) -> Response | None:
        return Response(e(0x77, e(0x82, b"\x1c\x00")), OK) if apdu[1] == 0xA8 else None
    run = drive(FakeCard(hook=hook))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "CARD ERROR")


# -- Book 3 10.2: read application data -----------------------------------------

@pytest.mark.parametrize("tag", [0x5A, 0x5F24, 0x8C, 0x8D])
def test_missing_mandatory_data_book3_10_2(tag: int) -> None:
    """Book 3 10.2 (7.2 Table 28): 5A, 5F24, 8C, 8D mandatory: missing -> terminate."""
    records = default_records()
    for key, rec in records.items():
        objs = tlv.parse(rec)[0].children
        records[key] = e(0x70, b"".join(o.encode() for o in objs if o.tag != tag))
    run = drive(FakeCard(records=records))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "CARD ERROR")


def test_redundant_primitive_is_a_card_error_book3_10_2() -> None:
    """Book 3 10.2: the same primitive data object in two records: terminate."""
    records = default_records()
    records[(2, 2)] = e(0x70, tlv.parse(records[(2, 2)])[0].value + e(0x5F34, b"\x01"))
    run = drive(FakeCard(records=records))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "CARD ERROR")


def test_record_not_a_70_template_book3_10_2() -> None:
    """Book 3 10.2: a record of SFI 1..10 must be a 70 template."""
    records = default_records()
    records[(2, 2)] = e(0x71, b"")
    run = drive(FakeCard(records=records))
    assert run.outcome.decision == "terminated"


def test_read_record_error_status_book3_10_2() -> None:
    """Book 3 10.2: READ RECORD answering other than 9000 ends the transaction."""
    records = default_records()
    del records[(2, 2)]
    run = drive(FakeCard(records=records))
    assert (run.outcome.decision, run.outcome.message) == ("terminated", "CARD ERROR")


def test_records_marked_for_oda_are_kept_as_read_book3_10_3(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Book 3 10.3: the AFL's ODA count marks records; they reach oda.static_data."""
    from firmware.core.emv import oda
    got: list[object] = []

    def static(records: object, tag_list: object, aip: bytes) -> bytes:
        got.append(records)
        raise oda.OdaError("stop here")
    monkeypatch.setattr(oda, "static_data", static)
    records = default_records()
    records[(2, 1)] = e(0x70, tlv.parse(records[(2, 1)])[0].value + e(0x8F, b"\x01")
                        + e(0x90, bytes(8)) + e(0x9F32, b"\x03") + e(0x93, bytes(8)))
    t = test_terminal(ca_keys=(_ca(),))
    drive(FakeCard(aip=bytes.fromhex("5C00"), afl=bytes.fromhex("10010201"),
                   records=records), terminal=t)
    assert got == [[(2, records[(2, 1)])]]


def _ca() -> object:
    from datetime import date

    from firmware.core.emv.params import CaKey
    return CaKey(rid=bytes.fromhex("F000000001"), index=1, modulus=bytes(64), exponent=3,
                 expiry=date(2030, 12, 31))


# -- reader errors --------------------------------------------------------------

def test_removed_before_selection_is_fallback_host_interface_8_1() -> None:
    """host-interface 8.1 / Book 1 12: the chip fails before an application is
    selected -> fallback."""
    def hook(apdu: bytes) -> Response | None:
        return Response(b"", 0, "CARD MUTE")
    run = drive(FakeCard(hook=hook))
    assert (run.outcome.decision, run.outcome.message) == ("fallback", "CARD MUTE")
    assert run.outcome.apdus == 1


def test_removed_after_selection_is_failed_book3_10_2() -> None:
    """After the final SELECT a reader error is "failed" (no fallback)."""
    def hook(apdu: bytes) -> Response | None:
        return Response(b"", 0, "CARD REMOVED") if apdu[1] == 0xB2 and \
            card.current != PSE else None
    card = FakeCard(hook=hook)
    run = drive(card)
    assert (run.outcome.decision, run.outcome.message) == ("failed", "CARD REMOVED")
    assert run.outcome.chip is None
