"""A thread's name as the kernel knows it (`/proc/PID/task/TID/comm`).

A Python thread's name is Python's own; `top -H`, `ps -L` and `bench/idle.py`
see "python" unless the thread tells the kernel its name with prctl(2).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

PR_SET_NAME = 15  # prctl(2): the calling thread's name, at most 15 bytes
_libc: ctypes.CDLL | None = None


def set_os_name(name: str) -> None:
    """Name the calling thread for the kernel (15 bytes at most); never raises."""
    global _libc
    try:
        if _libc is None:
            # the process's own symbols, libc's among them: no library search (find_library
            # would start ldconfig, a process at every start)
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_NAME, name.encode("ascii", "replace")[:15], 0, 0, 0)
    except (OSError, AttributeError) as exc:  # not Linux: the name is a courtesy
        log.debug("thread name %r not set: %s", name, exc)
