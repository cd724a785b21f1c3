"""The modem's errors, in one place.

`ModemError` and its subclasses (firmware DeviceError, device "modem") are what
start(), refresh() and the power steps raise: a clear message and a `display`
text of at most 20 characters. A connection through the modem fails as asyncio's
would, with an OSError: `cipopen_error` names a +CIPOPEN error code.
"""

from __future__ import annotations

import errno

from firmware.errors import DeviceError

DEVICE = "modem"


class ModemError(DeviceError):
    """The modem cannot give a data path; `display` says why in at most 20 characters."""

    device = DEVICE
    display = "MODEM FAULT"


class ModemNotAnswering(ModemError):
    display = "MODEM NOT ANSWERING"


class NoSimError(ModemError):
    display = "NO SIM"


class SimNotReady(ModemError):
    display = "SIM NOT READY"


class RegistrationDenied(ModemError):
    display = "REGISTRATION DENIED"


class NoSignalError(ModemError):
    display = "NO SIGNAL"


class DataSessionRefused(ModemError):
    display = "DATA SESSION REFUSED"


CIPOPEN_ERRORS: dict[int, tuple[int, str]] = {
    1: (errno.ECONNREFUSED, "network failure: the host refused or could not be reached"),
    2: (errno.ENETDOWN, "the data session is not open"),
    3: (errno.EINVAL, "wrong parameter"),
    4: (errno.EBUSY, "operation not supported (link in use)"),
    5: (errno.EIO, "failed to create a socket"),
    6: (errno.EIO, "failed to bind the socket"),
    8: (errno.EBUSY, "busy"),
    9: (errno.EBUSY, "socket already open"),
    10: (errno.ETIMEDOUT, "timeout"),
    11: (errno.EHOSTUNREACH, "the host name did not resolve (DNS)"),
}


def cipopen_error(code: int, peer: str) -> OSError:
    """The OSError for +CIPOPEN error `code` (ECONNREFUSED makes a ConnectionRefusedError)."""
    err, meaning = CIPOPEN_ERRORS.get(code, (errno.EIO, "unknown error"))
    return OSError(err, f"modem: cannot connect to {peer}: +CIPOPEN error {code} ({meaning})")
