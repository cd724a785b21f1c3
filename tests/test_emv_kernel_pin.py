"""The EMV kernel's PIN CVMs (EMV 4.4 Book 3 10.5 and Annex C3, Book 4 6.3.4, Book 2 7)
on the scripted card of test_emv_kernel.py, which here also holds a PIN (1234), a PIN
try counter (GET DATA 9F17) and answers VERIFY as Book 3 6.5.12 says: 9000, 63Cx
counting down, 6983 once blocked; an enciphered PIN (P2 88) is deciphered with the
card's private key and its challenge checked (Book 2 7.2). The PIN pad is simulated:
it turns each `PinStep` into a `PinResult`, sending VERIFY itself (after GET
CHALLENGE when enciphered) as the real one does, or answering bypass, cancel, time
out. Certificates are built as Book 2's tables say under freshly generated keys
(tests/test_emv_kernel_oda.py). Each test names the section it checks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date

import pytest

from firmware.core.emv import oda, tlv
from firmware.core.emv.context import MAX_PIN_ENTRIES
from firmware.core.emv.params import CaKey, Terminal
from firmware.core.emv.steps import (
    ChipData, HostReply, PinResult, PinStep, Response,
)
from tests.test_emv_kernel import OK, FakeCard, Run, default_host, e, sent, test_terminal, txn
from tests.test_emv_kernel import drive as drive_kernel
from tests.test_emv_kernel_flow import with_records
from tests.test_emv_kernel_oda import RID, Key, _certificate, _key, _sdad

PAN = "5413330089010020"  # default_records' card
PIN = "1234"
TODAY = date(2026, 12, 7)  # txn()'s date


@dataclass(frozen=True)
class Keys:
    ca: Key
    issuer: Key
    icc: Key
    pin: Key  # the ICC PIN encipherment key pair (9F2D)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(_key(1408), _key(1152), _key(1024), _key(1024))


def pin_terminal(keys: Keys | None = None, **kw: object) -> Terminal:
    """The test scheme's terminal with a PIN pad, 9F33 byte 2 F8 (plaintext, online and
    enciphered PIN, signature, no CVM), the CA key when given."""
    t = test_terminal(capabilities=bytes.fromhex("E0F8C8"), pin_pad=True)
    if keys is not None:
        t = replace(t, ca_keys=(CaKey(RID, 1, keys.ca.modulus, 3, date(2030, 12, 31)),))
    return replace(t, **kw)  # type: ignore[arg-type]


# -- the card ---------------------------------------------------------------------

@dataclass
class Chip:
    """The card's PIN side (Book 3 6.5.12 VERIFY, 6.5.7 GET DATA, 6.5.6 GET CHALLENGE)."""

    counter: int = 3
    limit: int = 3
    counter_readable: bool = True
    decipher: Key | None = None  # the key pair the card deciphers an enciphered PIN with
    challenge: bytes = b""
    always: int | None = None  # a hostile card: answers VERIFY with this SW, always
    verifies: list[str] = field(default_factory=list)  # "plain" / "enciphered" as received

    def __call__(self, apdu: bytes) -> Response | None:
        ins, p1, p2 = apdu[1], apdu[2], apdu[3]
        if ins == 0xCA and (p1, p2) == (0x9F, 0x17):
            if not self.counter_readable:
                return Response(b"", 0x6A88)
            return Response(e(0x9F17, bytes([self.counter])), OK)
        if ins == 0x84:  # GET CHALLENGE
            self.challenge = hashlib.sha1(bytes([len(self.verifies)])).digest()[:8]
            return Response(self.challenge, OK)
        if ins == 0x20:
            return Response(b"", self.verify(p2, apdu[5:5 + apdu[4]]))
        return None

    def verify(self, p2: int, data: bytes) -> int:
        if self.always is not None:
            return self.always
        if p2 == 0x88:
            self.verifies.append("enciphered")
            if self.decipher is None:
                return 0x6A80
            block = pow(int.from_bytes(data, "big"), self.decipher.d,
                        self.decipher.n).to_bytes(self.decipher.size, "big")
            # Book 2 7.2: 7F | PIN block (8) | ICC unpredictable number (8) | pad
            if block[0] != 0x7F or block[9:17] != self.challenge:
                return 0x6A80
            pin_block = block[1:9]
        else:
            self.verifies.append("plain")
            pin_block = data
        if self.counter == 0:
            return 0x6983  # Book 3 6.5.12.4: authentication method blocked
        if pin_block != plain_block(PIN):
            self.counter -= 1
            return 0x63C0 | self.counter
        self.counter = self.limit
        return OK


