"""Proof of life between a worker and the master, with no system call per beat.

The master creates one ``Heartbeat`` per worker before forking: a shared
anonymous memory page holding the worker's last monotonic timestamp
(CLOCK_MONOTONIC is the same clock in every process). The worker's
``beat()`` writes it; the master's ``age()`` reads it and judges.
"""

from __future__ import annotations

import mmap
import struct
import time

_STAMP = struct.Struct("d")


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

    def close(self) -> None:
        self._page.close()
