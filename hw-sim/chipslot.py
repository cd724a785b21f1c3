"""The chip card slot: one test chip card at a time in vpcd's virtual reader.

`insert(profile)` makes the card (`hwsim.chipcard.make`) and connects it to vpcd
(`hwsim.vpcd.VpcdLink(card, port, host)`, started); `remove()` stops the link, which
closes the connection: vpcd then reports the reader empty. pcscd polls a virtual
reader every 400 ms, so a removal followed too quickly by an insertion could be missed
as a card change: the slot keeps at least `SETTLE` seconds between a removal and the
next insertion, waiting out the rest itself. The card and the link are made by
factories given at construction (the defaults import `hwsim.chipcard` and
`hwsim.vpcd` when first used), so a test can run the slot with fakes and no pcscd.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger("hwsim.chipslot")

SETTLE: Final = 1.0  # seconds between a removal and the next insertion
DEFAULT_VPCD_PORT: Final = 35963


class SlotError(ValueError):
    """A request the slot cannot carry out (occupied, empty, unknown profile)."""


def _make_card(profile: str) -> Any:
    from hwsim import chipcard

    return chipcard.make(profile)


def _make_link(card: Any, port: int, host: str) -> Any:
    from hwsim import vpcd

    return vpcd.VpcdLink(card, port, host)


def profiles() -> list[dict[str, str]]:
    """The chip card profiles, each {"name", "describe"} (hwsim.chipprofiles)."""
    from hwsim import chipprofiles

    out = []
    for name, profile in chipprofiles.PROFILES.items():
        describe = getattr(profile, "describe", None)
        if callable(describe):
            text = str(describe())
        elif callable(getattr(chipprofiles, "describe", None)):
            text = _module_describe(chipprofiles.describe, name)
        else:
            text = str(getattr(profile, "meant_for", ""))
        out.append({"name": name, "describe": text})
    return out


def _module_describe(describe: Callable[..., Any], name: str) -> str:
    """chipprofiles.describe(name), or describe() as a mapping of every profile."""
    try:
        return str(describe(name))
    except TypeError:
        every = describe()
        return str(every.get(name, "")) if isinstance(every, dict) else ""


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def _call(fn: Callable[[], Any]) -> None:
    """Run `fn`: a coroutine function on the loop, any other in a worker thread (it may
    block, as a thread's join does)."""
    if inspect.iscoroutinefunction(fn):
        await fn()
    else:
        await _maybe_await(await asyncio.to_thread(fn))


class ChipSlot:
    """The card slot of vpcd's virtual reader on `port` (of `host`)."""

    def __init__(self, port: int = DEFAULT_VPCD_PORT, host: str = "127.0.0.1", *,
                 make_card: Callable[[str], Any] = _make_card,
                 make_link: Callable[[Any, int, str], Any] = _make_link,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.port = port
        self.host = host
        self._make_card = make_card
        self._make_link = make_link
        self._clock = clock
        self._sleep = sleep
        self._link: Any = None
        self.profile: str | None = None
        self._removed_at: float | None = None
        self._lock = asyncio.Lock()
        self.on_change: Callable[[], None] | None = None

    @property
    def occupied(self) -> bool:
        return self._link is not None

    def state(self) -> dict[str, Any]:
        """What the status shows: the port, the card's profile (None: empty)."""
        if self._link is not None and getattr(self._link, "pulled", False) is True:
            self.card_left()  # the card raised CardPulled: its link ended by itself
        return {"port": self.port, "host": self.host, "card": self.profile}

    async def insert(self, profile: str) -> dict[str, Any]:
        """Make a card of `profile` and put it in the reader; SlotError when a card is
        already in or the profile is unknown. Waits out the settle time after a removal."""
        async with self._lock:
            self.state()  # a card pulled out by itself leaves the slot free
            if self._link is not None:
                raise SlotError(f"a card is already in the slot ({self.profile}); remove it "
                                "first")
            try:
                card = self._make_card(profile)
            except (KeyError, ValueError):
                raise SlotError(f"no chip card profile {profile!r}") from None
            if self._removed_at is not None:
                wait = self._removed_at + SETTLE - self._clock()
                if wait > 0:
                    log.info("chip slot: waiting %.2f s after the last removal", wait)
                    await self._sleep(wait)
            link = self._make_link(card, self.port, self.host)
            await _maybe_await(link.start())
            self._link, self.profile = link, profile
            log.info("chip card %s inserted (vpcd port %d)", profile, self.port)
        self._changed()
        return self.state()

    async def remove(self) -> dict[str, Any]:
        """Take the card out (the link stops: vpcd sees the card leave); SlotError when
        the slot is empty."""
        async with self._lock:
            if self._link is None:
                raise SlotError("the chip slot is empty")
            await self._drop()
        self._changed()
        return self.state()

    async def close(self) -> None:
        """Stop the link of a card still in (hwsim stopping)."""
        async with self._lock:
            if self._link is not None:
                await self._drop()

    async def _drop(self) -> None:
        link, profile = self._link, self.profile
        self._link = self.profile = None
        try:
            await _call(link.stop)  # vpcd.VpcdLink.stop joins its thread: off the loop
        finally:
            self._removed_at = self._clock()
            log.info("chip card %s removed", profile)

    def card_left(self) -> None:
        """The card left the reader by itself (CardPulled: its link ended)."""
        if self._link is not None:
            log.info("chip card %s left the reader by itself", self.profile)
            self._link = self.profile = None
            self._removed_at = self._clock()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a watcher's bug must not break the slot
                log.exception("chip slot watcher failed")
