"""A stateful model test of the core: random days at the counter against a model host.

Hypothesis (`RuleBasedStateMachine`) drives the terminal through random sequences of
keys (digits, OK, CLEAR, CANCEL, F1-F4, and whole sales and operator functions keyed at
once), card swipes (good cards, a card failing the Luhn check, a bad read), the host's
answers to a sale in flight (approve, decline, busy 91/96, silence until the response
timeout, a late answer after that timeout, a garbled answer, an answer that does not
match the request, a connection lost after the send, each with the host having charged
or not), the host going down and up, the link monitor's verdict (UP, DEGRADED, DOWN),
timers firing (the current one and a stale one), the printer failing, the daily close,
the queues drained, and restarts at any point (with the host having charged the sale in
flight or not). After every step the money invariant is checked (`money_problems`), and
whenever the queues are empty the project's own checker (`tests.invariants.check` and
`check_batches`) as well:

- what the terminal last showed for each transaction (its result screen, the restart's
  notice about it, VOIDED, or the slip of an offline sale the host refused) is what the
  model host did: charged or credited exactly once when it said APPROVED, nothing when
  it said anything else, except while the journal still holds the message that settles
  the difference (a pending reversal or void, an advice not yet answered);
- nothing is charged or credited twice, nothing the terminal never recorded moves, and
  amounts and kinds agree;
- a batch the terminal closed has the totals the host's ledger has for it.

What is real and what is modelled (tests/model_runtime.py, tests/model_host.py):

- real: the core (`machine.initial`, `machine.step`); the journal (SQLite on a temporary
  directory, /dev/shm when there is one); `decisions.Decisions` (CloseSale, DecideOffline,
  FindForVoid, Void); `authorizer.Authorizer` (each attempt in the order of durable writes,
  with its handling of busy, lost, garbled and mismatching answers); `forwarder.Forwarder`
  (reversals, voids, advices, run as its own task); `batch.CloseEngine` (0500, upload);
  `recovery.recover` and `recovery.InHand` (a restart is a new Journal on the same file,
  recovery, and `machine.initial` with the journal's last sale, notice and recent approvals,
  as app.run does); `outcomes.Announcer` (the "shown" mark recovery reads).
- modelled: the host (ModelHost: a ledger written from host-interface.md, not from the
  firmware, so that it can disagree with it); the host link (ModelLink: same methods as
  HostLink; what goes wrong on the wire arrives as the exceptions HostLink raises, since
  the framing and matching are covered by the host-link tests); the printer (each print
  ends at once, OK or PAPER OUT, and the journal hears what the print spooler tells
  it: printed, or kept in the print queue until the paper is back); the display; the PIN
  check (PIN 1234, close protected); the clock (a virtual one, one second per step); the
  link monitor (LinkChanged comes from a rule, not from a breaker, so that every
  combination of verdict and reality is tried); app.py's loop itself (the same order:
  pan hash, step, effects in order, InHand, forwarder kick), because app.App needs
  devices. The forwarder's repeat backoff is zero, so that its real-time waits never
  stand between a step and its outcome; the queue's own timing is covered by
  tests/test_forwarder_pipeline.py. A running batch close is given the real 0.1 s its
  queue poll sleeps, so that it sees the queue drained within the same step.

The runtime reads the core's State only through `model_runtime.phase`, and the
runtime pieces that read it themselves (InHand, Announcer).

The budget is bounded for CI (about a minute on one core, derandomized, no example
database); bench/model.py runs the same machine for as many steps as asked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from firmware.config import HostConfig
from firmware.core import iso
from firmware.core.card import CardData
from firmware.core.events import (
    CardReadFailed, CardSwiped, CloseDue, KeyPressed, LinkChanged,
)
from firmware.core.model import CoreConfig
from firmware.errors import ProtocolError
from firmware.runtime.hostlink import ConnectionLost, ResponseTimeout
from tests.invariants import check, check_batches, pending
from tests.model_host import ModelHost
from tests.model_runtime import PIN, Runtime, batch_problems, money_problems, phase

TID = "TERM0001"
CFG = CoreConfig(identity=iso.Identity(TID, "MERCHANT0000001", "978"),
                 merchant_name="MODEL SHOP", address=(), currency_code="EUR",
                 max_amount=500000, protect=frozenset({"close"}), pin_set=True)
HOST_CFG = HostConfig(host="model", port=1, tls=False, response_timeout=30.0,
                      repeat_backoff_base=0.0, repeat_backoff_cap=0.0, advice_window=4)


def card(pan: str) -> CardData:
    return CardData(pan=pan, expiry="3012", service_code="101", track2=f"{pan}=3012101")


GOOD_CARDS = [card("4761739001010010"), card("5413330089010012")]
BAD_CARD = card("4761739001010011")  # fails the Luhn check
KEYS = [*"0123456789", "OK", "CLEAR", "CANCEL", "F1", "F2", "F3", "F4"]
# small amounts (offline floor 50.00 lets some through offline) and larger ones
AMOUNTS = st.sampled_from([100, 1250, 4999, 7500, 20000])
KINDS = st.sampled_from(["purchase", "purchase", "purchase", "refund"])
SWIPES = st.sampled_from(["0", "0", "1", "1", "luhn", "unread", "none"])
HOST_OUTCOMES = st.sampled_from([
    "00", "00", "00", "05", "51", "54", "91", "96", "timeout silent", "timeout late",
    "lost sent", "lost charged", "garbled sent", "garbled charged", "mismatch 4",
    "mismatch 11", "mismatch t"])
WIRE_FAULTS = {"timeout": lambda: ResponseTimeout("no answer within 30 s"),
               "lost": lambda: ConnectionLost("connection reset"),
               "garbled": lambda: ProtocolError("undecodable message")}
SHM = Path("/dev/shm")


class CoreModel(RuleBasedStateMachine):
    steps = 0  # rules run, over every instance (bench/model.py reports it)

    def __init__(self) -> None:
        super().__init__()
        where = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="posterm-model-", dir=where))
        self.host = ModelHost()
        self.rt = Runtime(self.dir, self.host, CFG, HOST_CFG)

    def teardown(self) -> None:
        try:
            self.rt.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _count(self) -> None:
        CoreModel.steps += 1
        self.rt.tick()

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.rt.feed(KeyPressed(key))

    # -- a person at the keypad and the card reader ------------------------------------
    @initialize()
    def opening(self) -> None:
        self._count()

    def _sale(self, kind: str, amount: int, swipe: str) -> None:
        self._count()
        self.keys(*(["F1", "5"] if kind == "refund" else []), *str(amount), "OK")
        if swipe in ("0", "1"):
            self.rt.feed(CardSwiped(GOOD_CARDS[int(swipe)]))
        elif swipe == "luhn":
            self.rt.feed(CardSwiped(BAD_CARD))
        elif swipe == "unread":
            self.rt.feed(CardReadFailed("TRACK 2 NOT READ"))

    @rule(kind=KINDS, amount=AMOUNTS, swipe=SWIPES)
    def sale(self, kind: str, amount: int, swipe: str) -> None:
        """An amount keyed in (a refund through the menu), OK, and a card (or not)."""
        self._sale(kind, amount, swipe)

    @rule(kind=KINDS, amount=AMOUNTS, swipe=SWIPES)
    def another_sale(self, kind: str, amount: int, swipe: str) -> None:
        self._sale(kind, amount, swipe)

    @rule(kind=KINDS, amount=AMOUNTS, swipe=SWIPES)
    def yet_another_sale(self, kind: str, amount: int, swipe: str) -> None:
        self._sale(kind, amount, swipe)

    @rule(amount=st.sampled_from([100, 1250, 4999, 7500]), which=st.sampled_from("01"),
          back=st.booleans())
    def sale_with_the_link_down(self, amount: int, which: str, back: bool) -> None:
        """The link monitor says DOWN, a sale (the offline rules decide it), and the link
        perhaps UP again (the advice goes when the queue is drained)."""
        self._count()
        self.rt.feed(LinkChanged("DOWN"))
        self._sale("purchase", amount, which)
        if back:
            self.rt.feed(LinkChanged("UP"))

    @rule(key=st.sampled_from(KEYS))
    def press(self, key: str) -> None:
        self._count()
        self.keys(key)

    @rule(swipe=SWIPES)
    def swipe(self, swipe: str) -> None:
        self._count()
        if swipe in ("0", "1"):
            self.rt.feed(CardSwiped(GOOD_CARDS[int(swipe)]))
        elif swipe == "luhn":
            self.rt.feed(CardSwiped(BAD_CARD))
        else:
            self.rt.feed(CardReadFailed("TRACK 2 NOT READ"))

    @rule(what=st.sampled_from(["void", "void", "void last", "close", "close wrong pin",
                                "x report"]),
          invoice=st.sampled_from(["1", "2", "3"]), confirm=st.booleans())
    def operator(self, what: str, invoice: str, confirm: bool) -> None:
        """The merchant's functions, keyed from the menu: void (by invoice or the last),
        close the batch (PIN protected), X report."""
        self._count()
        if what.startswith("void"):
            self.keys("F1", "6", *("" if what == "void last" else invoice), "OK")
            if confirm:
                self.keys("OK")
        elif what.startswith("close"):
            self.keys("F1", "8", *(PIN if what == "close" else "9999"), "OK")
            if confirm:
                self.keys("OK")
        else:
            self.keys("F1", "7")

    # -- the host and the link --------------------------------------------------------
    def _in_flight(self) -> bool:
        return bool(self.rt.link.inflight)

    def _host(self, what: str) -> None:
        self._count()
        link = self.rt.link
        if what in ("00", "05", "51", "54", "91", "96"):
            link.answer(what)
        elif what.startswith("mismatch"):
            field = what.split()[1]

            def tamper(answer: dict[str, str]) -> None:
                answer[field] = {"4": "000000000001", "11": "999999", "t": "0230"}[field]

            link.answer("00", tamper=tamper)
        else:  # "timeout late": the host charged, its answer came after the timeout
            fault, processed = what.split()
            link.fail(WIRE_FAULTS[fault](), processed=processed in ("late", "charged"))
        self.rt.settle()

    @precondition(_in_flight)
    @rule(what=HOST_OUTCOMES)
    def host_decides(self, what: str) -> None:
        """What the host does with the sale's request in flight."""
        self._host(what)

    @precondition(_in_flight)
    @rule(what=HOST_OUTCOMES)
    def host_decides_again(self, what: str) -> None:
        self._host(what)

    @precondition(_in_flight)
    @rule(what=HOST_OUTCOMES)
    def host_decides_once_more(self, what: str) -> None:
        self._host(what)

    @precondition(_in_flight)
    @rule(times=st.integers(1, 4), code=st.sampled_from(["91", "96"]))
    def host_stays_busy(self, times: int, code: str) -> None:
        """Busy answers, each followed by the retry timer, until the retries are spent
        and the offline rules decide (or the host answers the last retry later)."""
        self._count()
        for _ in range(times):
            if not self.rt.link.inflight:
                break
            self.rt.link.answer(code)
            self.rt.settle()
            self.rt.fire_timer()

    @rule(what=st.sampled_from(["host up", "host up", "host down", "link UP", "link UP",
                                "link DEGRADED", "link DOWN", "advices accepted",
                                "advices refused", "printer ok", "printer ok",
                                "paper out"]))
    def world(self, what: str) -> None:
        """The host reachable or not, the link monitor's verdict (independent of it), the
        host refusing advices, the printer."""
        self._count()
        if what.startswith("host"):
            self.host.up = what == "host up"
            self.rt.forwarder.kick()
            self.rt.settle()
        elif what.startswith("link"):
            self.rt.feed(LinkChanged(what.split()[1]))
        elif what.startswith("advices"):
            self.host.refuse_advices = what == "advices refused"
        else:
            self.rt.printer_back(what == "printer ok")

    # -- time, the schedule, the queues, restarts ---------------------------------------
    @rule(stale=st.booleans())
    def timer_fires(self, stale: bool) -> None:
        self._count()
        self.rt.fire_timer(stale)

    @rule()
    def close_due(self) -> None:
        self._count()
        self.rt.feed(CloseDue(resumed=self.rt.journal.close_in_progress() is not None))

    @rule()
    def drain(self) -> None:
        self._count()
        self.rt.drain()

    @rule(processed=st.booleans())
    def restart(self, processed: bool) -> None:
        """The terminal stops (power cut, kill) wherever it is; `processed`: the host had
        approved the request in flight, if any."""
        self._count()
        self.rt.crash(processed=processed)

    # -- the invariant ------------------------------------------------------------------
    @invariant()
    def money(self) -> None:
        problems = money_problems(self.rt) + batch_problems(self.rt) + self.rt.errors
        if not pending(self.rt.journal.path) and phase(self.rt.state) not in (
                "AUTHORIZING", "BUSY_WAIT"):
            problems += check(self.rt.journal.path, self.host.ledger(), TID)
            problems += check_batches(self.rt.journal.path, self.host.batches(), TID)
        assert not problems, "\n".join(problems) + "\n--- last screens:\n" + "\n".join(
            " | ".join(rows) for rows in self.rt.screens[-8:])


CI = settings(max_examples=300, stateful_step_count=50, deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
TestCoreModel = CoreModel.TestCase
TestCoreModel.settings = CI

