"""The README's words and timings for two cases where they once disagreed with the
terminal, driven through hwsim as a merchant would:

- a close whose 960000 gets no answer: CLOSE NOT DONE / NO ANSWER / TRY AGAIN LATER,
  then BATCH NOT CLOSED / NO ANSWER on the idle screen, and the close asked again
  every minute, not as soon as the result screen has gone (the minute itself is
  asserted exactly on virtual time in tests/test_close_retry.py; here the host's log
  of request times shows that no 0500 follows within seconds);
- a refund the bank cannot take: NOT COMPLETED / HOST OFFLINE when the top row already
  said OFFLINE (nothing is sent), NOT COMPLETED / HOST UNAVAILABLE when the bank was
  not known to be down and stayed unreachable through the refund's tries; either way
  REFUND NEEDS HOST, then NOT CREDITED.
"""

from __future__ import annotations

import pathlib
import time

from tests.rig import Rig, wait_until
from tests.test_e2e_batch import OPEN, _approved_sale, _close_from_menu
from tests.test_e2e_refund_void import PIN_HASH, refund
from tests.test_e2e_refund_void_faults import result


def _rows(rig: Rig) -> list[str]:
    return [r.rstrip() for r in rig.hw.display()]


def test_a_960000_without_an_answer_says_so_and_is_not_asked_again_at_once(
        tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides=OPEN) as rig:
        rig.start()
        _approved_sale(rig, "1000")
        rig.hw.host_out_of_balance(1)  # the 920000: 95, so the batch is uploaded
        rig.hw.host_fault("delay", mti="0500", seconds=0.0)  # taken by the 920000
        rig.hw.host_fault("swallow", count=0, mti="0500")  # every 960000: no answer
        _close_from_menu(rig)
        rows = [r.rstrip() for r in rig.hw.wait_display("CLOSE NOT DONE", timeout=20)]
        assert rows[:3] == ["CLOSE NOT DONE", "NO ANSWER", "TRY AGAIN LATER"], rows
        sent = [m for m in rig.hw.messages() if m["mti"] == "0500"]
        assert [m["fields"]["3"] for m in sent] == ["920000", "960000"]
        rig.hw.press("OK")
        rows = [r.rstrip() for r in rig.wait_idle()]
        assert rows[1:3] == ["BATCH NOT CLOSED", "NO ANSWER"], rows
        idle_at = time.time()
        time.sleep(5.0)  # the old terminal asked again about a second after this
        later = [m for m in rig.hw.messages() if m["mti"] == "0500" and m["time"] > idle_at]
        assert later == [], later
        assert "CLOSING" not in " ".join(_rows(rig))


def test_a_refund_with_the_bank_known_down_says_host_offline(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"operator": {"pin_hash": PIN_HASH}}) as rig:
        rig.start()
        rig.wait_online()
        rig.hw.host_down()
        wait_until(lambda: "OFFLINE" in rig.hw.display()[0], 5.0, "top row not OFFLINE")
        before = len(rig.hw.messages())
        refund(rig, "900")
        rows = result(rig)
        assert rows[:3] == ["NOT COMPLETED", "HOST OFFLINE", "REFUND NEEDS HOST"], rows
        rig.hw.wait_display("NOT CREDITED")
        assert len(rig.hw.messages()) == before  # nothing was sent


def test_a_refund_with_the_bank_not_known_down_says_host_unavailable(
        tmp_path: pathlib.Path) -> None:
    # probes far apart and a high down_after: the link stays BANK SLOW, not OFFLINE,
    # through the refund's three tries
    overrides = {"operator": {"pin_hash": PIN_HASH},
                 "offline": {"down_after": 10, "probe_base": 60.0, "probe_cap": 120.0}}
    with Rig(tmp_path, overrides=overrides) as rig:
        rig.start()
        rig.wait_online()
        rig.hw.host_fault("refuse", count=0, mti="*")  # every new connection reset
        rig.hw.host_drop()  # and the one open dropped: the bank is gone, not yet known
        wait_until(lambda: "BANK SLOW" in rig.hw.display()[0], 3.0, "top row not BANK SLOW")
        refund(rig, "900")
        rows = result(rig)
        assert rows[:3] == ["NOT COMPLETED", "HOST UNAVAILABLE", "REFUND NEEDS HOST"], rows
        rig.hw.wait_display("NOT CREDITED")
        assert [m for m in rig.hw.messages() if m["mti"] == "0200"] == []