def plain_block(pin: str) -> bytes:
    """Book 3 6.5.12.2: the plaintext offline PIN block: control 2, PIN length, the
    digits, F filler, 8 bytes."""
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


def card(keys: Keys, cvm: str, *, aip: str = "1C00", icc_cert: bool = True,
         pin_cert: bool = False, tamper_pin_cert: bool = False,
         chip: Chip | None = None) -> tuple[FakeCard, Chip]:
    """A card with the CVM list `cvm` (rules only, X = 10.00, Y = 0), the issuer
    certificate and, when asked, the ICC (9F46) and ICC PIN encipherment (9F2D)
    certificates; its PIN side `chip`."""
    chip = chip or Chip()
    x = bytes.fromhex("000003E8" "00000000")
    extra: dict[str, bytes] = {"t8E": x + bytes.fromhex(cvm)}
    records = with_records(**extra)
    static = tlv.parse(records[(2, 1)])[0].value + bytes.fromhex(aip)  # AFL: record 1
    issuer_cert, issuer_rem = _certificate(keys.ca, 0x02, bytes.fromhex("541333FF"),
                                           keys.issuer)
    objs = e(0x8F, b"\x01") + e(0x90, issuer_cert) + e(0x92, issuer_rem) \
        + e(0x9F32, b"\x03") + e(0x9F4A, b"\x82") + e(0x9F49, bytes.fromhex("9F3704"))
    if icc_cert:
        cert, rem = _certificate(keys.issuer, 0x04, bytes.fromhex(PAN + "FFFF"), keys.icc,
                                 static)
        objs += e(0x9F46, cert) + e(0x9F47, b"\x03") + e(0x9F48, rem)
        chip.decipher = keys.icc
    if pin_cert:
        # Book 2 7.1: Table 14's layout, format 04, the hash without static data
        cert, rem = _certificate(keys.issuer, 0x04, bytes.fromhex(PAN + "FFFF"), keys.pin)
        if tamper_pin_cert:
            cert = bytes([cert[0] ^ 1]) + cert[1:]
        objs += e(0x9F2D, cert) + e(0x9F2E, b"\x03") + e(0x9F2F, rem)
        chip.decipher = keys.pin
    records[(2, 2)] = e(0x70, tlv.parse(records[(2, 2)])[0].value + objs)

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0x88:  # INTERNAL AUTHENTICATE (DDA)
            return Response(e(0x80, _sdad(keys.icc, b"\x12\x34\x56\x78", apdu[5:-1])), OK)
        return chip(apdu)
    fake = FakeCard(aip=bytes.fromhex(aip), afl=bytes.fromhex("10010201"), records=records,
                    hook=hook)
    return fake, chip


# -- the PIN pad --------------------------------------------------------------------

@dataclass
class Pad:
    """A PIN pad: each `PinStep` takes the next entry of `script`: a PIN (sent to the
    card in VERIFY for an offline PIN; "entered" for an online one), or "bypass",
    "cancel", "timeout", "nopad". Seen steps are kept."""

    script: list[str]
    to_card: Callable[[bytes], Response] | None = None
    steps: list[PinStep] = field(default_factory=list)

    def __call__(self, step: PinStep) -> PinResult:
        self.steps.append(step)
        entry = self.script.pop(0)
        words = {"bypass": "bypassed", "cancel": "cancelled", "timeout": "timeout",
                 "nopad": "no_pinpad"}
        if entry in words:
            return PinResult(words[entry])
        if step.kind == "online":
            return PinResult("entered")
        assert self.to_card is not None
        if step.kind == "offline_plain":
            r = self.to_card(bytes.fromhex("0020008008") + plain_block(entry))
        else:
            assert step.key is not None
            challenge = self.to_card(bytes.fromhex("0084000000"))
            if challenge.sw != OK or len(challenge.data) != 8:
                return PinResult("failed", sw=challenge.sw)
            modulus, exponent = step.key
            n = int.from_bytes(modulus, "big")
            block = b"\x7f" + plain_block(entry) + challenge.data
            block += b"\x55" * (len(modulus) - len(block))
            enciphered = pow(int.from_bytes(block, "big"), exponent, n).to_bytes(
                len(modulus), "big")
            r = self.to_card(bytes([0x00, 0x20, 0x00, 0x88, len(enciphered)]) + enciphered)
        if r.sw == OK:
            return PinResult("verified", sw=r.sw)
        if r.sw & 0xFFF0 == 0x63C0:
            x = r.sw & 0x0F
            return PinResult("wrong" if x else "blocked", x, r.sw)
        if r.sw in (0x6983, 0x6984):
            return PinResult("blocked", 0, r.sw)
        return PinResult("failed", sw=r.sw)


