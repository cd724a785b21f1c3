"""The simulated host's PIN checks (host-interface 1.2, sections 7, 9.1 and 9.2), on
hand-built 0200s with AES (format 4) and TDES (format 0) PIN blocks.

The DUKPT derivations (hwsim.hostpin) are pinned to every vector of section 9; the PIN
blocks of the other tests are built here from ISO 9564-1 with `cryptography` under the
keys those vectors prove, not by the host's decoder."""

from __future__ import annotations

import logging
import random
import types
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

from firmware.core.emv import tlv
from hwsim import emvkeys, hostpin, hostproto, ops
from hwsim.host import AcquirerHost
from hwsim.ledger import Books

AES_PAN, TDES_PAN = "4111111111111111", "4012345678909"
CHIP_PAN = "4761739001010218"  # 8.2's worked example
IKID = "1234567890123456"
FILL = bytes.fromhex("2F69ADDE2E9E7ACE")
TDES_KSN = "FFFF9876543210E00001"
# section 9's enciphered blocks
AES_BLOCK_1 = "A912150391AB65A67E52883D81CE2D15"
AES_BLOCK_2 = "52A00503BD34BA1383F6A7EE9FE2547F"
TDES_BLOCK = "1B9C1845EB993A7A"


def b(text: str) -> bytes:
    return bytes.fromhex(text)


def aes_ksn(counter: int, ikid: str = IKID) -> str:
    return ikid + f"{counter:08X}"


def tdes_ksn(counter: int) -> str:
    return f"{int(TDES_KSN, 16) & ~0x1FFFFF | counter:020X}"


# -- ISO 9564-1, written here for the tests ------------------------------------------------

