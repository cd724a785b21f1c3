"""The fleet's `update` command's arguments (docs/fleet.md), checked in one place: the
console refuses, before it signs anything, exactly what the terminal would refuse, in
the terminal's words.

`{"url": "https://host/...", "sha256": "<64 hex>"}`: the SHA-256 is 64 hex digits (either
case; lowercase from here on), the URL is https with a host, printable, at most
URL_MAX characters. The SHA-256 is checked first, as the terminal does. Pure: imported
by the fleet console too, so it imports nothing from the project.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

URL_MAX = 2048
BAD_SHA256 = "sha256: must be 64 hex digits"
BAD_URL = "invalid URI: must be https://host/..."
_HEX = re.compile(r"[0-9a-f]{64}")


class Refused(ValueError):
    """Arguments the terminal would refuse: the message is its words."""


def check_sha256(value: object) -> str:
    """The digest, lowercase; Refused(BAD_SHA256) unless it is 64 hex digits."""
    if not isinstance(value, str) or not _HEX.fullmatch(value.lower()):
        raise Refused(BAD_SHA256)
    return value.lower()


def url_ok(value: object) -> bool:
    """An https URL with a host, printable, at most URL_MAX characters."""
    if not isinstance(value, str) or len(value) > URL_MAX or not value.isprintable():
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme == "https" and bool(parts.hostname)
    except ValueError:  # "https://[::1" and the like: not a URL
        return False


def check(args: dict[str, Any]) -> tuple[str, str]:
    """(url, sha256) from the command's arguments, or Refused with the terminal's words."""
    digest = check_sha256(args.get("sha256"))
    url = args.get("url")
    if not url_ok(url):
        raise Refused(BAD_URL)
    return str(url), digest
