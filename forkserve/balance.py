"""Spreading client connections evenly over the workers.

Every worker watches the same listening sockets with EPOLLEXCLUSIVE, so
the kernel tells one worker per new connection, not all of them: the
first one in the socket's queue (queue order is the order in which the
workers started watching). Left alone, that worker takes nearly every
connection, and with keep-alive (nginx's upstream keepalive, browsers,
wrk) it keeps them; under load it is saturated while the others idle.
A burst of connects (a client pool opening, a load test starting) is all
announced to whichever worker was first, before any other one runs.

So each worker publishes how many connections it holds in a page of
memory the master shares with the whole pool (the ``Scoreboard``; one
``Seat`` per worker), and:

- told of waiting connections, it reads the accept queue's length
  (``Listener.waiting``) and takes its fair share (``fair_share``): enough
  that every worker would hold about as many. If more wait, it nudges the
  least loaded worker, which takes its own share at once: each seat has a
  datagram socket that any worker of the pool can write to;
- on accepting while another worker holds fewer, it steps to the back of
  the kernel's queue (stops and starts watching the listening sockets), so
  the next connection is announced to another worker;
- holding clearly more than its share, it stops watching for a moment
  (``STEP_ASIDE`` in worker.py) and leaves the queue to the worker it
  nudged; it watches again as soon as it no longer holds more than the
  least loaded, or when the moment is over. Only once until the queue has
  drained, so a stuck sibling delays waiting connections at most once.

A worker always takes at least one connection when told, and the least
loaded worker never steps aside, so balancing never strands a connection.
Unix sockets have no queue length to read: there a worker takes a small
batch, or one per turn while another holds fewer.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
from typing import NamedTuple

STEP_ASIDE_MARGIN = 8  # a worker steps aside only when it holds this many more than the least loaded
ACCEPT_MAX = 64  # at most this many taken per turn: each one's first request is served at once


class Share(NamedTuple):
    """What a worker told of waiting connections should do."""

    take: int  # how many to accept now (at least one)
    nudge: int  # the seat to wake for the rest (0: none)
    over: bool  # it already holds clearly more than its share: it may step aside


def fair_share(mine: int, waiting: int, others: list[tuple[int, int]]) -> Share:
    """Split ``waiting`` connections so that every worker ends up holding about as many.

    ``others`` is (connections, seat) of the other workers. The worker always
    takes at least one, so no connection waits on a worker that may never be
    told; when more wait than its share, the least loaded other is nudged.
    """
    if not others:
        return Share(max(1, min(waiting, ACCEPT_MAX)), 0, False)
    total = mine + waiting + sum(load for load, _ in others)
    share = -(-total // (len(others) + 1)) - mine  # ceil
    take = max(1, min(share, waiting, ACCEPT_MAX))
    if waiting <= take:
        return Share(take, 0, False)
    lightest_load, lightest = min(others)
    return Share(take, lightest, share <= 0 and mine - lightest_load >= STEP_ASIDE_MARGIN)


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
        # Names the pool's nudge sockets; random, so pools sharing a network
        # namespace (containers whose masters are all pid 1) never collide.
        self.pool = os.urandom(8).hex()

    def claim(self) -> Seat:
        """Master: a free seat for a new worker (seat 0, which never steps back, if none is left)."""
        free = (i for i in range(_FIRST_SEAT, len(self.entries)) if i not in self.taken)
        index = next(free, 0)
        if index:
            self.taken.add(index)
            self.entries[index] = 0
            self.entries[_HIGH_WATER] = max(self.entries[_HIGH_WATER], index + 1)
        return Seat(self.entries, index, self.pool)

    def release(self, seat: Seat) -> None:
        """Master: the worker has exited; its seat is free again."""
        if seat.index:
            self.entries[seat.index] = 0
            self.taken.discard(seat.index)


class Seat:
    """One worker's entry on the scoreboard."""

    def __init__(self, entries: memoryview, index: int, pool: str) -> None:
        self.entries = entries
        self.index = index
        self.pool = pool
        self.nudges: socket.socket | None = None  # bound in the worker: see listen_for_nudges()

    def address(self, index: int) -> bytes:
        # Abstract namespace (leading NUL): no file to clean up, gone with the process.
        return b"\0forkserve-%s-%d" % (self.pool.encode(), index)

    def listen_for_nudges(self) -> socket.socket | None:
        """Worker: a socket other workers write to when connections wait for it."""
        if not self.index:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.address(self.index))
        except OSError:
            sock.close()  # e.g. a child of the previous holder still has the name
            return None
        self.nudges = sock
        return sock

    def nudge(self, index: int) -> None:
        """Wake the worker in seat ``index``: connections are waiting that it should take."""
        if self.nudges is None:
            return
        # OSError: it is gone, or has unread nudges already; nothing to add either way.
        with contextlib.suppress(OSError):
            self.nudges.sendto(b"!", self.address(index))

    def others(self) -> list[tuple[int, int]]:
        """(connections, seat index) of every other worker that takes connections."""
        entries = self.entries
        first = _FIRST_SEAT
        return [
            (value - 1, first + i)
            for i, value in enumerate(entries[first : entries[_HIGH_WATER]].tolist())
            if value and first + i != self.index
        ]

    def publish(self, connections: int) -> None:
        """Tell the others how many connections this worker holds."""
        if self.index:
            self.entries[self.index] = connections + 1

    def leave(self) -> None:
        """This worker takes no more connections: the others stop counting it."""
        if self.index:
            self.entries[self.index] = 0
            self.index = 0  # and it publishes no more (the master's copy keeps the index)
        if self.nudges is not None:
            self.nudges.close()
            self.nudges = None

    def someone_holds_fewer(self, connections: int) -> bool:
        """Publish this worker's load; does another worker hold fewer connections?"""
        if not self.index:
            return False
        self.publish(connections)
        others = self.others()
        return bool(others) and connections > min(others)[0]
