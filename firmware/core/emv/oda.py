"""PLACEHOLDER until the chip-oda branch lands: offline data authentication (EMV 4.4
Book 2) with the API the kernel calls. Every check fails with `OdaError`, so a kernel
built on this placeholder never passes ODA. The chip-oda branch replaces this file."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date

from firmware.core.emv.params import CaKey


class OdaError(ValueError):
    """A certificate or signature that does not verify (Book 2 5, 6)."""


@dataclass(frozen=True)
class PublicKey:
    modulus: bytes
    exponent: bytes


def static_data(records: Sequence[tuple[int, bytes]], tag_list: bytes | None,
                aip: bytes) -> bytes:
    raise OdaError("offline data authentication is not available")


def issuer_key(ca: CaKey, cert: bytes, remainder: bytes | None, exponent: bytes, pan: str,
               today: date, revoked: Collection[tuple[bytes, int, bytes]]) -> PublicKey:
    raise OdaError("offline data authentication is not available")


def icc_key(issuer: PublicKey, cert: bytes, remainder: bytes | None, exponent: bytes,
            static: bytes, pan: str, today: date) -> PublicKey:
    raise OdaError("offline data authentication is not available")


def verify_sda(issuer: PublicKey, ssad: bytes, static: bytes) -> bytes:
    raise OdaError("offline data authentication is not available")


def verify_dda(icc: PublicKey, sdad: bytes, ddol_data: bytes) -> bytes:
    raise OdaError("offline data authentication is not available")


def verify_cda(icc: PublicKey, sdad: bytes, unpredictable: bytes, cid: int,
               genac_without_sdad: bytes, pdol_data: bytes, cdol_data: bytes) -> bytes:
    raise OdaError("offline data authentication is not available")
