"""Debian version order, written once: the terminal's "is this bundle newer" (bundle.py)
and the fleet console's `version_behind` alert (fleet/alerts.py) both use it, so they
cannot order two versions differently.

A version is `[epoch:]upstream[-revision]` (Debian Policy 5.6.12): the epoch a number
before the first colon (0 when there is none), the revision what follows the last hyphen
("" when there is none). Two versions compare by epoch, then upstream, then revision;
upstream and revision each as dpkg's `verrevcmp` does: alternately a run of non-digits,
compared character by character where "~" sorts before anything, even the end of the
string, and letters before every other character; then a run of digits, compared as a
number (leading zeros ignored). So 1.0~rc1 < 1.0 < 1.0+b1 < 1.0.1 < 1.9 < 1.10 < 1:0.1,
and 1.0 == 1.0-0 == 0:1.0.

`compare` takes any string, as `dpkg --compare-versions` does with a version that only
draws a warning (it compares it by the same rules); `problem` says what is wrong with a
string as a version (dpkg's own words) and `valid` whether nothing is: what the console
reads from a terminal's telemetry is a version only if `valid`. `key` sorts with
`compare`. Pure: imported by the fleet console too, so it imports nothing from the
project.
"""

from __future__ import annotations

import functools
import string

MAX_LENGTH = 128  # longer than any version a package has; the console bounds what it reads
_DIGITS = frozenset(string.digits)
_LETTERS = frozenset(string.ascii_letters)
_UPSTREAM_MORE = frozenset(".+~-:")
_REVISION_MORE = frozenset(".+~")


def _order(c: str) -> int:
    """dpkg's `order`: the end of the string and a digit 0, "~" below them, letters as
    themselves, anything else above every letter."""
    if c == "" or c in _DIGITS:
        return 0
    if c == "~":
        return -1
    if c in _LETTERS:
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's `verrevcmp` on one part (upstream or revision): <0, 0 or >0."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            ac, bc = _order(a[i:i + 1]), _order(b[j:j + 1])
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        start_a, start_b = i, j
        while i < len(a) and a[i] in _DIGITS:
            i += 1
        while j < len(b) and b[j] in _DIGITS:
            j += 1
        na, nb = int(a[start_a:i] or 0), int(b[start_b:j] or 0)
        if na != nb:
            return -1 if na < nb else 1
    return 0


def split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) as dpkg reads them; a malformed epoch counts as 0 (dpkg
    refuses such a version outright: see `problem`)."""
    text = version.strip(" \t")
    epoch = 0
    head, colon, rest = text.partition(":")
    if colon and head and set(head) <= _DIGITS:
        epoch, text = int(head), rest
    upstream, hyphen, revision = text.rpartition("-")
    return (epoch, upstream, revision) if hyphen else (epoch, text, "")


def problem(version: object) -> str | None:
    """Why `version` is not a Debian version (dpkg's words, errors and warnings alike), or
    None when it is one."""
    if not isinstance(version, str):
        return "version is not a string"
    if version == "":
        return "version string is empty"
    if len(version) > MAX_LENGTH:
        return f"version string is longer than {MAX_LENGTH} characters"
    if version != version.strip(" \t") or " " in version or "\t" in version:
        return "version string has embedded spaces"
    head, colon, rest = version.partition(":")
    if colon:
        if head.startswith("-") and head[1:].isdigit():
            return "epoch in version is negative"
        if not head or not set(head) <= _DIGITS:
            return "epoch in version is empty" if head[:1] not in _DIGITS \
                else "epoch in version is not number"
        if int(head) > 2**31 - 1:
            return "epoch in version is too big"
        if not rest:
            return "nothing after colon in version number"
    _, upstream, revision = split(version)
    if version.endswith("-"):
        return "revision number is empty"
    if not upstream:
        return "upstream version is empty"
    if upstream[0] not in _DIGITS:
        return "version number does not start with digit"
    if not set(upstream) <= _DIGITS | _LETTERS | _UPSTREAM_MORE:
        return "invalid character in version number"
    if not set(revision) <= _DIGITS | _LETTERS | _REVISION_MORE:
        return "invalid character in revision number"
    return None


def valid(version: object) -> bool:
    """A Debian version: dpkg would read it without an error or a warning."""
    return problem(version) is None


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as `a` sorts before, with or after `b` in Debian's order."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    diff = _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
    return (diff > 0) - (diff < 0)


def newer(candidate: str, than: str) -> bool:
    """`dpkg --compare-versions candidate gt than`."""
    return compare(candidate, than) > 0


key = functools.cmp_to_key(compare)
"""A sort key: `max(versions, key=debversion.key)`, `sorted(..., key=debversion.key)`."""