def drive(fake: FakeCard, pad: Pad, terminal: Terminal,
          host: Callable[[ChipData], HostReply] = default_host) -> Run:
    """test_emv_kernel.drive with the PIN pad: the pad talks to the same card."""
    pad.to_card = fake
    return drive_kernel(fake, txn(), terminal, host=host, pad=pad)


def chip_of(run: Run) -> ChipData:
    assert run.outcome.chip is not None, run.outcome
    return run.outcome.chip


def byte3(chip: ChipData) -> int:
    """TVR byte 3 (Annex C5): 80 CVM not successful, 40 unrecognised CVM, 20 PIN try
    limit exceeded, 10 PIN pad not present or not working, 08 PIN pad present but PIN
    not entered, 04 online PIN entered."""
    return bytes.fromhex(chip.tvr)[2]


def get_data_9f17(fake: FakeCard) -> int:
    return sum(1 for a in sent(fake, 0xCA) if a[2:4] == b"\x9f\x17")


# -- 10.5: each PIN CVM, with and without a PIN pad ------------------------------------

@pytest.mark.parametrize("code, kind, results, text, tvr3, verify", [
    (0x01, "offline_plain", "410002", "PIN VERIFIED", 0x00, ["plain"]),
    (0x02, "online", "420000", "ONLINE PIN", 0x04, []),
    (0x03, "offline_plain", "430000", "PIN VERIFIED + SIGNATURE", 0x00, ["plain"]),
    (0x04, "offline_enciphered", "440002", "PIN VERIFIED", 0x00, ["enciphered"]),
    (0x05, "offline_enciphered", "450000", "PIN VERIFIED + SIGNATURE", 0x00, ["enciphered"]),
])
def test_each_pin_cvm_with_a_pin_pad_book3_10_5_book4_6_3_4(
        keys: Keys, code: int, kind: str, results: str, text: str, tvr3: int,
        verify: list[str]) -> None:
    """Book 3 10.5, Book 4 6.3.4.1/6.3.4.2/6.3.4.5: a supported PIN CVM asks the pad
    (PinStep of its kind, the try counter read first for an offline PIN); a verified
    offline PIN is "successful" (02), with signature "unknown" (00); an online PIN
    entered is "unknown" with TVR "online PIN entered"; the receipt's words."""
    fake, chip = card(keys, f"{0x40 | code:02X}001F00")
    pad = Pad([PIN])
    run = drive(fake, pad, pin_terminal(keys))
    c = chip_of(run)
    assert [s.kind for s in pad.steps] == [kind]
    assert (c.cvm_results, c.cvm, byte3(c)) == (results, text, tvr3)
    assert chip.verifies == verify
    assert get_data_9f17(fake) == (0 if kind == "online" else 1)
    if kind != "online":
        assert pad.steps[0].tries_left == 3
    assert bytes.fromhex(c.tsi)[0] & 0x40  # Annex C6: cardholder verification performed


@pytest.mark.parametrize("code", [0x01, 0x02, 0x03, 0x04, 0x05])
@pytest.mark.parametrize("how", ["no pin pad", "9F33 without it"])
def test_each_pin_cvm_without_a_pin_pad_book4_6_3_4_1(keys: Keys, code: int,
                                                      how: str) -> None:
    """Book 4 6.3.4.1/6.3.4.2: a PIN CVM the terminal cannot do (no PIN pad, or 9F33
    byte 2 without the method) is not asked: TVR "PIN entry required and PIN pad not
    present or not working", the CVM fails, the next rule applies (bit 7)."""
    fake, _ = card(keys, f"{0x40 | code:02X}001F00")
    t = pin_terminal(keys, pin_pad=False) if how == "no pin pad" else \
        pin_terminal(keys, capabilities=bytes.fromhex("E028C8"))
    pad = Pad([])
    c = chip_of(drive(fake, pad, t))
    assert pad.steps == [] and get_data_9f17(fake) == 0
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1F0002", "NO CVM", 0x10)


