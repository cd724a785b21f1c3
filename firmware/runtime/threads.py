"""Worker threads with names the operating system shows.

posterm's few threads each serve one device that blocks (the printer, the
display, the pins, the battery gauge) or the event loop's default executor.
`pool(name)` makes an executor whose threads tell the kernel their name
(drivers/osthread.py), so an operator can tell which device a busy or waking
thread belongs to (`top -H`, `bench/idle.py`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from drivers.osthread import set_os_name

__all__ = ["pool", "set_os_name"]


def pool(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """An executor whose threads the kernel knows as `name`."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=set_os_name,
                              initargs=(name,))
