"""MQTT 5's small words, for the terminal's channel and the fleet console alike: the
properties of one packet, and a broker's reason in its own words. Imports paho only
(the console shares it: tests/test_architecture.py's SHARED_WITH_FLEET)."""

from __future__ import annotations

from typing import Any

from paho.mqtt.properties import Properties


def properties(packet: int, **values: int) -> Properties:
    """MQTT 5 properties of one packet (paho leaves them out of a 3.1.1 packet)."""
    props = Properties(packet)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def why(reason: Any, props: Any) -> str:
    """A reason code in the broker's words, with its reason string when it sent one."""
    more = getattr(props, "ReasonString", None)
    return f"{reason} ({more})" if more else str(reason)
