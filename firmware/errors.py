"""The one error hierarchy of posterm.

Every error carries a message a person can act on. The runtime turns them into
a display text (for the person at the counter) or a log line (for the operator),
never a traceback.
"""


class PostermError(Exception):
    """Base of every error posterm raises on purpose."""


class ConfigError(PostermError):
    """The configuration file is missing, unreadable or has a bad key or value."""


class DeviceError(PostermError):
    """A peripheral failed; `device` names which one."""

    device = "device"

    def __init__(self, message: str, device: str | None = None) -> None:
        super().__init__(message)
        if device is not None:
            self.device = device


class CardReaderError(DeviceError):
    device = "card_reader"


class ChipError(DeviceError):
    """The chip card or its reader failed during a command; the message says which."""


class ChipRemovedError(ChipError):
    """The card was pulled out (or lost power) while the terminal was talking to it."""


class ChipMuteError(ChipError):
    """The card gave no usable ATR or stopped answering."""


class ChipReaderGoneError(ChipError):
    """The reader is unplugged or PC/SC (pcscd) is not there."""


class KeypadError(DeviceError):
    device = "keypad"


class PrinterError(DeviceError):
    """Printing failed: paper out, cover open, offline, timeout."""

    device = "printer"


class DisplayError(DeviceError):
    device = "display"


class GpioError(DeviceError):
    device = "gpio"


class GaugeError(DeviceError):
    """The battery gauge did not answer, or answered something no battery can show."""

    device = "battery"


class HostError(PostermError):
    """The acquirer host link failed."""


class HostUnreachableError(HostError):
    """Could not connect, TLS refused, or the connection dropped before we wrote."""


class HostNotTrustedError(HostUnreachableError):
    """The host's TLS identity was refused: wrong CA, wrong host name, old protocol.

    Nothing was written. A configuration error or an attack, never "busy"."""


class ProtocolError(HostError):
    """A frame or message that does not follow the host interface."""


class JournalError(PostermError):
    """The journal database cannot be opened or is damaged."""


class KeyStoreError(PostermError):
    """The store-and-forward key is missing, unreadable or does not match the stored data."""


class PinKeyError(KeyStoreError):
    """The DUKPT key file (online PINs) is missing, unreadable, damaged, or its transaction
    counter is exhausted: the terminal takes no online PIN until a key is loaded."""
