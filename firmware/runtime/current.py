"""The core's current state as the loop holds it, and the questions other parts ask of it
(is the terminal idle? is a sale in flight?), each answered in one place.

The loop (app.py) replaces `state` after every event; the parts built in graph.py hold
this object, never a callback into the loop.
"""

from __future__ import annotations

from firmware.core.state import Phase, State

# a sale has been sent or is waiting to be sent again: the link is in use for it
SENDING = (Phase.AUTHORIZING, Phase.BUSY_WAIT)
# ... or its receipt is printing: the sale is not over
IN_FLIGHT = (*SENDING, Phase.PRINTING)


class Current:
    def __init__(self) -> None:
        self.state: State | None = None  # None until the journal has been recovered

    @property
    def phase(self) -> Phase | None:
        return self.state.phase if self.state is not None else None

    def idle(self) -> bool:
        """At rest: tasks that wait for an idle moment (the daily close, the daily
        restart) may start."""
        return self.phase == Phase.IDLE

    def sale_active(self) -> bool:
        """A sale is being authorized (or waits to be sent again): uploads wait."""
        return self.phase in SENDING

    def in_flight(self) -> bool:
        """A sale not over yet: the path to the host is not switched under it."""
        return self.phase in IN_FLIGHT

    def result_pending(self) -> bool:
        """A sale in flight, or its result still on the glass for its normal time."""
        return self.in_flight() or self.phase == Phase.RESULT
