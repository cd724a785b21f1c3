"""Card data at rest: AES-256-GCM under a key kept in its own file.

The key file is created on first start (mode 0600, readable only by the service
user). A missing key file when sealed data exists, an unreadable file, or a key
that does not open the stored data is a KeyStoreError that stops the firmware:
it never re-keys silently, because that would orphan the stored sales.
Each sealed value binds its record id as associated data, so a blob copied onto
another record does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from firmware.errors import KeyStoreError
from firmware.runtime.statedir import write_private

log = logging.getLogger("posterm.vault")

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"
PAN_HASH_LABEL = b"posterm pan hash v1"


class Vault:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise KeyStoreError(f"key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        # the duplicate guard's key: derived, never the card-data key itself, so a PAN hash
        # reveals nothing about that key and differs from terminal to terminal
        self._pan_key = hmac.new(key, PAN_HASH_LABEL, hashlib.sha256).digest()
        self.created = False  # True when this start made a new key file

    @classmethod
    def open(cls, path: Path, *, create: bool) -> Vault:
        """Load the key; create it only when `create` (no sealed data exists yet)."""
        if not path.exists():
            if not create:
                raise KeyStoreError(
                    f"key file {path} is missing but the journal holds encrypted card data: "
                    "restore the key file (the stored sales cannot be read without it)")
            vault = cls(_create_key(path))
            vault.created = True
            log.warning("created a new card-data key file %s (mode 600): back it up with the "
                        "journal; card data stored under it cannot be read without it", path)
            return vault
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyStoreError(f"key file {path} is readable by others "
                                    f"(mode {stat.S_IMODE(mode):o}): chmod 600 it")
            key = path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"cannot read key file {path}: {exc.strerror}") from None
        if len(key) != KEY_BYTES:
            raise KeyStoreError(f"key file {path} is damaged: {len(key)} bytes, "
                                f"expected {KEY_BYTES}")
        return cls(key)

    def seal(self, record: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, record.encode())

    def pan_hash(self, pan: str) -> str:
        """A keyed hash (HMAC-SHA256, hex) of a PAN: the same card gives the same value on
        this terminal, and nothing that leads back to the PAN without the key file."""
        return hmac.new(self._pan_key, pan.encode(), hashlib.sha256).hexdigest()

    def unseal(self, record: str, blob: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != VERSION:
            raise KeyStoreError(f"stored card data for {record} is damaged")
        nonce, body = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, record.encode())
        except InvalidTag:
            raise KeyStoreError(f"the key does not open the stored card data of {record}: "
                                "wrong key file?") from None


def _create_key(path: Path) -> bytes:
    key = AESGCM.generate_key(bit_length=256)
    write_private(path, key)
    return key
