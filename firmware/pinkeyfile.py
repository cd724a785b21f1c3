"""The DUKPT key file's text: what `posterm key-load` takes and what the key file holds.

"name = hex" lines and "#" comments: the method ("aes" or "tdes"), the initial key with
its initial key ID (AES DUKPT) or initial KSN (TDES DUKPT, its counter bits 0), and the
key's check value (firmware/dukpt.py: AES-CMAC of a zero block, 3 to 5 bytes, or TDES of
a zero block, 3 bytes), so that a key mistyped or damaged on its way is refused, never
used. Pure text handling, shared by the runtime's key store (firmware/runtime/pinkeys.py)
and hwsim, which writes the simulated terminal's key file. Errors never hold a key.
"""

from __future__ import annotations

from firmware.dukpt import (
    AES, AES_ID_BYTES, AES_KEY_BYTES, METHODS, TDES, TDES_KEY_BYTES, TDES_KSN_BYTES,
    DukptError, check_value, tdes_counter,
)

KEY_NAMES = {AES: "initial_key_id", TDES: "initial_ksn"}
ID_BYTES = {AES: AES_ID_BYTES, TDES: TDES_KSN_BYTES}
CHECK_BYTES = {AES: (3, 5), TDES: (3, 3)}  # the check value's accepted lengths, in bytes


def key_text(method: str, key: bytes | bytearray, ident: bytes) -> str:
    """The key file's text (the caller writes it mode 600)."""
    return ("# posterm DUKPT initial key (posterm key-load): secret, readable only by the "
            "service\n"
            f"method = {method}\n{KEY_NAMES[method]} = {ident.hex().upper()}\n"
            f"initial_key = {bytes(key).hex().upper()}\n"
            f"check_value = {check_value(method, key).hex().upper()}\n")


def parse_key_text(text: str, method: str | None = None) -> tuple[str, bytearray, bytes]:
    """(method, initial key, initial key ID or initial KSN) from a key file's text;
    `method`: the one expected (the configuration's). DukptError names what is wrong,
    never a key's value; the caller wipes the key."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name = name.strip().lower()
        if not eq or name not in ("method", "initial_key", "check_value", *KEY_NAMES.values()):
            raise DukptError(f'line {number} is not "name = value" with a known name (method, '
                             "initial_key, initial_key_id or initial_ksn, check_value)")
        if name in values:
            raise DukptError(f"line {number}: {name} is given twice")
        values[name] = "".join(value.split())
    given = values.get("method", "").lower() or (
        TDES if "initial_ksn" in values else AES if "initial_key_id" in values else
        method or AES)
    if given not in METHODS:
        raise DukptError(f'method must be "{AES}" or "{TDES}"')
    if method is not None and given != method:
        raise DukptError(f'the key is for method "{given}" but the configuration\'s [pin] '
                         f'method is "{method}"')
    id_name = KEY_NAMES[given]
    for name in ("initial_key", id_name, "check_value"):
        if name not in values:
            raise DukptError(f"{name} is missing (an {given.upper()} DUKPT key needs "
                             f"initial_key, {id_name} and check_value)")
    other = KEY_NAMES[TDES if given == AES else AES]
    if other in values:
        raise DukptError(f"{other} does not belong to an {given.upper()} DUKPT key")
    try:
        key = bytearray.fromhex(values["initial_key"])
        ident, check = bytes.fromhex(values[id_name]), bytes.fromhex(values["check_value"])
    except ValueError:
        raise DukptError("initial_key, the key ID and check_value must be hexadecimal") \
            from None
    size = AES_KEY_BYTES if given == AES else TDES_KEY_BYTES
    lo, hi = CHECK_BYTES[given]
    problem = (f"initial_key must be {size} bytes ({2 * size} hex digits)" if len(key) != size
               else f"{id_name} must be {ID_BYTES[given]} bytes ({2 * ID_BYTES[given]} hex "
                    "digits)" if len(ident) != ID_BYTES[given]
               else "the initial KSN's transaction counter (its right 21 bits) must be 0"
               if given == TDES and tdes_counter(ident)
               else f"check_value must be {lo}" + (f" to {hi}" if hi != lo else "")
                    + " bytes" if not lo <= len(check) <= hi
               else "check_value does not match the key: it was mistyped or damaged"
               if check_value(given, key)[:len(check)] != check else "")
    if problem:
        key[:] = bytes(len(key))
        raise DukptError(problem)
    return given, key, ident
