"""posterm-fleet: the fleet console (docs/fleet.md is its contract with the terminals).

One process subscribes to the broker (`ingest.py`), keeps what the terminals say in
SQLite (`store.py`), computes the alerts (`alerts.py`), signs and sends the commands
(`commands.py`) and serves a page (`web.py`, `webui/`); `cli.py` is the command line.
It imports nothing from the firmware: it speaks to terminals only through the channel.
"""

from __future__ import annotations

TOPIC_ROOT = "posterm/v1"