def test_pin_if_terminal_supports_skipped_without_pad_book3_annex_c3() -> None:
    """Annex C3 condition 03 'if terminal supports the CVM': without a PIN pad the
    rule is skipped quietly (no TVR bit), with one it applies."""
    fake = FakeCard(records=with_records(t8E=bytes(8) + bytes.fromhex("41031F00")),
                    hook=Chip())
    c = chip_of(drive(fake, Pad([]), pin_terminal(pin_pad=False)))
    assert (c.cvm_results, byte3(c)) == ("1F0002", 0x00)
    fake = FakeCard(records=with_records(t8E=bytes(8) + bytes.fromhex("41031F00")),
                    hook=Chip())
    c = chip_of(drive(fake, Pad([PIN]), pin_terminal()))
    assert (c.cvm_results, c.cvm) == ("410302", "PIN VERIFIED")


# -- 10.5.1: the PIN try counter and VERIFY's answers -------------------------------------

def test_try_counter_zero_fails_without_asking_book3_10_5_1(keys: Keys) -> None:
    """Book 3 10.5.1: PIN try counter 0 -> no PIN asked, TVR "PIN try limit
    exceeded" (no other PIN bit), the CVM fails, the next rule applies."""
    fake, _ = card(keys, "41001F00", chip=Chip(counter=0))
    pad = Pad([])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert pad.steps == [] and get_data_9f17(fake) == 1
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1F0002", "NO CVM", 0x20)


def test_try_counter_zero_stop_on_failure_book3_10_5(keys: Keys) -> None:
    """Book 3 10.5: bit 7 clear: the failed PIN CVM ends cardholder verification:
    "cardholder verification was not successful", 9F34 the PIN CVM with "failed"."""
    fake, _ = card(keys, "01001F00", chip=Chip(counter=0))
    c = chip_of(drive(fake, Pad([]), pin_terminal(keys)))
    assert (c.cvm_results, c.cvm, byte3(c)) == ("010001", "CVM FAILED", 0x80 | 0x20)


def test_unreadable_try_counter_still_asks_book3_10_5_1(keys: Keys) -> None:
    """Book 3 10.5.1: a card that does not give its PIN try counter (GET DATA 6A88)
    is still asked for the PIN; the pad gets no count."""
    fake, _ = card(keys, "41001F00", chip=Chip(counter_readable=False))
    pad = Pad([PIN])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert [s.tries_left for s in pad.steps] == [None]
    assert c.cvm_results == "410002"


def test_wrong_then_right_book3_10_5_1(keys: Keys) -> None:
    """Book 3 10.5.1, 6.5.12.4: 63C2 to a wrong PIN -> asked again with 2 tries left;
    the right PIN -> verified, successful."""
    fake, chip = card(keys, "41001F00")
    pad = Pad(["9999", PIN])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert [s.tries_left for s in pad.steps] == [3, 2]
    assert (c.cvm_results, c.cvm, byte3(c)) == ("410002", "PIN VERIFIED", 0x00)
    assert chip.counter == 3


@pytest.mark.parametrize("start, entries, tries_seen, sw", [
    (3, ["1111", "2222", "3333"], [3, 2, 1], "63C0"),  # counted down to 63C0
    (None, ["1111"], [None], "6983"),  # already blocked, counter unreadable: 6983
])
def test_wrong_to_blocked_book3_10_5_1(keys: Keys, start: int | None,
                                       entries: list[str], tries_seen: list[int | None],
                                       sw: str) -> None:
    """Book 3 10.5.1, 6.5.12.4: the last try wrong (63C0), or a blocked PIN (6983) ->
    TVR "PIN try limit exceeded", the CVM fails, the next rule (signature) applies;
    9F34 is the CVM that ended processing. The pad is told each try left (1: LAST
    PIN TRY)."""
    chip = Chip(counter=start if start is not None else 0,
                counter_readable=start is not None)
    fake, chip = card(keys, "41001E00", chip=chip)
    pad = Pad(entries)
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert [s.tries_left for s in pad.steps] == tries_seen
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1E0000", "SIGNATURE", 0x20)


