"""Which path a new host connection takes, and when it goes back to the primary.

The end-to-end failover through hwsim's modem is in test_e2e_modem.py; this is the
bookkeeping alone, with a clock the test moves.
"""

from __future__ import annotations

from typing import Any

from firmware.config import ModemConfig
from firmware.core.events import Event, PathChanged
from firmware.runtime.paths import MODEM, PRIMARY, Paths, describe


class Status:
    powered, sim, registration, rssi, bars, error_display = True, "READY", "REGISTERED", 20, 3, ""


class FakeModem:
    status = Status()


def make(clock: list[float]) -> tuple[Paths, list[Event]]:
    events: list[Event] = []
    paths = Paths(ModemConfig(backend="serial", port="/dev/null", failback_after=30.0),
                  FakeModem(), emit=events.append, clock=lambda: clock[0])  # type: ignore[arg-type]
    return paths, events


def test_primary_first_until_it_fails_then_the_modem_first() -> None:
    clock = [100.0]
    paths, events = make(clock)
    assert paths.order() == [PRIMARY]  # no data session on the modem yet
    paths.modem_ready = True
    assert paths.order() == [PRIMARY, MODEM]
    paths.failed(PRIMARY, "connection refused")
    assert paths.order() == [MODEM, PRIMARY]
    paths.connected(MODEM)
    assert events[-1] == PathChanged("4G", 3, "4G REGISTERED CSQ 20")


def test_failback_needs_the_primary_healthy_for_the_whole_delay() -> None:
    clock = [0.0]
    paths, _ = make(clock)
    paths.modem_ready = True
    paths.failed(PRIMARY, "refused")
    paths.connected(MODEM)
    paths.probed(True)
    clock[0] = 29.0
    assert not paths.failback_due()
    paths.probed(False)  # one bad probe starts the wait again
    clock[0] = 40.0
    paths.probed(True)
    clock[0] = 69.0
    assert not paths.failback_due()
    clock[0] = 70.0
    assert paths.failback_due()
    paths.primary_failed_at = None
    paths.connected(PRIMARY)
    assert paths.order() == [PRIMARY, MODEM] and paths.switches == 1


def test_status_line_fits_the_display() -> None:
    class Bad(Status):
        error_display = "REGISTRATION DENIED BY THE NETWORK"

    assert describe(Bad()) == "4G REGISTRATION DENI"  # cut, never longer than the row

    class Denied(Status):
        error_display = "REGISTRATION DENIED"

    assert describe(Denied()) == "4G REG DENIED"
    assert describe(None) == "4G STARTING"
    assert all(len(describe(s)) <= 20 for s in (Status(), Bad()))


def test_no_modem_means_the_primary_only() -> None:
    paths = Paths(ModemConfig(), None)
    paths.failed(PRIMARY, "refused")
    assert paths.order() == [PRIMARY]
    events: list[Any] = []
    paths.emit = events.append
    paths.report()
    assert events == []
