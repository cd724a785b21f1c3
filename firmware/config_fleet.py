"""[fleet]: the management channel to the fleet's MQTT brokers (docs/fleet.md).

No brokers (the default): no channel at all. With brokers, the runtime's fleet part
(firmware/runtime/fleet.py) connects to them in turn over TLS with the terminal's client
certificate, in MQTT 5 where the broker has it (`mqtt`: "auto", "5" or "3.1.1", checked
here, once); `check_fleet` loads the files now, so a bad one is named by its key.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.config_schema import boolean, custom, integer, number, path, text
from firmware.config_values import Table, hostname, why_unreadable

BROKERS_MAX = 8
HANDOFFS = ("process", "systemd")
HANDOFF_WHAT = 'must be "process" or "systemd"'
BROKERS_WHAT = (f'must be a list of at most {BROKERS_MAX} "host:port" strings (a host name or '
                'IPv4 address, a port 1-65535), e.g. ["mqtt1.example.net:8883"]')

MQTT_VERSIONS = ("auto", "5", "3.1.1")
MQTT_WHAT = 'must be "auto", "5" or "3.1.1"'


def parse_broker(text: str) -> tuple[str, int] | None:
    """'mqtt.example.net:8883' -> ('mqtt.example.net', 8883); '[::1]:8883' for IPv6."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([^:\[\]]+):([0-9]{1,5})", text)
    if not m:
        return None
    host, port = (m[1], int(m[2])) if m[1] else (m[3], int(m[4]))
    return (host, port) if hostname(host) and 1 <= port <= 65535 else None


def _brokers(t: Table, key: str, value: Any) -> Any:
    if not isinstance(value, list) or len(value) > BROKERS_MAX:
        raise t.error(key, BROKERS_WHAT, value)
    for b in value:
        if not isinstance(b, str) or parse_broker(b) is None:
            raise t.error(key, BROKERS_WHAT + "; one entry is not", b)
    return value


@dataclass(frozen=True, kw_only=True)
class FleetTable:
    """[fleet]: the brokers, the terminal's TLS identity, the channel's rhythm and bounds,
    and the key the console's dangerous commands are signed with."""

    brokers: tuple[tuple[str, int], ...] = custom(
        [], read=_brokers, what=BROKERS_WHAT,
        convert=lambda v: tuple(b for b in (parse_broker(x) for x in v) if b is not None),
        help='MQTT brokers tried in turn, "host:port"; [] for no fleet channel')
    mqtt: str = text("auto", check=lambda v: v in MQTT_VERSIONS, what=MQTT_WHAT,
                     help='MQTT version: "auto" (5, or 3.1.1 with a broker that refuses 5, '
                     'remembered until the firmware restarts), "5" or "3.1.1"')
    tls: bool = boolean(True, help="TLS 1.2+ with the client certificate; `false` only for "
                        "a test broker")
    ca_file: str = path("", optional=True, help="CA bundle (PEM) the brokers' certificates "
                        "are verified against; required with brokers and TLS")
    client_cert: str = path("", optional=True, help="the terminal's client certificate (PEM); "
                            "its CN is the terminal id")
    client_key: str = path("", optional=True, help="its private key (PEM)")
    keepalive: int = integer(30, lo=5, hi=600, help="MQTT keepalive, seconds")
    telemetry_interval: float = number(300, lo=5, hi=86400,
                                       help="telemetry at least this often (and on change)")
    # the bounds meet: the cap is never below the base
    reconnect_base: float = number(5, lo=0.1, hi=10, help="first pause before the brokers "
                                   "are tried again (full jitter, plus the terminal's offset "
                                   "over 4 times this)")
    reconnect_cap: float = number(120, lo=10, hi=3600, help="longest such pause")
    outbox_max: int = integer(1000, lo=10, hi=100000, help="events kept unsent at most; the "
                              "oldest are dropped (and counted) beyond")
    command_key: str = path("", optional=True, help="Ed25519 public key (PEM) of the fleet: "
                            "restart, params and update must be signed with it; \"\": refused")
    log_file: str = path("", optional=True, help="the file `logs` reads its lines from; \"\": "
                         "the lines this run logged")
    update_handoff: str = text(
        "process", check=lambda v: v in HANDOFFS, what=HANDOFF_WHAT,
        help='how `update` installs a bundle: "process" runs `posterm update` itself (a '
             'terminal run by hand); "systemd" asks posterm-fleet-update.path, the '
             "package's root-side service (the service user cannot install)")
    update_handoff_timeout: float = number(
        60, lo=5, hi=3600, help='with "systemd": posterm-fleet-update must take the '
                                "request by then, else the update fails (result 8)")

    @property
    def enabled(self) -> bool:
        return bool(self.brokers)


def check_fleet(t: Table, fleet: FleetTable, _: dict[str, Any]) -> None:
    if fleet.client_key and not fleet.client_cert:
        raise t.error("client_key", "given without client_cert")
    if fleet.command_key:
        # cryptography's key loading only where a fleet key is configured: not at every start
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        why = why_unreadable(Path(fleet.command_key))
        if why:
            raise t.error("command_key", why, fleet.command_key)
        try:
            public = serialization.load_pem_public_key(Path(fleet.command_key).read_bytes())
        except (OSError, ValueError) as exc:
            raise t.error("command_key", f"is not a public key in PEM format ({exc})",
                          fleet.command_key) from None
        if not isinstance(public, Ed25519PublicKey):
            raise t.error("command_key", "is not an Ed25519 public key", fleet.command_key)
    if not fleet.enabled or not fleet.tls:
        return
    if not fleet.ca_file:
        raise t.fail("ca_file", "required with brokers and tls = true (the brokers' "
                                "certificates are verified against it)")
    for key in ("ca_file", "client_cert", "client_key"):
        value = getattr(fleet, key)
        why = why_unreadable(Path(value)) if value else ""
        if why:
            raise t.error(key, why, value)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=fleet.ca_file)
        if fleet.client_cert:
            ctx.load_cert_chain(fleet.client_cert, fleet.client_key or None,
                                password=lambda: b"")
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise t.error("client_cert" if fleet.client_cert else "ca_file",
                      f"cannot be loaded ({' '.join(str(exc).split())[:80]})",
                      fleet.client_cert or fleet.ca_file) from None
