"""A host connection lost at idle (host-interface.md section 1: the terminal reconnects on
loss at once, idle or not, so the link state it shows is never older than a connection
attempt), driven through hwsim as a person at the terminal would see it.

The echo test's interval stays at its default (60 s) here: the top row may change only
because the terminal reconnected at once, never because an echo test came round.
"""

from __future__ import annotations

import pathlib
import time

from tests.rig import Rig, wait_until

FLAGS = ("BANK SLOW", "OFFLINE")  # the top row's link flags (README "Screens")


def _top(rig: Rig) -> str:
    return rig.hw.display()[0]


def _sign_ons(rig: Rig) -> int:
    return sum(1 for m in rig.hw.messages() if m["mti"] == "0800")


def test_a_host_gone_at_idle_shows_on_the_glass_at_once_and_online_when_back(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        rig.wait_online()
        rig.wait_led(True)
        rig.hw.host_down()  # its connections closed, new ones refused
        # the connection attempt made at once is refused: BANK SLOW, then OFFLINE after
        # `down_after` (3) failures on the probes' backoff; never 60 s for an echo test
        top = wait_until(lambda: next((t for t in [_top(rig)] if any(f in t for f in FLAGS)),
                                      ""), 3.0, lambda: f"top row still {_top(rig)!r}")
        assert top.startswith("POSTERM"), top
        wait_until(lambda: "OFFLINE" in _top(rig), 5.0, lambda: f"top row {_top(rig)!r}")
        rig.wait_led(False)
        log = rig.log()
        assert "host connection lost" in log and "reconnecting to the host at once" in log
        assert "host link UP -> DEGRADED" in log and "host link DEGRADED -> DOWN" in log
        rig.hw.host_up()  # the next probe signs on again
        rig.wait_online(timeout=5.0)
        rig.wait_led(True)
        assert not any(f in _top(rig) for f in FLAGS)
        rig.sale("1250")
        rows = rig.hw.wait_display("APPROVED")
        assert rows[0].strip() == "APPROVED", rows


def test_a_drop_with_the_host_still_accepting_reconnects_with_nothing_on_the_glass(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        rig.wait_online()
        before = _sign_ons(rig)
        assert rig.hw.host_drop() == 1
        seen: list[str] = []

        def signed_on_again() -> bool:
            seen.append(_top(rig))
            return _sign_ons(rig) > before
        wait_until(signed_on_again, 3.0, "no new sign-on after the drop")
        deadline = time.monotonic() + 0.5  # and the glass stays as it was after it
        while time.monotonic() < deadline:
            seen.append(_top(rig))
            time.sleep(0.05)
        assert not any(f in top for top in seen for f in FLAGS), seen
        log = rig.log()
        assert "host connection lost" in log and "reconnecting to the host at once" in log
        assert "host link UP ->" not in log  # the link never left UP: nothing to show
        assert rig.hw.gpio_state()["led_online"] == 1
        rig.sale("2000")
        rows = rig.hw.wait_display("APPROVED")
        assert rows[0].strip() == "APPROVED", rows
