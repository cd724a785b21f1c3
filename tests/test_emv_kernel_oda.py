"""The kernel with real offline data authentication (EMV 4.4 Book 3 10.3, Book 2 5
and 6): a scripted card carrying certificates built as Book 2's tables say (issuer
certificate Table 6, ICC certificate Table 14, SSAD Table 7, SDAD Table 17) under
freshly generated RSA keys, so that the kernel's static data, CA key choice, DDOL
data and TVR bits meet `oda.py`'s checks end to end."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from firmware.core.emv import tlv
from firmware.core.emv.params import CaKey
from firmware.core.emv.steps import Response
from tests.test_emv_kernel import (
    OK, FakeCard, default_records, drive, e, offline_terminal, sent,
)

PAN = "5413330089010020"
RID = bytes.fromhex("F000000001")


@dataclass(frozen=True)
class Key:
    n: int
    d: int
    size: int  # bytes

    @property
    def modulus(self) -> bytes:
        return self.n.to_bytes(self.size, "big")

    def sign(self, block: bytes) -> bytes:
        assert len(block) == self.size
        return pow(int.from_bytes(block, "big"), self.d, self.n).to_bytes(self.size, "big")


def _key(bits: int) -> Key:
    numbers = rsa.generate_private_key(public_exponent=3, key_size=bits).private_numbers()
    return Key(numbers.public_numbers.n, numbers.d, bits // 8)


@pytest.fixture(scope="module")
def keys() -> tuple[Key, Key, Key]:
    return _key(1408), _key(1152), _key(1024)  # CA, issuer, ICC


def _certificate(signer: Key, fmt: int, ident: bytes, subject: Key,
                 extra: bytes = b"") -> tuple[bytes, bytes]:
    """Book 2 Tables 6 (fmt 02, 4-byte issuer id) and 14 (fmt 04, 10-byte PAN): the
    certificate and the remainder."""
    head = bytes([fmt]) + ident + bytes.fromhex("1230") + b"\x00\x00\x01" + b"\x01\x01" \
        + bytes([subject.size, 1])
    room = signer.size - len(head) - 22
    key_part = subject.modulus[:room].ljust(room, b"\xbb")
    remainder = subject.modulus[room:]
    digest = hashlib.sha1(head + key_part + remainder + b"\x03" + extra).digest()
    return signer.sign(b"\x6a" + head + key_part + digest + b"\xbc"), remainder


def _sdad(icc: Key, number: bytes, ddol_data: bytes) -> bytes:
    """Book 2 Table 17: format 05, SHA-1, ICC dynamic data (length, number), BB pad."""
    dyn = bytes([len(number)]) + number
    body = b"\x05\x01" + bytes([len(dyn)]) + dyn
    body += b"\xbb" * (icc.size - len(body) - 22)
    digest = hashlib.sha1(body + ddol_data).digest()
    return icc.sign(b"\x6a" + body + digest + b"\xbc")


def _card(keys: tuple[Key, Key, Key], aip: str, tamper: bool = False,
          drop_remainder: bool = False) -> tuple[FakeCard, CaKey]:
    ca, issuer, icc = keys
    records = default_records(PAN)
    static = tlv.parse(records[(2, 1)])[0].value + bytes.fromhex(aip)  # 9F4A = 82
    issuer_cert, issuer_rem = _certificate(ca, 0x02, bytes.fromhex("541333FF"), issuer)
    icc_cert, icc_rem = _certificate(issuer, 0x04, bytes.fromhex(PAN + "FFFF"), icc, static)
    extra = (e(0x8F, b"\x01") + e(0x90, issuer_cert) + e(0x9F32, b"\x03")
             + e(0x9F46, icc_cert) + e(0x9F47, b"\x03") + e(0x9F4A, b"\x82")
             + e(0x9F49, bytes.fromhex("9F3704")))
    if issuer_rem and not drop_remainder:
        extra += e(0x92, issuer_rem)
    if icc_rem:
        extra += e(0x9F48, icc_rem)
    records[(2, 2)] = e(0x70, tlv.parse(records[(2, 2)])[0].value + extra)

    def hook(apdu: bytes) -> Response | None:
        if apdu[1] == 0x88:
            sdad = bytearray(_sdad(icc, b"\x12\x34\x56\x78", apdu[5:-1]))
            if tamper:
                sdad[-1] ^= 1
            return Response(e(0x80, bytes(sdad)), OK)
        return None
    card = FakeCard(aip=bytes.fromhex(aip), afl=bytes.fromhex("10010201"), records=records,
                    hook=hook)
    return card, CaKey(RID, 1, ca.modulus, 3, date(2030, 12, 31))


def test_dda_passes_with_real_certificates_book2_6(keys: tuple[Key, Key, Key]) -> None:
    """Book 2 6.3-6.5, Book 3 10.3: issuer and ICC keys recovered (remainders 92,
    9F48), static data = record 1's 70 value + AIP (9F4A), INTERNAL AUTHENTICATE with
    the card's DDOL: DDA succeeds, no TVR byte 1 bit, TSI ODA performed."""
    card, ca = _card(keys, "3C00")
    run = drive(card, terminal=replace(offline_terminal(), ca_keys=(ca,)))
    chip = run.outcome.chip
    assert chip is not None and run.outcome.decision == "approved"
    assert chip.tvr[:2] == "00" and int(chip.tsi[:2], 16) & 0x80
    assert sent(card, 0x88) == [bytes.fromhex("008800000411223344" "00")]


@pytest.mark.parametrize("case, byte1", [("tamper", 0x08), ("no remainder", 0x28),
                                         ("wrong CA index", 0x08)])
def test_dda_failures_with_real_certificates_book3_10_3(keys: tuple[Key, Key, Key],
                                                        case: str, byte1: int) -> None:
    """Book 3 10.3, Annex C5: a bad SDAD -> DDA failed; a missing issuer key remainder
    (oda.OdaMissing) -> ICC data missing and DDA failed; no CA key -> DDA failed."""
    card, ca = _card(keys, "3C00", tamper=case == "tamper",
                     drop_remainder=case == "no remainder")
    if case == "wrong CA index":
        ca = CaKey(RID, 2, ca.modulus, 3, ca.expiry)
    run = drive(card, terminal=replace(offline_terminal(), ca_keys=(ca,)))
    assert run.outcome.chip is not None
    assert int(run.outcome.chip.tvr[:2], 16) == byte1
