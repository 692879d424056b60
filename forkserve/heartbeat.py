"""Proof of life between a worker and the master, with no system call per beat.

The master maps one shared anonymous region for the whole pool
(``Heartbeats``) before it forks anything, and gives each worker a slot
of it: the worker's last monotonic timestamp (CLOCK_MONOTONIC is the same
clock in every process) and three flags. Because the region exists before
any fork, a worker forked by a template process (``--preload``) shares its
slot with the master as well as one the master forked itself. The
worker's ``beat()`` writes the time; the master's ``age()`` reads it and
judges. ``mark_ready()`` tells the master the app is loaded, which a
reload waits for before it retires the old workers; ``mark_leaving()``
tells it to start a replacement before this worker has finished leaving.
``set_busy()`` says a request is running, for a pool that sizes itself.

Each slot also holds what the worker is doing and has done, for the
master to report (``forkserve ctl status``, a timeout's log line, the
metrics): the request it is serving now (``begin_request()``, when it
started and its first line) and a block of counters that ``metrics.py``
lays out. A reader in the master may see a request line half rewritten;
it is for people, so that is harmless, and no lock is worth its cost here.

One byte after the last slot belongs to the whole pool: ``stopping``,
set by the master once when a graceful stop begins (``begin_stopping()``)
and read by every worker's ``--health-path`` answer (503 from then on).
Pool-wide rather than a flag in each slot, because a per-slot flag would
have to be written into every live slot and again into each slot claimed
later (``claim()`` clears a slot, and workers still boot during
--shutdown-delay); one byte is set once and every worker, whoever forked
it (master or template), sees it. A master started by SIGUSR2 maps a
region of its own, so the old master's stop never turns its successor's
readiness off.
"""

from __future__ import annotations

import functools
import mmap
import struct
import time

_READY_OFFSET = 8  # after the stamp, a double
_LEAVING_OFFSET = _READY_OFFSET + 1
_BUSY_OFFSET = _LEAVING_OFFSET + 1
_REQUEST_STARTED = 16  # a double: monotonic time the current request started, 0 between requests
_REQUEST_TEXT = 24
REQUEST_TEXT_SIZE = 232  # "METHOD target client", cut to fit (requests never hold a NUL)
_REQUEST = struct.Struct(f"=d{REQUEST_TEXT_SIZE}s")
_STAMP = struct.Struct("=d")
COUNTERS_OFFSET = 256
COUNTERS = 96  # unsigned 64-bit counters, laid out by metrics.py
SLOT_SIZE = COUNTERS_OFFSET + 8 * COUNTERS  # 1 KiB: pages are only touched for slots in use
SLOTS = 1024  # workers alive at once, old and new generations together
_STOPPING = SLOT_SIZE * SLOTS  # the pool's byte, after the last slot


class Heartbeats:
    """The pool's shared region, one slot per live worker (the master hands them out)."""

    def __init__(self) -> None:
        self._region = mmap.mmap(-1, SLOT_SIZE * SLOTS + 8)  # MAP_SHARED: survives fork
        self._free = list(range(SLOTS - 1, -1, -1))
        self._stopping = memoryview(self._region)[_STOPPING : _STOPPING + 1]

    def claim(self) -> Heartbeat:
        """A fresh slot for a new worker."""
        slot = self._free.pop()
        heartbeat = self.at(slot)
        self._region[slot * SLOT_SIZE : (slot + 1) * SLOT_SIZE] = bytes(SLOT_SIZE)
        heartbeat.beat()
        return heartbeat

    def at(self, slot: int) -> Heartbeat:
        """The heartbeat in ``slot`` (a template process builds its workers' with this)."""
        return Heartbeat(
            memoryview(self._region)[slot * SLOT_SIZE : (slot + 1) * SLOT_SIZE], slot, self._stopping
        )

    def release(self, heartbeat: Heartbeat) -> None:
        """The worker has exited: its slot is free again."""
        self._free.append(heartbeat.slot)

    def begin_stopping(self) -> None:
        """A graceful stop has begun: every worker's health path answers 503 from now on."""
        self._stopping[0] = 1

    @property
    def stopping(self) -> bool:
        return self._stopping[0] == 1


class Heartbeat:
    """One worker's slot."""

    def __init__(self, page: memoryview, slot: int, stopping: memoryview) -> None:
        self._page = page
        self._stopping = stopping  # the pool's byte (see the module docstring)
        # One aligned 8-byte store and load (slots are 16-byte aligned). struct's
        # pack_into clears the bytes before writing them, and a master reading in
        # that moment saw a stamp of 0: a healthy worker "timed out" and was aborted.
        self._stamp = page[:8].cast("d")
        self._started = page[_REQUEST_STARTED : _REQUEST_STARTED + 8].cast("d")
        self.counters = page[COUNTERS_OFFSET:SLOT_SIZE].cast("Q")
        self.slot = slot
        # Called for every request, so both are C calls with no Python frame:
        # begin_request(time.monotonic(), b"GET /path 10.0.0.7") shows the request the
        # worker starts (the line cut or NUL-padded to fit); end_request() says it is over.
        self.begin_request = functools.partial(_REQUEST.pack_into, page, _REQUEST_STARTED)
        self.end_request = functools.partial(_STAMP.pack_into, page, _REQUEST_STARTED, 0.0)

    def beat(self) -> float:
        """Stamp the slot with the time now (``time.monotonic()``), and return it."""
        self._stamp[0] = now = time.monotonic()
        return now

    def age(self) -> float:
        """Seconds since the worker last proved it was alive."""
        stamp: float = self._stamp[0]
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

    @property
    def stopping(self) -> bool:
        """The master has begun a graceful stop (--health-path answers 503)."""
        return self._stopping[0] == 1

    def current_request(self) -> tuple[str, float] | None:
        """(request line, seconds it has run) while the worker serves one, else None."""
        started: float = self._started[0]
        if not started:
            return None
        line = bytes(self._page[_REQUEST_TEXT : _REQUEST_TEXT + REQUEST_TEXT_SIZE]).rstrip(b"\0")
        return line.decode("utf-8", "replace"), max(0.0, time.monotonic() - started)
