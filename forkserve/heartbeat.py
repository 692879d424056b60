"""Proof of life between a worker and the master, with no system call per beat.

The master creates one ``Heartbeat`` per worker before forking: a shared
anonymous memory page holding the worker's last monotonic timestamp
(CLOCK_MONOTONIC is the same clock in every process) and a "booted" flag.
The worker's ``beat()`` writes the time; the master's ``age()`` reads it
and judges. ``mark_ready()`` tells the master the app is loaded, which a
reload waits for before it retires the old workers; ``mark_leaving()``
tells it to start a replacement before this worker has finished leaving.
``set_busy()`` says a request is running, for a pool that sizes itself.
"""

from __future__ import annotations

import mmap
import struct
import time

_STAMP = struct.Struct("d")
_READY_OFFSET = _STAMP.size
_LEAVING_OFFSET = _READY_OFFSET + 1
_BUSY_OFFSET = _LEAVING_OFFSET + 1


class Heartbeat:
    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED: survives fork
        self.beat()

    def beat(self) -> None:
        _STAMP.pack_into(self._page, 0, time.monotonic())

    def age(self) -> float:
        """Seconds since the worker last proved it was alive."""
        stamp: float = _STAMP.unpack_from(self._page, 0)[0]
        return time.monotonic() - stamp

    def mark_ready(self) -> None:
        self._page[_READY_OFFSET] = 1

    @property
    def ready(self) -> bool:
        return self._page[_READY_OFFSET] == 1

    def mark_leaving(self) -> None:
        self._page[_LEAVING_OFFSET] = 1

    @property
    def leaving(self) -> bool:
        """The worker decided to leave (max_requests, memory): replace it now."""
        return self._page[_LEAVING_OFFSET] == 1

    def set_busy(self, busy: bool) -> None:
        """A request is running (written only with --workers-max, which reads it)."""
        self._page[_BUSY_OFFSET] = busy

    @property
    def busy(self) -> bool:
        return self._page[_BUSY_OFFSET] == 1

    def close(self) -> None:
        self._page.close()
