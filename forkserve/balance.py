"""Spreading client connections evenly over the workers.

Every worker watches the same listening sockets with EPOLLEXCLUSIVE, so
the kernel wakes one worker per new connection, not all of them: the
first one in the socket's queue that is waiting in epoll (queue order is
the order in which workers started watching). When the workers are idle
it is always the same one. Left alone, that worker takes nearly every
connection, and with keep-alive (nginx's upstream keepalive, browsers,
wrk) it keeps them; under load it is saturated while the others idle.

So each worker publishes how many connections it holds in a page of
memory the master shares with the whole pool (the ``Scoreboard``; one
``Seat`` per worker). On accepting, a worker that holds more than the
least loaded of the others steps to the back of the queue (it stops and
starts watching the listening sockets again), and the kernel wakes the
next one; and when told of waiting connections it takes one per turn of
its loop instead of a batch, so that a less loaded worker that was told
too gets the larger share. Every worker always watches and always takes
what it is told of, so balancing never leaves a connection waiting.

Known limit: connections queued while one worker alone was waiting in
epoll were announced to it alone (a burst of connects landing before any
other worker runs), and it takes them all, one per turn.
"""

from __future__ import annotations

import mmap

# Each seat is one int32: 0 when empty (no worker, or one that is booting or
# leaving), else the worker's open connections + 1.
_HIGH_WATER = 0  # index of the entry holding how many entries are in use
_FIRST_SEAT = 1


class Scoreboard:
    """Open connections per worker, in one page shared across fork()."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED: survives fork
        self.entries = memoryview(self._page).cast("i")
        self.taken: set[int] = set()

    def claim(self) -> Seat:
        """Master: a free seat for a new worker (seat 0, which never steps back, if none is left)."""
        free = (i for i in range(_FIRST_SEAT, len(self.entries)) if i not in self.taken)
        index = next(free, 0)
        if index:
            self.taken.add(index)
            self.entries[index] = 0
            self.entries[_HIGH_WATER] = max(self.entries[_HIGH_WATER], index + 1)
        return Seat(self.entries, index)

    def release(self, seat: Seat) -> None:
        """Master: the worker has exited; its seat is free again."""
        if seat.index:
            self.entries[seat.index] = 0
            self.taken.discard(seat.index)


class Seat:
    """One worker's entry on the scoreboard."""

    def __init__(self, entries: memoryview, index: int) -> None:
        self.entries = entries
        self.index = index

    def publish(self, connections: int) -> None:
        """Tell the others how many connections this worker holds."""
        if self.index:
            self.entries[self.index] = connections + 1

    def leave(self) -> None:
        """This worker takes no more connections: the others stop counting it."""
        if self.index:
            self.entries[self.index] = 0
            self.index = 0  # and it publishes no more (the master's copy keeps the index)

    def someone_holds_fewer(self, connections: int) -> bool:
        """Publish this worker's load; does another worker hold fewer connections?"""
        if not self.index:
            return False
        entries = self.entries
        entries[self.index] = connections + 1
        values = entries[_FIRST_SEAT : entries[_HIGH_WATER]].tolist()
        values[self.index - _FIRST_SEAT] = 0  # not our own
        others = [value - 1 for value in values if value]
        return bool(others) and connections > min(others)
