"""Telling a watcher (hwsim's web page) that a model changed, without letting it harm the
model: a watcher that fails is logged, and the model goes on."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Watcher = Callable[[], None]


def notify(watcher: Watcher | None, model: str) -> None:
    """Call `watcher` (if any) after `model` changed; log, never raise, if it fails."""
    if watcher is None:
        return
    try:
        watcher()
    except Exception:
        log.exception("%s: change watcher failed", model)