def test_blocked_with_stop_keeps_the_pin_cvm_book4_6_3_4_5(keys: Keys) -> None:
    """Book 4 6.3.4.5: all failed -> 9F34 the last CVM performed with 'failed'."""
    fake, _ = card(keys, "0100", chip=Chip(counter=1))
    pad = Pad(["1111"])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert [s.tries_left for s in pad.steps] == [1]  # the pad shows LAST PIN TRY
    assert (c.cvm_results, c.cvm, byte3(c)) == ("010001", "CVM FAILED", 0x80 | 0x20)


def test_last_try_shown_then_right_book3_10_5_1(keys: Keys) -> None:
    """Book 3 10.5.1: counter 1 -> PinStep.tries_left 1 (the pad says LAST PIN TRY);
    the right PIN is verified."""
    fake, _ = card(keys, "41001F00", chip=Chip(counter=1))
    pad = Pad([PIN])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert [s.tries_left for s in pad.steps] == [1]
    assert c.cvm == "PIN VERIFIED"


def test_card_counting_forever_is_bounded_book3_10_5_1(keys: Keys) -> None:
    """A hostile card answering 63C5 to every VERIFY: the kernel asks at most
    MAX_PIN_ENTRIES times, then the CVM fails."""
    fake, _ = card(keys, "41001F00", chip=Chip(always=0x63C5))
    pad = Pad(["1111"] * MAX_PIN_ENTRIES)
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert len(pad.steps) == MAX_PIN_ENTRIES
    assert (c.cvm_results, byte3(c)) == ("1F0002", 0x00)


def test_verify_failing_otherwise_fails_the_cvm_book3_10_5(keys: Keys) -> None:
    """Book 3 10.5: VERIFY answered otherwise (6A80: the pad says "failed") -> the CVM
    failed, no PIN bit, the next rule applies; 9F34 the CVM that ended processing."""
    fake, _ = card(keys, "41001F00", chip=Chip(always=0x6A80))
    c = chip_of(drive(fake, Pad(["1111"]), pin_terminal(keys)))
    assert (c.cvm_results, byte3(c)) == ("1F0002", 0x00)


# -- Book 4 6.3.4.3: bypass, cancel, time out, no PIN pad ----------------------------------

def test_bypass_offered_only_where_allowed_book4_6_3_4_3(keys: Keys) -> None:
    """Book 4 6.3.4.3 and hardware.md "PIN entry": bypass is offered when the
    configuration allows it, the terminal is attended and the rule's bit 7 lets the
    next rule apply."""
    cases = [(pin_terminal(keys, pin_bypass=True), "41001F00", True),
             (pin_terminal(keys), "41001F00", False),  # configuration
             (pin_terminal(keys, pin_bypass=True), "01001F00", False),  # bit 7 clear
             (pin_terminal(keys, pin_bypass=True, type=0x25), "41001F00", False)]  # unattended
    for terminal, cvm, offered in cases:
        fake, _ = card(keys, cvm)
        pad = Pad([PIN])
        drive(fake, pad, terminal)
        assert [s.bypass for s in pad.steps] == [offered], (cvm, terminal.type)


def test_bypass_then_subsequent_pin_cvms_bypassed_book4_6_3_4_3(keys: Keys) -> None:
    """Book 4 6.3.4.3: a bypass sets "PIN entry required, PIN pad present, but PIN was
    not entered" (not "PIN try limit exceeded"), the CVM fails, the next rule applies;
    a later PIN CVM of the transaction is considered bypassed (not asked again)."""
    fake, _ = card(keys, "4100440042001E00")
    pad = Pad(["bypass"])
    c = chip_of(drive(fake, pad, pin_terminal(keys, pin_bypass=True)))
    assert len(pad.steps) == 1
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1E0000", "SIGNATURE", 0x08)


