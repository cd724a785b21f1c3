"""Worker threads with names the operating system shows.

posterm's few threads each serve one device that blocks (the printer, the
display, the pins, the battery gauge) or the event loop's default executor. A
Python thread's name is Python's own; the kernel's (`/proc/PID/task/TID/comm`,
what `top -H`, `ps -L` and `bench/idle.py` show) stays "python" unless the
thread sets it. `pool(name)` makes a one-thread executor whose thread does, so
an operator can tell which device a busy or waking thread belongs to.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

PR_SET_NAME = 15  # prctl(2): the calling thread's name, at most 15 bytes
_libc: ctypes.CDLL | None = None


def set_os_name(name: str) -> None:
    """Name the calling thread for the kernel (15 bytes at most); never raises."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.prctl(PR_SET_NAME, name.encode("ascii", "replace")[:15], 0, 0, 0)
    except (OSError, AttributeError) as exc:  # not Linux: the name is a courtesy
        log.debug("thread name %r not set: %s", name, exc)


def pool(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """An executor whose threads the kernel knows as `name`."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=set_os_name,
                              initargs=(name,))
