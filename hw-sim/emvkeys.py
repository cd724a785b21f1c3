"""The test chip cards' symmetric keys and cryptograms, as any host for tests checks
them (host-interface 8.2). The card model computes with the same functions, so the
host and the cards agree by construction; the tests pin every number of the design's
worked example, so neither can drift from the page.

- ICC master key: EMV 4.4 Book 2 Annex A1.4.1, option A. Y is the rightmost 16
  digits of PAN || PSN (left-padded with zeros when shorter), ZL = 3DES(IMK)[Y],
  ZR = 3DES(IMK)[Y xor FF..FF], MK = ZL || ZR adjusted to odd parity.
- Session key: Book 2 Annex A1.3, the common session key derivation, with
  R = ATC || 000000000000: SK = 3DES(MK)[R0 R1 F0 R3..R7] || 3DES(MK)[R0 R1 0F R3..R7],
  odd parity.
- Cryptogram (ARQC, TC, AAC): ISO/IEC 9797-1 MAC algorithm 3, padding method 2, 8
  bytes, over the values of `CRYPTOGRAM_TAGS` in that order.
- ARPC: Book 2 8.2.1, method 1: 3DES(SK)[ARQC xor (ARC || 000000000000)].

Triple DES comes from `cryptography` (its "decrepit" module where it has one). These
keys are test keys and never used outside tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 moved TripleDES to the decrepit module
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

IMK_AC: bytes = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")

# The data objects of the application cryptogram, in order (host-interface 8.2).
CRYPTOGRAM_TAGS = (0x9F02, 0x9F03, 0x9F1A, 0x95, 0x5F2A, 0x9A, 0x9C, 0x9F37, 0x82,
                   0x9F36, 0x9F10)


def _triple(key: bytes) -> bytes:
    """The key as three-key 3DES: single DES is K1 = K2 = K3, double length K3 = K1."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    return key


def _ede(key: bytes, block: bytes) -> bytes:
    """3DES encryption of one block under a double (or single, or triple) length key."""
    if len(block) != 8:
        raise ValueError(f"a DES block is 8 bytes, not {len(block)}")
    if len(key) not in (8, 16, 24):
        raise ValueError(f"a DES key is 8, 16 or 24 bytes, not {len(key)}")
    enc = Cipher(TripleDES(_triple(key)), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _dec(key: bytes, block: bytes) -> bytes:
    dec = Cipher(TripleDES(_triple(key)), modes.ECB()).decryptor()
    return dec.update(block) + dec.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def odd_parity(key: bytes) -> bytes:
    """Each byte's low bit set so that the byte has an odd number of one bits."""
    out = bytearray()
    for b in key:
        high = b & 0xFE
        out.append(high | (0 if bin(high).count("1") % 2 else 1))
    return bytes(out)


def icc_master_key(imk: bytes, pan: str, psn: str) -> bytes:
    """Book 2 A1.4.1 option A: the ICC master key from the PAN and the PAN sequence
    number ("" or None-like means `00`)."""
    if not pan.isdigit():
        raise ValueError("the PAN must be digits")
    psn = psn or "00"
    if len(psn) != 2 or not psn.isdigit():
        raise ValueError(f"the PAN sequence number is two digits, not {psn!r}")
    digits = (pan + psn)[-16:].rjust(16, "0")
    y = bytes.fromhex(digits)
    zl = _ede(imk, y)
    zr = _ede(imk, _xor(y, b"\xff" * 8))
    return odd_parity(zl + zr)


def session_key(mk: bytes, atc: int) -> bytes:
    """Book 2 A1.3, the common session key derivation, R = ATC || 000000000000."""
    if not 0 <= atc <= 0xFFFF:
        raise ValueError(f"an ATC is two bytes, not {atc}")
    a = atc.to_bytes(2, "big")
    left = _ede(mk, a + b"\xf0" + bytes(5))
    right = _ede(mk, a + b"\x0f" + bytes(5))
    return odd_parity(left + right)


def mac3(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (the retail MAC), padding method 2, 8 bytes:
    single-DES CBC under the key's left half, then the last block decrypted under its
    right half and encrypted again under the left."""
    if len(key) != 16:
        raise ValueError(f"MAC algorithm 3 takes a double-length key, not {len(key)} bytes")
    kl, kr = key[:8], key[8:]
    padded = data + b"\x80"
    padded += bytes(-len(padded) % 8)
    h = bytes(8)
    for i in range(0, len(padded), 8):
        h = _ede(kl, _xor(h, padded[i:i + 8]))
    return _ede(kl, _dec(kr, h))


def cryptogram_data(values: Mapping[int, bytes]) -> bytes:
    """The values of `CRYPTOGRAM_TAGS`, concatenated in order; KeyError names a missing
    one."""
    missing = [f"{t:X}" for t in CRYPTOGRAM_TAGS if t not in values]
    if missing:
        raise KeyError(f"cryptogram data lacks {', '.join(missing)}")
    return b"".join(values[t] for t in CRYPTOGRAM_TAGS)


def cryptogram(sk: bytes, data: bytes) -> bytes:
    """The application cryptogram (ARQC, TC or AAC) over `data` under the session key."""
    return mac3(sk, data)


def arpc(sk: bytes, arqc: bytes, arc: bytes) -> bytes:
    """Book 2 8.2.1 method 1: 3DES(SK)[ARQC xor (ARC || 000000000000)]."""
    if len(arqc) != 8 or len(arc) != 2:
        raise ValueError("ARPC method 1 takes an 8-byte ARQC and a 2-byte ARC")
    return _ede(sk, _xor(arqc, arc + bytes(6)))


def check_value(key: bytes) -> str:
    """The key check value: the first 3 bytes of 3DES(key)[00..00], hex upper case."""
    return _ede(key, bytes(8))[:3].hex().upper()