def test_cancel_ends_the_transaction_book4_6_3_4(keys: Keys) -> None:
    """hardware.md "PIN entry": CANCEL stops the transaction: Outcome "cancelled",
    no GENERATE AC."""
    fake, _ = card(keys, "41001F00")
    run = drive(fake, Pad(["cancel"]), pin_terminal(keys))
    assert (run.outcome.decision, run.outcome.message) == ("cancelled", "CANCELLED")
    assert sent(fake, 0xAE) == [] and run.outcome.chip is None


@pytest.mark.parametrize("bypass, decision", [(True, "bypassed"), (False, "cancelled")])
def test_timeout_book4_6_3_4_3(keys: Keys, bypass: bool, decision: str) -> None:
    """Book 4 is silent on a PIN entry timeout: where bypass was offered it is a bypass
    (Book 4 6.3.4.3: the PIN was not entered); where it was not, the transaction ends
    (hardware.md: a PIN is bypassed only where the CVM list and configuration allow)."""
    fake, _ = card(keys, "41001F00")
    run = drive(fake, Pad(["timeout"]), pin_terminal(keys, pin_bypass=bypass))
    if decision == "bypassed":
        c = chip_of(run)
        assert (c.cvm_results, c.cvm, byte3(c)) == ("1F0002", "NO CVM", 0x08)
    else:
        assert (run.outcome.decision, run.outcome.message) == ("cancelled", "PIN TIMEOUT")
        assert sent(fake, 0xAE) == []


def test_pin_pad_not_working_book4_6_3_4_1(keys: Keys) -> None:
    """Book 4 6.3.4.1: the pad answers "no_pinpad" (not present or not working): TVR
    "PIN pad not present or not working", the CVM fails and is not counted as
    performed (9F34 3F0001 when nothing else), later PIN CVMs are not asked."""
    fake, _ = card(keys, "41004200")
    pad = Pad(["nopad"])
    c = chip_of(drive(fake, pad, pin_terminal(keys), host=lambda chip: HostReply("unknown")))
    assert len(pad.steps) == 1
    assert (c.cvm_results, c.cvm, byte3(c)) == ("3F0001", "CVM FAILED", 0x80 | 0x10)


# -- online PIN: field 55 -------------------------------------------------------------

def test_online_pin_entered_in_field55_book4_6_3_4_2(keys: Keys) -> None:
    """Book 4 6.3.4.2, 6.3.4.5, Annex C5: online PIN entered -> TVR byte 3 bit 3
    "online PIN entered", 9F34 42 03 00 (result unknown: the issuer checks the PIN);
    the 0200's field 55 carries both; no GET DATA for an online PIN."""
    fake, _ = card(keys, "42031E03")
    pad = Pad([PIN])
    run = drive(fake, pad, pin_terminal(keys))
    assert [(s.kind, s.tries_left, s.key) for s in pad.steps] == [("online", None, None)]
    assert len(run.online) == 1
    f55 = {t.tag: t.value for t in tlv.parse(run.online[0].field55)}
    assert f55[0x9F34] == bytes.fromhex("420300")
    assert f55[0x95][2] == 0x04
    assert run.online[0].cvm == "ONLINE PIN" and get_data_9f17(fake) == 0


# -- Book 2 7: offline enciphered PIN's key -------------------------------------------------

@pytest.mark.parametrize("aip, oda_ran", [("1C00", False), ("3C00", True)])
def test_enciphered_under_the_icc_key_book2_7_1(keys: Keys, aip: str,
                                                oda_ran: bool) -> None:
    """Book 2 7.1: no 9F2D -> the ICC public key (9F46), the one DDA recovered, or,
    when ODA did not run, recovered for the PIN; the card deciphers it (7.2)."""
    fake, chip = card(keys, "44001F00", aip=aip)
    pad = Pad([PIN])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert pad.steps[0].key == (keys.icc.modulus, 3)
    assert chip.verifies == ["enciphered"] and c.cvm_results == "440002"
    assert bool(sent(fake, 0x88)) == oda_ran  # INTERNAL AUTHENTICATE: DDA ran


def test_enciphered_under_the_pin_key_book2_7_1(keys: Keys) -> None:
    """Book 2 7.1: the ICC PIN encipherment public key (9F2D, 9F2E, 9F2F) is used when
    the card has it, even beside an ICC key."""
    fake, chip = card(keys, "44001F00", aip="3C00", pin_cert=True)
    pad = Pad([PIN])
    c = chip_of(drive(fake, pad, pin_terminal(keys)))
    assert pad.steps[0].key == (keys.pin.modulus, 3)
    assert chip.verifies == ["enciphered"] and c.cvm == "PIN VERIFIED"


