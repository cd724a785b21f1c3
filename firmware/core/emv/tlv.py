"""BER-TLV as EMV uses it (EMV 4.4 Book 3 Annex B) and data object lists (Book 3 5.4).

`parse` keeps the order and the duplicates of what the card sent, descends into
constructed objects (bit 6 of the first tag byte), and rejects what Annex B does not
allow: a tag longer than 3 bytes, the indefinite length `80`, a length of more than
two bytes, a length past the end of the buffer, templates nested deeper than
`MAX_DEPTH`. Bytes `00` between objects (ISO/IEC 7816-4 5.2.2.1: erased objects)
are skipped where the caller allows padding (records), never in field 55.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

MAX_DEPTH = 8  # a template inside a template... deeper than any EMV object goes


class TlvError(ValueError):
    """Data that is not BER-TLV as EMV allows it; the message says where and why."""


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes
    children: tuple[Tlv, ...] = ()  # parsed value of a constructed object

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    def encode(self) -> bytes:
        return encode(self.tag, self.value)

    def __repr__(self) -> str:
        return f"Tlv({self.tag:X}, {len(self.value)} bytes)"


def is_constructed(tag: int) -> bool:
    return bool(tag_bytes(tag)[0] & 0x20)


def tag_bytes(tag: int) -> bytes:
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def _tag(data: bytes, i: int) -> tuple[int, int]:
    start = i
    first = data[i]
    i += 1
    if first & 0x1F == 0x1F:  # subsequent bytes while bit 8 is set
        while True:
            if i >= len(data):
                raise TlvError(f"tag at offset {start} runs past the end")
            b = data[i]
            i += 1
            if not b & 0x80:
                break
            if i - start >= 3:
                raise TlvError(f"tag at offset {start} is longer than 3 bytes")
    return int.from_bytes(data[start:i], "big"), i


def _length(data: bytes, i: int, tag: int) -> tuple[int, int]:
    if i >= len(data):
        raise TlvError(f"tag {tag:X} has no length")
    first = data[i]
    i += 1
    if first < 0x80:
        return first, i
    count = first & 0x7F
    if count == 0:
        raise TlvError(f"tag {tag:X}: indefinite length is not allowed")
    if count > 2:
        raise TlvError(f"tag {tag:X}: length of {count} bytes is not allowed")
    if i + count > len(data):
        raise TlvError(f"tag {tag:X}: length runs past the end")
    return int.from_bytes(data[i:i + count], "big"), i + count


def parse(data: bytes, *, padding: bool = False, depth: int = 0) -> tuple[Tlv, ...]:
    """All data objects in `data`, in order, duplicates kept; raises TlvError."""
    if depth > MAX_DEPTH:
        raise TlvError(f"templates nested deeper than {MAX_DEPTH}")
    out: list[Tlv] = []
    i = 0
    n = len(data)
    while i < n:
        if padding and data[i] in (0x00, 0xFF):
            i += 1
            continue
        if data[i] in (0x00, 0xFF):
            raise TlvError(f"byte {data[i]:02X} at offset {i} where a tag was expected")
        tag, i = _tag(data, i)
        length, i = _length(data, i, tag)
        if i + length > n:
            raise TlvError(f"tag {tag:X}: length {length} runs past the end "
                           f"({n - i} bytes left)")
        value = bytes(data[i:i + length])
        i += length
        children = parse(value, padding=padding, depth=depth + 1) \
            if is_constructed(tag) else ()
        out.append(Tlv(tag, value, children))
    return tuple(out)


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    if n < 0x10000:
        return bytes([0x82]) + n.to_bytes(2, "big")
    raise TlvError(f"length {n} is too long for EMV")


def encode(tag: int, value: bytes) -> bytes:
    return tag_bytes(tag) + encode_length(len(value)) + bytes(value)


def encode_all(items: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(encode(t, v) for t, v in items)


def walk(tlvs: Iterable[Tlv]) -> Iterator[Tlv]:
    """Every object, depth first, in the order it came."""
    for t in tlvs:
        yield t
        if t.children:
            yield from walk(t.children)


def find(tlvs: Iterable[Tlv], tag: int) -> bytes | None:
    """The value of the first object with `tag`, at any depth; None when absent."""
    for t in walk(tlvs):
        if t.tag == tag:
            return t.value
    return None


def find_all(tlvs: Iterable[Tlv], tag: int) -> list[bytes]:
    return [t.value for t in walk(tlvs) if t.tag == tag]


# -- data object lists (Book 3 5.4) -------------------------------------------

def parse_dol(dol: bytes) -> tuple[tuple[int, int], ...]:
    """(tag, length) pairs of a data object list; raises TlvError."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(dol):
        tag, i = _tag(dol, i)
        length, i = _length(dol, i, tag)
        out.append((tag, length))
    return tuple(out)


def fit(tag: int, value: bytes | None, length: int, fmt: str) -> bytes:
    """One value as a DOL asks for it (Book 3 5.4): unknown -> zeros; numeric (`n`)
    keeps its rightmost bytes or is padded with leading zeros; compressed numeric
    (`cn`) is padded with trailing `FF`; anything else keeps its leftmost bytes or is
    padded with trailing zeros."""
    if value is None:
        return bytes(length)
    if len(value) == length:
        return value
    if fmt == "n":
        return value[-length:] if len(value) > length else bytes(length - len(value)) + value
    if len(value) > length:
        return value[:length]
    pad = b"\xff" if fmt == "cn" else b"\x00"
    return value + pad * (length - len(value))


def build_dol(dol: bytes, values: Mapping[int, bytes], formats: Mapping[int, str]) -> bytes:
    """The concatenated values a DOL asks for (no tags, no lengths)."""
    return b"".join(fit(tag, values.get(tag), length, formats.get(tag, "b"))
                    for tag, length in parse_dol(dol))
