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
  the next connection is announced to another worker; but a worker that
  held no connection before this one keeps its place (``steps_back``): see
  "The warm worker" below;
- holding clearly more than its share, it stops watching for a moment
  (``STEP_ASIDE``) and leaves the queue to the worker it
  nudged; it watches again as soon as it no longer holds more than the
  least loaded, or when the moment is over. Only once until the queue has
  drained, so a stuck sibling delays waiting connections at most once.

A worker always takes at least one connection when told, and the least
loaded worker never steps aside, so balancing never strands a connection.
A unix socket's queue length comes from the kernel's socket diagnostics
(``UnixQueueProbe``). Behind nginx it matters most: past its cached
upstream connections nginx opens one per request, so under load dozens
wait in the queue while each worker serves its kept connections in turn; a
worker that took a few per turn left them waiting for seconds (Django at
256 connections: p99 3.8 s against Gunicorn sync's 0.35 s). Where the
kernel will not say (netlink refused), a worker takes a small batch, or one
per turn while another holds fewer.

The warm worker. The kernel announces a new connection to the first worker
in the socket's queue *that is waiting in epoll*: one busy serving a
request is passed over, and so is one that is stuck or gone; the ones it
passed over find the connection ready as soon as they wait again
(measured on Linux 6.18: with two waiters registered A then B, every
connection wakes A while A waits, B while A is busy, and B after A
re-registers). Stepping back on every accept sent successive connections
at low load (one client, a new connection per request) to alternating
workers, each finding the app's caches cold. Two rules keep them on the
worker that served last (the warm one) while it is free:

- a worker that held no connection before taking one keeps its place in
  the queue (``steps_back``), so the front worker takes every connection
  while it waits in epoll. Once connections stay (keep-alive) or overlap,
  workers hold some and the rule above spreads them again; only the first
  connection of an idle pool is taken without stepping back, so keep-alive
  connections opened one after another are at most one off the even
  spread, and only at the start;
- a client that connects again as soon as it has its answer (wrk, a
  script in a loop) usually beats the warm worker back to epoll: it is
  still finishing (Django's request_finished handlers run after the
  response is out), so the kernel wakes the other one. That one, holding
  none, with one connection waiting and the warm worker ahead of it in the
  queue holding at most the connection it is finishing
  (``Seat.warm_one_passed_over``), stops watching for WARM_WAIT
  (``Balancer.leave_to_warm``). The warm worker takes the connection the
  moment it waits again. If nobody took a connection meanwhile (the warm
  mark counts them) and one still waits, this worker takes it: a busy,
  stuck or dead warm worker costs a connection WARM_WAIT at most, and the
  one that took it is the warm worker from then on.

The scoreboard records both: the warm mark (the seat that accepted last,
and a count of accepted connections) and when each worker last joined the
queue. Measured with Django's JSON view, ``Connection: close`` at one
connection, two workers, servers side by side on a busy 2-core machine
(medians of 6 rounds of 3 s): 520 requests/s and 1,794 µs of server CPU per
request while they alternated, 628 and 1,482 µs with the warm worker (one
worker alone: 682 and 1,352 µs). In a 6 s run the warm worker served all
3,427 requests; the other was woken for 87 % of them and left each to it.

A worker's ``Balancer`` owns the listening sockets' registration with its
epoll: watching them, stepping back and aside, nudges, and the stop while
it cannot accept. Out of file descriptors (or kernel memory), ``accept()``
fails while the connections it could not take keep the listening sockets
readable; the worker then stops watching them for ``ACCEPT_BACKOFF``
seconds, or until one of its connections closes, rather than spinning on
them, and says so once per episode.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import select
import socket
import time
from typing import NamedTuple, Protocol

from .sockets import Listener

ACCEPT_BATCH = 4  # connections taken per wake-up when the queue's length is unknown
STEP_ASIDE = 0.01  # seconds a worker holding more than its share leaves waiting connections to others
ACCEPT_BACKOFF = 0.5  # seconds without accepting after accept() ran out of descriptors or memory
ACCEPT_WARN_EVERY = 60.0  # at most one warning per this many seconds about such failures
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
STEP_ASIDE_MARGIN = 8  # a worker steps aside only when it holds this many more than the least loaded
ACCEPT_MAX = 64  # at most this many taken per turn: each one's first request is served at once
WARM_WAIT = 0.001  # seconds an idle worker leaves a new connection to the warm worker the kernel passed over


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


def steps_back(held: int, others: list[int]) -> bool:
    """A worker holding ``held`` connections takes one more: should it go to the back of the kernel's queue?

    ``others`` is how many each other worker holds. Yes when another would
    then hold fewer, so that the next connection is announced to it; but
    never when it held none: an idle worker keeps its place, so that at low
    load the same warm worker takes one connection after another.
    """
    return held > 0 and bool(others) and held + 1 > min(others)


# Each seat is one int32: 0 when empty (no worker, or one that is booting or
# leaving), else the worker's open connections + 1.
_HIGH_WATER = 0  # index of the entry holding how many entries are in use
_FIRST_SEAT = 1
# The queue area holds one int64 per seat: when that worker last joined the
# kernel's queue of waiters on the listening sockets (CLOCK_MONOTONIC in ns,
# the same clock in every process; 0 while it is not in the queue). Its first
# entry, which no seat uses, is the warm mark: the seat of the worker that
# accepted last (the warm one) in its low bits, and above them a count of the
# connections the pool accepted, so that a reader can tell one was taken.
_WARM = 0
_SEAT_BITS = 16
_SEAT_MASK = (1 << _SEAT_BITS) - 1


class Scoreboard:
    """Open connections per worker and their places in the kernel's queue, in pages shared across fork()."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 3 * mmap.PAGESIZE)  # MAP_SHARED: survives fork
        view = memoryview(self._page)
        self.entries = view[: mmap.PAGESIZE].cast("i")
        self.queue = view[mmap.PAGESIZE :].cast("q")  # as many int64 as there are int32 entries
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
            self.queue[index] = 0
            self.entries[_HIGH_WATER] = max(self.entries[_HIGH_WATER], index + 1)
        return self.seat(index)

    def seat(self, index: int) -> Seat:
        """The seat ``index`` (a template process builds its workers' with this)."""
        return Seat(self.entries, self.queue, index, self.pool)

    def release(self, seat: Seat) -> None:
        """Master: the worker has exited; its seat is free again."""
        if seat.index:
            self.entries[seat.index] = 0
            self.queue[seat.index] = 0
            self.taken.discard(seat.index)


class Seat:
    """One worker's entry on the scoreboard."""

    def __init__(self, entries: memoryview, queue: memoryview, index: int, pool: str) -> None:
        self.entries = entries
        self.queue = queue
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
            self.queue[self.index] = 0
            self.index = 0  # and it publishes no more (the master's copy keeps the index)
        if self.nudges is not None:
            self.nudges.close()
            self.nudges = None

    def took_one(self, held: int) -> bool:
        """Publish this worker's load with one more connection, and that it is the warm one now;
        should it step back (``steps_back``)?"""
        if not self.index:
            return False
        self.publish(held + 1)
        self.queue[_WARM] = ((self.queue[_WARM] >> _SEAT_BITS) + 1) << _SEAT_BITS | self.index
        # Holding none, it keeps its place whatever the others hold: no need to read them.
        return held > 0 and steps_back(held, [load for load, _ in self.others()])

    def warm_mark(self) -> int:
        """The warm mark (see _WARM): it changes whenever a worker of the pool accepts a connection."""
        mark: int = self.queue[_WARM]
        return mark

    def joined_queue(self, joined: bool) -> None:
        """This worker started watching the listening sockets (last in the kernel's queue now), or stopped."""
        if self.index:
            self.queue[self.index] = time.monotonic_ns() if joined else 0

    def warm_one_passed_over(self) -> bool:
        """Is the warm worker another, holding one connection at most, and ahead of this one in the queue?

        The kernel wakes this worker for a new connection only when every
        worker ahead of it was not waiting in epoll; those it passed over
        find the connection ready the moment they wait again. At low load
        the warm worker is then finishing its last request: its response is
        out (the client connected again), but the app's own closing work
        (Django's request_finished, for one) still runs, and the connection
        it is about to close still counts.
        """
        warm = self.queue[_WARM] & _SEAT_MASK
        if not self.index or not warm or warm == self.index or self.entries[warm] not in (1, 2):
            return False  # none, this one, gone (0), or holding several connections
        joined: int = self.queue[warm]
        return 0 < joined < self.queue[self.index]

    def someone_holds_fewer(self, connections: int) -> bool:
        """Publish this worker's load; does another worker hold fewer connections?"""
        if not self.index:
            return False
        self.publish(connections)
        others = self.others()
        return bool(others) and connections > min(others)[0]


class Holder(Protocol):
    """The worker, as its balancer sees it."""

    pid: int
    closing: bool  # leaving: never watch the listening sockets again

    def open_connections(self) -> int: ...


class Balancer:
    """One worker's listening sockets in its epoll: when to watch them, and how many to take.

    Watching stops while the worker is full (``worker_connections``), while
    it has stepped aside, and while it backs off after ``accept()`` ran out
    of resources; it starts again once none of those holds (and never once
    the worker is leaving).
    """

    def __init__(
        self, poller: select.epoll, listeners: dict[int, Listener], seat: Seat, worker: Holder
    ) -> None:
        self.poller = poller
        self.listeners = listeners  # by file descriptor
        self.seat = seat
        self.worker = worker
        self.log = logging.getLogger("forkserve.error")
        self.watching = False
        self.warm_waiting = False  # stepped aside for the warm worker (see leave_to_warm)
        self.warm_mark = 0  # the warm mark then: unchanged if nobody took a connection since
        self.warm_missed = False  # it did not take the connection: this worker takes it now
        self.full = False  # holds worker_connections: not watching the listeners until one closes
        self.aside_until = 0.0  # while stepped aside: when to watch the listeners again
        self.may_step_aside = True
        self.starved_until = 0.0  # accept() ran out of descriptors: when to try again
        self.starved_warned = -ACCEPT_WARN_EVERY  # when that was last logged
        self.nudge_fd = -1

    def start(self) -> None:
        """Listen for nudges, watch the listening sockets, and tell the others this worker holds none."""
        nudges = self.seat.listen_for_nudges()
        if nudges is not None:
            self.nudge_fd = nudges.fileno()
            self.poller.register(self.nudge_fd, select.EPOLLIN)
        self.watch()
        self.seat.publish(0)

    def stop(self) -> None:
        """The worker leaves: no more nudges, no more watching, no seat on the scoreboard."""
        if self.nudge_fd >= 0:
            self.poller.unregister(self.nudge_fd)
            self.nudge_fd = -1
        self.seat.leave()
        self.unwatch()
        self.aside_until = 0.0  # a step aside ends here: closing a connection would otherwise watch again

    def watch(self) -> None:
        if self.watching:
            return
        self.watching = True
        for fd in self.listeners:
            # EPOLLEXCLUSIVE: one connection wakes one worker, not all of them.
            self.poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.seat.joined_queue(True)

    def unwatch(self) -> None:
        if not self.watching:
            return
        self.watching = False
        for fd in self.listeners:
            self.poller.unregister(fd)
        self.seat.joined_queue(False)

    def timeout(self, idle: float) -> float:
        """How long the worker's poll may wait: less while stepped aside or backing off."""
        timeout = max(0.0, self.aside_until - time.monotonic()) if self.aside_until else idle
        if self.starved_until:
            timeout = min(timeout, max(0.0, self.starved_until - time.monotonic()))
        return timeout

    def tick(self, now: float) -> None:
        """After each poll: end a step aside or a back-off whose time is up."""
        self.warm_missed = False  # the poll after rejoin() reported the connection, if it still waits
        if self.aside_until and now >= self.aside_until:
            self.rejoin()
        if self.starved_until and now >= self.starved_until:
            self.resume_accepting()

    def rejoin(self) -> None:
        """End a step aside: watch the listening sockets again (unless full or backing off)."""
        self.aside_until = 0.0
        if self.warm_waiting:
            self.warm_waiting = False
            self.warm_missed = self.seat.warm_mark() == self.warm_mark and any(
                listener.waiting() for listener in self.listeners.values()
            )
        if not self.full and not self.starved_until:
            self.watch()

    def back_off(self, exc: OSError) -> None:
        """accept() ran out of descriptors or memory: stop accepting for a moment.

        The connections it could not take keep the listening sockets readable,
        so watching them would wake this loop at once, again and again. It
        watches them again after ACCEPT_BACKOFF seconds or as soon as one of
        its connections closes, and serves the ones it holds meanwhile.
        """
        now = time.monotonic()
        if not self.starved_until and now - self.starved_warned >= ACCEPT_WARN_EVERY:
            self.starved_warned = now
            self.log.warning(
                "accept() failed: %s; worker %d holds %d connections and stops accepting "
                "for %gs or until one closes (raise the open files limit, or add workers)",
                exc,
                self.worker.pid,
                self.worker.open_connections(),
                ACCEPT_BACKOFF,
            )
        self.starved_until = now + ACCEPT_BACKOFF
        self.unwatch()

    def resume_accepting(self) -> None:
        """End a back-off: watch the listening sockets again (unless full, stepped aside or leaving)."""
        self.starved_until = 0.0
        if not self.full and not self.aside_until and not self.worker.closing:
            self.watch()

    def step_back(self) -> None:
        """Go to the back of the kernel's queue of workers to wake."""
        if self.watching:
            self.unwatch()
            self.watch()

    def accepted(self, stepped_back: bool) -> bool:
        """A connection was accepted: step back if another worker holds fewer; has it stepped back?

        Decided before serving it: its client may connect again meanwhile. A
        worker that held none keeps its place (see "The warm worker" above).
        """
        if not stepped_back and self.seat.took_one(self.worker.open_connections()):
            self.step_back()
            return True
        return stepped_back

    def became_full(self) -> None:
        """The worker holds worker_connections: leave new connections to the others until one closes."""
        self.full = True
        self.unwatch()

    def how_many_to_take(self, listener: Listener) -> int:
        """How many of the waiting connections to take now."""
        mine = self.worker.open_connections()
        waiting = listener.waiting()
        if waiting is None:  # no queue length (netlink refused): a batch, or one if another holds fewer
            return 1 if self.seat.someone_holds_fewer(mine) else ACCEPT_BATCH
        if mine == 0 and waiting == 1 and self.leave_to_warm():
            return 0
        plan = fair_share(mine, waiting, self.seat.others())
        if not plan.nudge:
            self.may_step_aside = True  # the queue is drained
            return plan.take
        self.seat.nudge(plan.nudge)
        if plan.over and self.may_step_aside:
            # Leave them to the worker just nudged, for a moment. If they still
            # wait after that, this worker takes them (no second step aside
            # until the queue has drained): a stuck sibling delays them once.
            self.unwatch()
            self.aside_until = time.monotonic() + STEP_ASIDE
            self.may_step_aside = False
            return 0
        return plan.take

    def leave_to_warm(self) -> bool:
        """At low load, leave a new connection to the warm worker the kernel passed over?

        Stops watching for WARM_WAIT: the warm worker takes the connection as
        soon as it waits in epoll again. If none was taken meanwhile and one
        still waits when this worker watches again, it takes it: at most
        WARM_WAIT late, whether the warm worker is stuck, busy or gone. Having
        taken it, this worker is the warm one, so while the other stays busy
        the next connections are not left to it.
        """
        if self.warm_missed or not self.watching or not self.seat.warm_one_passed_over():
            return False
        self.unwatch()
        self.aside_until = time.monotonic() + WARM_WAIT
        self.warm_waiting = True
        self.warm_mark = self.seat.warm_mark()
        return True

    def take_nudges(self) -> bool:
        """Another worker saw more connections waiting than its share; should this one accept now?"""
        assert self.seat.nudges is not None
        with contextlib.suppress(BlockingIOError):
            while self.seat.nudges.recv(16):
                pass
        return not self.starved_until  # out of descriptors: accept() would fail again

    def closed(self, capacity: int) -> None:
        """One of the worker's connections closed: a descriptor and a place are free again."""
        if self.starved_until:
            self.resume_accepting()
        held = self.worker.open_connections()
        if self.full and held < capacity:
            self.full = False
            if not self.aside_until and not self.worker.closing:
                self.watch()
        if self.aside_until and not self.seat.someone_holds_fewer(held):
            self.rejoin()  # no longer holds more than the others
        else:
            self.seat.publish(held)