@pytest.mark.parametrize("case", ["no key at all", "9F2D fails", "no CA key"])
def test_no_usable_key_fails_the_cvm_book2_7_1(keys: Keys, case: str) -> None:
    """Book 2 7.1: no key recovered -> the offline enciphered PIN cannot be performed:
    the CVM fails without asking the PIN (no PIN bit), the next rule applies. A 9F2D
    that fails is not replaced by the ICC key."""
    fake, _ = card(keys, "44001F00", icc_cert=case != "no key at all",
                   pin_cert=case == "9F2D fails", tamper_pin_cert=True)
    t = pin_terminal(keys) if case != "no CA key" else pin_terminal()
    pad = Pad([])
    c = chip_of(drive(fake, pad, t))
    assert pad.steps == []
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1F0002", "NO CVM", 0x00)


def test_get_challenge_refused_fails_the_cvm_book2_7_2(keys: Keys) -> None:
    """Book 2 7.2: GET CHALLENGE not answered with 8 bytes -> the pad says "failed":
    the CVM fails, the next rule applies."""
    fake, chip = card(keys, "45001E00")
    inner = fake.hook
    fake.hook = lambda a: Response(b"", 0x6D00) if a[1] == 0x84 else inner(a)  # type: ignore[misc]
    c = chip_of(drive(fake, Pad([PIN]), pin_terminal(keys)))
    assert chip.verifies == []
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1E0000", "SIGNATURE", 0x00)


# -- the combined methods ------------------------------------------------------------

@pytest.mark.parametrize("code", [0x03, 0x05])
def test_combined_needs_signature_support_book4_annex_a2(keys: Keys, code: int) -> None:
    """Book 4 Annex A2 (9F33 byte 2): a PIN and signature CVM needs both methods; a
    terminal without signature does not support it (no PIN pad bit: the pad is
    there), and the next rule applies."""
    fake, _ = card(keys, f"{0x40 | code:02X}001F00")
    pad = Pad([])
    c = chip_of(drive(fake, pad, pin_terminal(keys, capabilities=bytes.fromhex("E0D8C8"))))
    assert pad.steps == []
    assert (c.cvm_results, c.cvm, byte3(c)) == ("1F0002", "NO CVM", 0x00)


# -- oda.icc_pin_key (Book 2 7.1) ------------------------------------------------------

def _issuer(keys: Keys) -> oda.PublicKey:
    return oda.PublicKey(keys.issuer.modulus, 3)


def test_icc_pin_key_recovered_book2_7_1(keys: Keys) -> None:
    """Book 2 7.1: the 9F2D certificate (Table 14's layout, format 04, hash over its
    fields, remainder and exponent) gives the PIN encipherment key."""
    cert, rem = _certificate(keys.issuer, 0x04, bytes.fromhex(PAN + "FFFF"), keys.pin)
    key = oda.icc_pin_key(_issuer(keys), cert, rem, b"\x03", PAN, TODAY)
    assert key == oda.PublicKey(keys.pin.modulus, 3)


@pytest.mark.parametrize("case, match", [
    ("static data hashed", "hash mismatch"),  # an ICC key certificate is not one
    ("format 02", "format 02"),
    ("other PAN", "PAN does not match"),
    ("expired", "expired"),
    ("no remainder", "remainder missing"),
])
def test_icc_pin_key_checks_book2_7_1(keys: Keys, case: str, match: str) -> None:
    """Book 2 7.1 with 6.4's checks: the hash without static data, format 04, the
    PAN, the expiry (the certificate says 12/30), the remainder."""
    ident = bytes.fromhex(PAN + "FFFF")
    extra = b"static" if case == "static data hashed" else b""
    cert, rem = _certificate(keys.issuer, 0x02 if case == "format 02" else 0x04, ident,
                             keys.pin, extra)
    pan = "5413330089010012" if case == "other PAN" else PAN
    today = date(2031, 1, 1) if case == "expired" else TODAY
    remainder = None if case == "no remainder" else rem
    with pytest.raises(oda.OdaError, match=match):
        oda.icc_pin_key(_issuer(keys), cert, remainder, b"\x03", pan, today)