def _aes_enc(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _tdes_enc(key: bytes, block: bytes) -> bytes:
    enc = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def format4(pin: str, pan: str, ksn: str, *, control: str = "4", fill: bytes = FILL,
            pin_fill: str = "A") -> str:
    """An AES format 4 block: AES(K, AES(K, PIN field) xor PAN field)."""
    pin_field = (control + f"{len(pin):X}" + pin).ljust(16, pin_fill) + fill.hex().upper()
    pan_field = (str(max(0, len(pan) - 12)) + pan.rjust(12, "0")).ljust(32, "0")
    key = hostpin.aes_pin_key(hostpin.AES_BDK, b(ksn))
    inner = _aes_enc(key, b(pin_field))
    middle = bytes(x ^ y for x, y in zip(inner, b(pan_field), strict=True))
    return _aes_enc(key, middle).hex().upper()


def format0(pin: str, pan: str, ksn: str, *, control: str = "0", pin_fill: str = "F") -> str:
    """A TDES format 0 block: TDES(K, PIN field xor PAN field)."""
    pin_field = (control + f"{len(pin):X}" + pin).ljust(16, pin_fill)
    pan_field = "0000" + pan[:-1][-12:].rjust(12, "0")
    clear = bytes(x ^ y for x, y in zip(b(pin_field), b(pan_field), strict=True))
    return _tdes_enc(hostpin.tdes_pin_key(hostpin.TDES_BDK, b(ksn)), clear).hex().upper()


# -- messages ------------------------------------------------------------------------

_counters = iter(range(1, 1 << 16))


def swiped(stan: str, pin_block: str, ksn: str, *, pan: str = AES_PAN,
           amount: str = "000000001000", tid: str = "TERM0001", **fields: str) -> dict[str, str]:
    """A swiped purchase 0200 with an online PIN."""
    msg = {"t": "0200", "2": pan, "3": "000000", "4": amount, "7": "1207101500", "11": stan,
           "12": "101500", "13": "1207", "14": "3012", "22": "901", "25": "00",
           "35": f"{pan}=30121010000000000", "41": tid, "42": "MERCHANT0000001",
           "49": "978", "52": pin_block, "53": ksn, "60": "000001", "62": "000001"}
    msg.update(fields)
    return msg


def aes_sale(stan: str, pin: str = "1234", *, pan: str = AES_PAN, counter: int | None = None,
             **fields: str) -> dict[str, str]:
    ksn = aes_ksn(counter if counter is not None else next(_counters))
    return swiped(stan, format4(pin, pan, ksn), ksn, pan=pan, **fields)


def tdes_sale(stan: str, pin: str = "1234", *, pan: str = TDES_PAN, counter: int | None = None,
              **fields: str) -> dict[str, str]:
    ksn = tdes_ksn(counter if counter is not None else next(_counters) % 1024 + 1)
    return swiped(stan, format0(pin, pan, ksn), ksn, pan=pan, **fields)


# 8.2's worked example: a chip purchase of 12.50 whose ARQC is right
CHIP_ICC = [
    (0x9F02, "000000001250"), (0x9F03, "000000000000"), (0x9F1A, "0276"),
    (0x95, "0000008000"), (0x5F2A, "0978"), (0x9A, "261207"), (0x9C, "00"),
    (0x9F37, "11223344"), (0x82, "3900"), (0x9F36, "0001"), (0x9F10, "06010A03A00000"),
    (0x9F26, "CA00FC7521318666"), (0x9F27, "80"), (0x9F34, "420300"), (0x9F33, "E0F8C8"),
    (0x9F35, "22"), (0x84, "F0000000011010"), (0x5F34, "01"),
]  # fmt: skip


def chip(stan: str, pin: str = "1234", *, arqc: str = "CA00FC7521318666",
         counter: int | None = None, block: str | None = None, **fields: str) -> dict[str, str]:
    ksn = aes_ksn(counter if counter is not None else next(_counters))
    icc = tlv.encode_all((t, b(arqc if t == 0x9F26 else v)) for t, v in CHIP_ICC)
    msg = swiped(stan, block or format4(pin, CHIP_PAN, ksn), ksn, pan=CHIP_PAN,
                 amount="000000001250", **{"22": "051", "23": "001", "55": icc.hex().upper()})
    del msg["35"]
    msg.update(fields)
    return msg


@pytest.fixture
def host() -> AcquirerHost:
    return AcquirerHost(rng_seed=1)


def answer(host: AcquirerHost, req: dict[str, str], forced: str | None = None) -> str:
    """The host's field 39 for a request, through the codec as a terminal sends it."""
    decoded = hostproto.decode(hostproto.encode(req))
    return host._books.answer(decoded, forced)["39"]


# -- section 9's vectors ------------------------------------------------------------------

def test_aes_dukpt_vectors_of_section_9() -> None:
    assert hostpin.aes_initial_key(hostpin.AES_BDK, b(IKID)) == \
        b("1273671EA26AC29AFA4D1084127652A1")
    assert hostpin.aes_pin_key(hostpin.AES_BDK, b(aes_ksn(1))) == \
        b("AF8CB133A78F8DC2D1359F18527593FB")
    assert hostpin.aes_pin_key(hostpin.AES_BDK, b(aes_ksn(2))) == \
        b("D30BDC73EC9714B000BEC66BDB7B6D09")


def test_format_4_vectors_of_section_9() -> None:
    assert format4("1234", AES_PAN, aes_ksn(1)) == AES_BLOCK_1
    assert format4("1234", AES_PAN, aes_ksn(2)) == AES_BLOCK_2
    for counter, block in ((1, AES_BLOCK_1), (2, AES_BLOCK_2)):
        key = hostpin.aes_pin_key(hostpin.AES_BDK, b(aes_ksn(counter)))
        assert hostpin.decode_format4(key, b(block), AES_PAN) == "1234"
    assert hostpin.format4_pan_field(AES_PAN) == b("44111111111111111000000000000000")


def test_tdes_dukpt_and_format_0_vectors_of_section_9() -> None:
    ksn = b(TDES_KSN)
    assert hostpin.tdes_initial_key(hostpin.TDES_BDK, ksn) == \
        b("6AC292FAA1315B4D858AB3A3D7D5933A")
    assert hostpin.tdes_transaction_key(hostpin.TDES_BDK, ksn) == \
        b("042666B49184CFA368DE9628D0397BC9")
    pin_key = hostpin.tdes_pin_key(hostpin.TDES_BDK, ksn)
    assert pin_key == b("042666B49184CF5C68DE9628D0397B36")
    assert format0("1234", TDES_PAN, TDES_KSN) == TDES_BLOCK
    clear = Cipher(TripleDES(pin_key + pin_key[:8]), modes.ECB()).decryptor().update(
        b(TDES_BLOCK))
    assert clear == b("041274EDCBA9876F")
    assert hostpin.decode_format0(pin_key, b(TDES_BLOCK), TDES_PAN) == "1234"


def test_the_vectors_messages_are_approved(host: AcquirerHost) -> None:
    assert answer(host, swiped("000001", AES_BLOCK_1, aes_ksn(1))) == "00"
    assert answer(host, swiped("000002", AES_BLOCK_2, aes_ksn(2))) == "00"
    assert answer(host, swiped("000003", TDES_BLOCK, TDES_KSN, pan=TDES_PAN)) == "00"


# -- the PIN and the tries ----------------------------------------------------------------

Sale = Callable[..., dict[str, str]]


@pytest.mark.parametrize("sale", [aes_sale, tdes_sale])
def test_right_pin_approved_and_the_ledger_says_a_pin_was_sent(host: AcquirerHost,
                                                               sale: Sale) -> None:
    req = sale("000001")
    assert answer(host, req) == "00"
    entry = host.ledger()[-1]
    assert entry["pin"] is True and entry["charged"]
    assert not any(v in str(entry) for v in (req["2"], req["52"], req["53"]))
    plain = swiped("000002", "", "")
    del plain["52"], plain["53"]
    assert answer(host, plain) == "00" and host.ledger()[-1]["pin"] is False


@pytest.mark.parametrize("sale", [aes_sale, tdes_sale])
def test_wrong_pins_55_55_then_75_counted_per_pan_across_terminals(
        host: AcquirerHost, sale: Sale) -> None:
    codes = [answer(host, sale(f"00000{i}", "4321", tid=f"TERM000{i}")) for i in range(1, 5)]
    assert codes == ["55", "55", "75", "75"]
    assert answer(host, sale("000005", "1234", tid="TERM0009")) == "75"  # right, still 75
    assert host.pins_blocked() == 1
    other = AES_PAN[:-1] + "9" if sale is aes_sale else TDES_PAN[:-1] + "1"
    assert answer(host, sale("000006", "1234", pan=other)) == "00"  # another card
    assert all(not e["charged"] for e in host.ledger()[:5])


def test_a_right_pin_before_the_third_resets_the_count(host: AcquirerHost) -> None:
    codes = [answer(host, aes_sale(f"00000{i}", pin)) for i, pin in
             enumerate(("0000", "9999", "1234", "1111", "2222", "3333", "1234"), 1)]
    assert codes == ["55", "55", "00", "55", "55", "75", "75"]


def test_pin_reset_op_unblocks_one_card_or_all(host: AcquirerHost) -> None:
    other = "4111111111111129"
    for i, pan in enumerate((AES_PAN, AES_PAN, AES_PAN, other, other, other), 1):
        answer(host, aes_sale(f"{i:06d}", "9999", pan=pan))
    assert host.pins_blocked() == 2
    sim = types.SimpleNamespace(host=host, external=None)
    assert OPS_RESET(sim, pan=other) == {"reset": 1}
    assert answer(host, aes_sale("000010", pan=other)) == "00"
    assert answer(host, aes_sale("000011", pan=AES_PAN)) == "75"
    assert OPS_RESET(sim, pan=None) == {"reset": 1}
    assert answer(host, aes_sale("000012", pan=AES_PAN)) == "00"
    assert ops.OPS["pin_reset"].command == "pin-reset"
    assert ops.OPS["pin_reset"].args[0].secret  # a PAN is never quoted in an error


def OPS_RESET(sim: object, **args: object) -> object:
    return ops.OPS["pin_reset"].handler(sim, **ops.OPS["pin_reset"].arguments(args))


# -- 81: never counted ------------------------------------------------------------------

def _bad_requests() -> list[tuple[str, dict[str, str]]]:
    ksn12, ksn10 = aes_ksn(7), tdes_ksn(7)
    many_aes = aes_ksn((1 << 17) - 1)  # 17 one-bits: AES allows 16
    many_tdes = tdes_ksn((1 << 11) - 1)  # 11 one-bits: TDES allows 10
    return [
        ("AES format nibble", swiped("", format4("1234", AES_PAN, ksn12, control="3"), ksn12)),
        ("AES fill", swiped("", format4("1234", AES_PAN, ksn12, pin_fill="B"), ksn12)),
        ("AES PIN of 3 digits", swiped("", format4("123", AES_PAN, ksn12), ksn12)),
        ("AES PAN field not field 2's",
         swiped("", format4("1234", "4111111111111129", ksn12), ksn12)),
        ("TDES control nibble", swiped("", format0("1234", TDES_PAN, ksn10, control="1"),
                                       ksn10, pan=TDES_PAN)),
        ("TDES PAN field shows in the fill",  # the last digit kept differs: fill F -> E
         swiped("", format0("1234", TDES_PAN, ksn10), ksn10, pan="4012345678919")),
        ("16-byte block with a TDES KSN", swiped("", AES_BLOCK_1, TDES_KSN, pan=TDES_PAN)),
        ("8-byte block with an AES KSN", swiped("", TDES_BLOCK, aes_ksn(1))),
        ("AES counter 0", swiped("", format4("1234", AES_PAN, aes_ksn(0)), aes_ksn(0))),
        ("TDES counter 0", swiped("", format0("1234", TDES_PAN, tdes_ksn(0)), tdes_ksn(0),
                                  pan=TDES_PAN)),
        ("AES 17 one-bits", swiped("", format4("1234", AES_PAN, many_aes), many_aes)),
        ("TDES 11 one-bits", swiped("", format0("1234", TDES_PAN, many_tdes), many_tdes,
                                    pan=TDES_PAN)),
    ]


@pytest.mark.parametrize("case", range(12))
def test_81_for_what_cannot_be_deciphered_or_checked_never_counted(
        host: AcquirerHost, case: int) -> None:
    why, bad = _bad_requests()[case]
    pan = bad["2"]
    assert answer(host, dict(bad, **{"11": "000001"})) == "81", why
    for i in range(2, 5):  # never counted: three more block nothing
        assert answer(host, dict(bad, **{"11": f"{i:06d}"})) == "81", why
    sale = aes_sale if len(bad["53"]) == 24 else tdes_sale
    assert answer(host, sale("000010", "9999", pan=pan)) == "55", why  # the first wrong
    assert answer(host, sale("000011", pan=pan)) == "00", why
    assert host.ledger()[0]["code"] == "81" and not host.ledger()[0]["charged"]


def test_the_largest_allowed_counters_are_accepted(host: AcquirerHost) -> None:
    assert answer(host, aes_sale("000001", counter=0xFFFF0000)) == "00"  # 16 one-bits
    assert answer(host, tdes_sale("000002", counter=0x1FF800)) == "00"  # 10 one-bits


def test_a_tdes_pan_difference_only_in_the_digits_is_a_wrong_pin_9_2(host: AcquirerHost
                                                                      ) -> None:
    """A format 0 block of another PAN whose difference falls on the PIN digits decodes:
    it is a wrong PIN (55), not 81 (9.2: seen only when the control or fill digits show it)."""
    ksn = tdes_ksn(9)
    block = format0("1234", TDES_PAN, ksn)
    # 5012... against 4012...: nibble 4 of the PAN field differs by 1, which turns the
    # PIN's third digit 3 into 2: the block decodes as 1224
    assert answer(host, swiped("000001", block, ksn, pan="5012345678909")) == "55"


def test_an_undecodable_pan_is_81(host: AcquirerHost) -> None:
    ksn = aes_ksn(3)
    req = swiped("000001", format4("1234", AES_PAN, ksn), ksn, pan="41111111111111111111")
    assert host._books.answer(req)["39"] == "81"


# -- KSN reuse and the resend after 91/96 (9.1) -----------------------------------------

def test_a_ksn_already_used_is_81(host: AcquirerHost) -> None:
    first = aes_sale("000001", counter=40)
    assert answer(host, first) == "00"
    again = dict(first, **{"11": "000002"})
    assert answer(host, again) == "81"
    wrong = aes_sale("000003", "9999", counter=40)  # same KSN, another block
    assert answer(host, wrong) == "81"
    assert answer(host, tdes_sale("000004", counter=40)) == "00"  # another method's KSN
    assert answer(host, swiped("000005", format4("1234", AES_PAN, aes_ksn(40, "1234567890123457")),
                               aes_ksn(40, "1234567890123457"))) == "00"  # another device


@pytest.mark.parametrize("busy", ["91", "96"])
def test_the_resend_after_91_or_96_is_not_a_reuse(host: AcquirerHost, busy: str) -> None:
    first = chip("000001", counter=50)
    assert answer(host, first, forced=busy) == busy
    resend = dict(first, **{"11": "000002"})
    assert answer(host, resend) == "00"
    assert answer(host, dict(first, **{"11": "000003"})) == "81"  # once only


def test_the_resend_after_a_busy_fault_goes_through_the_host(host: AcquirerHost) -> None:
    first = hostproto.decode(hostproto.encode(aes_sale("000001", counter=60)))
    assert host._decide(first, host._faults.add("busy", 1, "0200"))["39"] == "91"
    assert answer(host, dict(first, **{"11": "000002"})) == "00"


def test_after_91_the_same_ksn_with_other_data_is_a_reuse(host: AcquirerHost) -> None:
    first = aes_sale("000001", counter=70, amount="000000001091")
    assert answer(host, first) == "91"  # the cents convention: not processed
    other_block = aes_sale("000002", "1234", counter=70, amount="000000001000")
    other_block["52"] = format4("1234", AES_PAN, aes_ksn(70), fill=bytes(8))
    assert answer(host, other_block) == "81"


def test_a_processed_ksn_sent_again_after_is_not_a_resend(host: AcquirerHost) -> None:
    first = aes_sale("000001", "9999", counter=80)
    assert answer(host, first) == "55"
    assert answer(host, dict(first, **{"11": "000002"}), forced="91") == "91"
    assert answer(host, dict(first, **{"11": "000003"})) == "81"


# -- section 7's order ------------------------------------------------------------------

def test_cents_91_and_96_come_before_everything(host: AcquirerHost) -> None:
    garbage = swiped("000001", "00" * 16, aes_ksn(0), amount="000000001091")
    assert answer(host, garbage) == "91"
    assert answer(host, swiped("000002", "00" * 16, aes_ksn(0), amount="000000001096")) == "96"
    assert host.ledger() == []


def test_a_wrong_cryptogram_is_05_before_the_pin_is_looked_at(host: AcquirerHost) -> None:
    for i in range(1, 5):  # wrong PINs behind wrong cryptograms: never counted
        req = chip(f"{i:06d}", "9999", arqc="CA00FC7521318667")
        assert answer(host, req) == "05"
    bad = chip("000005", block="00" * 16, arqc="CA00FC7521318667")
    assert answer(host, bad) == "05"
    assert answer(host, dict(bad, **{"11": "000006", "55": chip("x")["55"]})) == "81"
    assert answer(host, chip("000007", "9999")) == "55"  # the first wrong PIN
    assert answer(host, chip("000008")) == "00"


def test_the_pin_comes_before_the_other_cents(host: AcquirerHost) -> None:
    assert answer(host, aes_sale("000001", "9999", amount="000000001005")) == "55"
    assert answer(host, aes_sale("000002", amount="000000001051")) == "51"
    assert answer(host, aes_sale("000003", amount="000000001054")) == "54"


def test_format_errors_are_30_first(host: AcquirerHost) -> None:
    advice = aes_sale("000001", **{"t": "0220", "38": "Y10001"})
    assert answer(host, advice) == "30"
    no_ksn = aes_sale("000002")
    del no_ksn["53"]
    assert answer(host, no_ksn) == "30"
    assert answer(host, swiped("000003", "00" * 12, aes_ksn(3))) == "30"


# -- nothing of the PIN is kept or said --------------------------------------------------

def test_no_pin_pan_or_block_in_the_logs_or_the_state(host: AcquirerHost,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reqs = [aes_sale("000001", "8642"), aes_sale("000002", "8642"), aes_sale("000003"),
            tdes_sale("000004", "8642"), swiped("000005", "11" * 16, aes_ksn(0))]
    for req in reqs:
        answer(host, req)
    text = caplog.text + repr(host._pins) + repr(vars(host._pins)) + repr(host.ledger())
    secrets = {"8642", AES_PAN, TDES_PAN} | {r["52"] for r in reqs}
    assert not any(s in text for s in secrets)
    assert "PIN cryptographic error" in caplog.text and "wrong PIN" in caplog.text


def test_the_host_installs_its_pin_checks() -> None:
    books = Books(random.Random(1))
    assert books.pin_check is None  # the books alone: a PIN block is 81
    assert isinstance(AcquirerHost().pin_check, hostpin.PinChecks)


def test_wire_view_masks_52_and_53_9_2() -> None:
    req = aes_sale("000001", counter=1)
    view = hostproto.wire_view(req)
    assert view["52"] == "0" * 32 and view["53"] == IKID[:6] + "*" * 14 + "0001"
    view = hostproto.wire_view(swiped("000002", TDES_BLOCK, TDES_KSN, pan=TDES_PAN))
    assert view["52"] == "0" * 16 and view["53"] == "FFFF98**********0001"


def test_tdes_pin_key_vector_via_emvkeys_des() -> None:
    """The PIN variant vector enciphers the clear block with an independent TDES."""
    key = b("042666B49184CF5C68DE9628D0397B36")
    assert emvkeys._ede(key, b("041274EDCBA9876F")) == b(TDES_BLOCK)
