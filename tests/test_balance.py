"""Connections spread over the workers: the scoreboard's rule, then real workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ResponseReader, wait_until

from forkserve.balance import (
    ACCEPT_MAX,
    STEP_ASIDE_MARGIN,
    WARM_WAIT,
    Balancer,
    Scoreboard,
    Share,
    fair_share,
    steps_back,
)
from forkserve.sockets import Address, Listener, UnixQueueProbe


def test_a_worker_steps_back_only_when_another_holds_fewer_connections():
    board = Scoreboard()
    first, second = board.claim(), board.claim()
    assert first.someone_holds_fewer(3) is False  # the second has not started serving
    second.publish(0)
    assert first.someone_holds_fewer(1) is True
    assert second.someone_holds_fewer(1) is False  # a tie keeps the turn
    assert second.someone_holds_fewer(2) is True


def test_a_leaving_or_exited_worker_is_not_counted():
    board = Scoreboard()
    first, second, third = board.claim(), board.claim(), board.claim()
    second.publish(0)
    third.publish(5)
    assert first.someone_holds_fewer(1) is True
    second.leave()
    assert first.someone_holds_fewer(1) is False  # only the third, with 5, is left
    second.publish(0)  # a seat that left publishes no more
    assert first.someone_holds_fewer(1) is False
    board.release(third)
    assert first.someone_holds_fewer(9) is False
    reused = board.claim()
    assert reused.index == third.index  # the freed seat is handed out again
    assert reused.someone_holds_fewer(0) is False


def test_seats_run_out_gracefully():
    board = Scoreboard()
    seats = [board.claim() for _ in range(len(board.entries) - 1)]
    spare = board.claim()
    assert spare.index == 0  # no seat left: balancing is off for this worker
    assert spare.someone_holds_fewer(100) is False
    board.release(seats[0])
    assert board.claim().index == seats[0].index


def test_fair_share_splits_the_waiting_connections_so_every_worker_holds_as_many():
    assert fair_share(0, 16, [(0, 2)]) == Share(take=8, nudge=2, over=False)
    assert fair_share(0, 3, [(5, 2)]) == Share(take=3, nudge=0, over=False)  # all of them: it holds fewer
    assert fair_share(4, 9, [(2, 2), (7, 3)]) == Share(take=4, nudge=2, over=False)  # 22 over 3: 8 each
    assert fair_share(0, 500, []) == Share(take=ACCEPT_MAX, nudge=0, over=False)  # alone: a bounded batch


def test_fair_share_always_takes_one_and_says_when_a_worker_may_step_aside():
    assert fair_share(3, 2, [(0, 2)]) == Share(take=1, nudge=2, over=False)  # above its share, but barely
    heavy = STEP_ASIDE_MARGIN + 10
    assert fair_share(heavy, 6, [(2, 2), (4, 3)]) == Share(take=1, nudge=2, over=True)
    assert fair_share(5, 0, [(0, 2)]).take == 1  # told, but another worker took them first: accept finds none


def test_a_worker_that_held_no_connection_keeps_its_place_in_the_kernels_queue():
    assert steps_back(0, [0]) is False  # an idle pool: the same (warm) worker takes the next one too
    assert steps_back(0, [0, 4]) is False
    assert steps_back(1, [0]) is True  # its last connection stayed open: the next goes to another
    assert steps_back(1, [1]) is True  # it would hold more than the other
    assert steps_back(3, [4]) is False  # it would hold no more than the other
    assert steps_back(6, []) is False  # alone


def _first_in_the_queue_takes_each(workers: int, connections: int, stay_open: bool) -> list[int]:
    """The kernel's side, modelled: each connection goes to the first worker in the queue
    (all idle between connections), which steps back as ``steps_back`` says."""
    queue, held, served = list(range(workers)), [0] * workers, [0] * workers
    for _ in range(connections):
        taker = queue[0]
        if steps_back(held[taker], [held[i] for i in range(workers) if i != taker]):
            queue.append(queue.pop(0))
        served[taker] += 1
        held[taker] += stay_open
    return served


def test_connections_closed_at_once_stay_on_one_worker_while_kept_ones_spread():
    for workers in (2, 3, 4):
        assert _first_in_the_queue_takes_each(workers, 12, stay_open=False)[0] == 12
        for connections in range(1, 13):
            spread = _first_in_the_queue_takes_each(workers, connections, stay_open=True)
            # Only the first connection of an idle pool is taken without stepping back.
            assert max(spread) - min(spread) <= 2, (workers, connections, spread)
        assert max(spread) - min(spread) <= 1, (workers, spread)


def test_taking_a_connection_publishes_the_load_and_says_whether_to_step_back():
    board = Scoreboard()
    first, second = board.claim(), board.claim()
    second.publish(0)
    assert first.took_one(0) is False
    assert second.others() == [(1, first.index)]
    assert first.took_one(1) is True
    assert second.others() == [(2, first.index)]
    assert board.claim().took_one(0) is False  # a third seat that never served is not counted
    spare = board.seat(0)  # no seat left: balancing is off
    assert spare.took_one(5) is False


def _in_epoll_wait(task: int | str) -> bool:
    """Is this process (or "self/task/TID") blocked in epoll_wait, by the kernel's word?"""
    wchan = Path(f"/proc/{task}/wchan").read_text()
    return "epoll" in wchan or wchan == "ep_poll"


def _asleep(pid: int) -> bool:
    """Is this process in a sleep (the app's time.sleep(), say)?"""
    return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()


class _Waiter:
    """A thread with its own epoll watching ``server`` with EPOLLEXCLUSIVE, as a worker does."""

    def __init__(self, server: socket.socket, name: str, took: list[str]) -> None:
        self.server, self.name, self.took = server, name, took
        self.poller = select.epoll()
        self.poke_r, self.poke_w = os.pipe()
        self.poller.register(self.poke_r, select.EPOLLIN)
        self.poller.register(server.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.resume = threading.Event()
        self.stopping = False
        self.tid = 0  # set by the thread itself
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        self.tid = threading.get_native_id()
        while not self.stopping:
            for fd, _ in self.poller.poll(10):
                if fd == self.poke_r:  # told to be busy: out of epoll until resumed
                    os.read(self.poke_r, 16)
                    self.resume.wait(10)
                    self.resume.clear()
                    continue
                with contextlib.suppress(BlockingIOError):
                    self.server.accept()[0].close()
                    self.took.append(self.name)

    def waiting(self) -> bool:
        """Is the thread blocked in epoll_wait (not merely runnable)?"""
        return bool(self.tid) and _in_epoll_wait(f"self/task/{self.tid}")

    def busy(self) -> None:
        os.write(self.poke_w, b"!")
        assert wait_until(lambda: not self.waiting(), 5)

    def stop(self) -> None:
        self.stopping = True
        self.resume.set()
        os.write(self.poke_w, b"!")
        self.thread.join(10)
        self.poller.close()
        os.close(self.poke_r)
        os.close(self.poke_w)


def test_the_kernel_wakes_the_first_waiting_watcher_and_passes_over_a_busy_one():
    """What the warm worker rests on (balance.py): a new connection wakes the first
    epoll, in registration order, that is waiting; one that is not is passed over."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    took: list[str] = []
    first = _Waiter(server, "first", took)
    second = _Waiter(server, "second", took)

    def connect_once() -> str:
        assert wait_until(lambda: first.waiting() or second.waiting(), 5)
        count = len(took)
        socket.create_connection(server.getsockname()).close()
        assert wait_until(lambda: len(took) > count, 5)
        return took[-1]

    try:
        assert wait_until(lambda: first.waiting() and second.waiting(), 5)
        assert [connect_once() for _ in range(3)] == ["first"] * 3
        first.busy()
        assert connect_once() == "second"  # at once: it did not wait for the busy one
        first.resume.set()
        assert wait_until(lambda: first.waiting() and second.waiting(), 5)
        assert connect_once() == "first"
        first.poller.unregister(server.fileno())  # a step back: to the end of the queue
        first.poller.register(server.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        assert [connect_once() for _ in range(2)] == ["second"] * 2
    finally:
        first.stop()
        second.stop()
        server.close()


class _Holder:
    """A worker as its Balancer sees it, holding ``held`` connections."""

    pid = 0
    closing = False

    def __init__(self) -> None:
        self.held = 0

    def open_connections(self) -> int:
        return self.held


@contextlib.contextmanager
def _two_balancers() -> Iterator[tuple[Balancer, Balancer, Listener]]:
    """Two workers' balancers on one listening socket: ``warm`` joined the kernel's queue first,
    took the last connection and holds none now; ``other`` joined after it. Nobody polls but the test."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    listener = Listener(server, Address(family=socket.AF_INET, host="127.0.0.1", port=0))
    board = Scoreboard()
    listeners = {server.fileno(): listener}
    warm, other = (Balancer(select.epoll(), listeners, board.claim(), _Holder()) for _ in "ab")
    warm.start()
    other.start()
    warm.seat.took_one(0)
    warm.seat.publish(0)
    try:
        yield warm, other, listener
    finally:
        for balancer in (warm, other):
            balancer.stop()
            balancer.poller.close()
        server.close()


def _one_connection_waits(listener: Listener) -> socket.socket:
    client = socket.create_connection(listener.sock.getsockname())
    assert wait_until(lambda: listener.waiting() == 1, 5)
    return client


def _told(balancer: Balancer, listener: Listener) -> bool:
    """Does the balancer's epoll report the listening socket as readable now?"""
    return any(fd == listener.sock.fileno() for fd, _ in balancer.poller.poll(0))


def test_an_idle_worker_leaves_a_new_connection_to_the_warm_worker_the_kernel_passed_over():
    with _two_balancers() as (warm, other, listener), contextlib.closing(_one_connection_waits(listener)):
        # Neither waited in epoll: the kernel told both (other stands for the one it woke).
        assert _told(other, listener)
        assert other.how_many_to_take(listener) == 0
        assert not other.watching and 0 < other.timeout(1.0) <= WARM_WAIT
        assert _told(warm, listener)  # told too: it takes the connection once it polls again
        assert warm.how_many_to_take(listener) == 1
        listener.sock.accept()[0].close()
        warm.accepted(False)
        other.tick(other.aside_until)  # WARM_WAIT later: watching again, nothing left to take
        assert other.watching and not other.warm_missed
        assert not _told(other, listener)


def test_a_worker_takes_the_connection_itself_if_the_warm_worker_does_not_come():
    with _two_balancers() as (_, other, listener), contextlib.closing(_one_connection_waits(listener)):
        assert _told(other, listener) and other.how_many_to_take(listener) == 0
        other.tick(other.aside_until)  # WARM_WAIT later: the warm worker never polled (stuck, gone)
        assert _told(other, listener)
        assert other.how_many_to_take(listener) == 1
        listener.sock.accept()[0].close()
        other.accepted(False)
        other.tick(time.monotonic())
        # It is the warm one now: while the other stays away, it leaves it nothing more.
        with contextlib.closing(_one_connection_waits(listener)):
            assert _told(other, listener) and other.how_many_to_take(listener) == 1


def test_no_connection_is_left_to_a_warm_worker_that_is_loaded_behind_or_gone():
    with _two_balancers() as (warm, other, listener), contextlib.closing(_one_connection_waits(listener)):
        warm.seat.publish(2)  # serving one request and holding another connection
        assert other.how_many_to_take(listener) == 1
        warm.seat.publish(0)
        other.worker.held = 1  # not idle itself
        assert other.how_many_to_take(listener) == 1
        other.worker.held = 0
        warm.step_back()  # behind the other in the kernel's queue: the kernel did not pass it over
        assert other.how_many_to_take(listener) == 1
        warm.stop()  # gone
        assert other.how_many_to_take(listener) == 1
        assert other.watching


def test_a_listener_reports_how_many_connections_wait_in_its_queue(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    listener = Listener(server, Address(family=socket.AF_INET, host="127.0.0.1", port=0))
    clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
    try:
        assert wait_until(lambda: listener.waiting() == 3, 5)
        server.accept()[0].close()
        assert listener.waiting() == 2
    finally:
        for sock in clients:
            sock.close()
        server.close()
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "s"))
    unix.listen(50)
    listener = Listener(unix, Address(family=socket.AF_UNIX, path=str(tmp_path / "s")))
    clients = []
    with unix:
        assert listener.queue() == (0, 50)  # asked over netlink, as ss -xl does
        for _ in range(3):
            clients.append(socket.socket(socket.AF_UNIX))
            clients[-1].connect(str(tmp_path / "s"))
        assert listener.waiting() == 3
        unix.accept()[0].close()
        assert listener.waiting() == 2
    for sock in clients:
        sock.close()


def test_a_queue_probe_the_kernel_refuses_stops_asking():
    """Where the kernel will not answer (no unix_diag, or a socket it does not know),
    the probe says None, once, and balancing falls back to batches."""
    server = socket.create_server(("127.0.0.1", 0))  # a unix_diag request for it finds no unix socket
    with server:
        probe = UnixQueueProbe(server)
        assert probe.queue() is None
        assert probe.netlink is None  # no netlink round trip on the next wake-up


def test_behind_a_unix_socket_a_worker_takes_its_fair_share_of_a_queue(tmp_path):
    """nginx reaches forkserve over a unix socket and opens a connection per
    request past its cached ones: under load dozens wait. A worker that took a
    few per turn while serving all its kept connections left those to wait
    for seconds (p99 3.8 s behind nginx at 256 connections); it takes its share."""
    path = str(tmp_path / "s")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(100)
    server.setblocking(False)
    listener = Listener(server, Address(family=socket.AF_UNIX, path=path))
    board = Scoreboard()
    listeners = {server.fileno(): listener}
    busy, other = (Balancer(select.epoll(), listeners, board.claim(), _Holder()) for _ in "ab")
    clients = []
    try:
        busy.start()
        other.start()
        busy.worker.held = other.worker.held = 10
        busy.seat.publish(10)
        other.seat.publish(10)
        for _ in range(40):
            clients.append(socket.socket(socket.AF_UNIX))
            clients[-1].connect(path)
        assert busy.how_many_to_take(listener) == 20  # half of the queue; the other is nudged for the rest
        assert other.seat.nudges is not None
        assert other.seat.nudges.recv(16) == b"!"
    finally:
        for balancer in (busy, other):
            balancer.stop()
            balancer.poller.close()
        for sock in clients:
            sock.close()
        server.close()


def test_a_worker_can_nudge_any_seat_of_its_own_pool_only():
    board, other_pool = Scoreboard(), Scoreboard()
    first, second = board.claim(), board.claim()
    stranger = other_pool.claim()  # same seat number, another pool
    for seat in (first, second, stranger):
        assert seat.listen_for_nudges() is not None
    try:
        first.nudge(second.index)
        assert second.nudges is not None and second.nudges.recv(16) == b"!"
        assert stranger.nudges is not None
        with pytest.raises(BlockingIOError):  # nothing crossed over from the other pool
            stranger.nudges.recv(16)
        index = second.index
        second.leave()  # its socket is closed: nudging it is harmless
        first.nudge(index)
    finally:
        first.leave()
        stranger.leave()


def _pid_of_one_request(sock: socket.socket) -> int:
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = ResponseReader(sock).read()
    assert status == 200
    return int(body)


def _serving_pids(server, workers: int) -> set[int]:
    """Ask over fresh connections, each kept open, until every worker has answered; then close them.

    Kept open, because connections that close at once all go to the same
    idle worker (the warm one), by design.
    """
    seen: set[int] = set()
    held: list[socket.socket] = []

    def ask() -> bool:
        held.append(server.connect())
        seen.add(_pid_of_one_request(held[-1]))
        return len(seen) == workers

    try:
        assert wait_until(ask, 10)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)  # let the workers read their clients' EOFs: the pool is idle again
    return seen


def _hold_connections(server, count: int) -> tuple[list[socket.socket], Counter]:
    """Open keep-alive connections one after another; which worker holds each?

    The kernel hands a new connection to a worker waiting in epoll, never
    to one still busy: the pause lets the last worker get back to waiting,
    so that the scoreboard, not the scheduler, decides.
    """
    held, pids = [], Counter()
    for _ in range(count):
        time.sleep(0.02)
        sock = server.connect()
        held.append(sock)
        pids[_pid_of_one_request(sock)] += 1
    return held, pids


def _empty_one_worker(server, count: int) -> tuple[int, int, list[socket.socket]]:
    """Hold ``count`` keep-alive connections over two workers, then close all
    of the one holding fewer: (its pid, the other's pid, the other's connections)."""
    held, _ = _hold_connections(server, count)
    by_pid: dict[int, list[socket.socket]] = {}
    for sock in held:
        by_pid.setdefault(_pid_of_one_request(sock), []).append(sock)
    emptied, other = sorted(by_pid, key=lambda pid: len(by_pid[pid]))
    for sock in by_pid[emptied]:
        sock.close()
    time.sleep(0.3)  # let the emptied worker read its clients' EOFs
    return emptied, other, by_pid[other]


def test_keep_alive_connections_are_spread_evenly(serve):
    server = serve("supervised:app", "--workers", "3")
    pids = _serving_pids(server, 3)
    held, counts = _hold_connections(server, 12)
    try:
        assert set(counts) == pids
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    finally:
        for sock in held:
            sock.close()


async def _burst_of_keep_alive_clients(address: tuple[str, int], count: int) -> Counter:
    """``count`` clients connect at once and each asks once; which worker holds each?"""

    async def one() -> tuple[int, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return int(await reader.readexactly(length)), writer

    answers = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 10)
    for _, writer in answers:  # all held until every client has its answer
        writer.close()
    return Counter(pid for pid, _ in answers)


def test_a_burst_of_connections_is_spread_over_the_workers(serve):
    """Connects that land together are announced to one worker alone; it
    takes its share and nudges the other to take the rest."""
    server = serve("supervised:app", "--workers", "2")
    pids = _serving_pids(server, 2)
    totals: Counter = Counter()
    for _ in range(3):
        time.sleep(0.3)  # the last burst's connections are gone
        totals += asyncio.run(_burst_of_keep_alive_clients(server.address, 16))
    # Without nudging, one worker gets all 48. (A burst can still split unevenly
    # when the nudged worker is slow to be scheduled: 8/8 usually, 1/15 rarely.)
    assert set(totals) == pids and min(totals.values()) >= 12, totals


def test_new_connections_go_to_the_worker_whose_clients_left(serve):
    server = serve("supervised:app", "--workers", "2")
    _serving_pids(server, 2)
    emptied, other, kept = _empty_one_worker(server, 8)
    more, counts = _hold_connections(server, 5)
    try:
        # Taking turns would leave 6 or 7 against 2 or 3; the load decides. (The
        # first may still go to the fuller worker if it has the kernel's turn.)
        totals = Counter({other: len(kept)}) + counts
        assert abs(totals[emptied] - totals[other]) <= 1, (len(kept), counts)
    finally:
        for sock in kept + more:
            sock.close()


def test_a_worker_that_stepped_aside_takes_the_connections_a_stuck_sibling_leaves(serve):
    """The worker holding more leaves waiting connections to the least loaded
    one, but only for a moment: if that one never comes, it takes them."""
    server = serve("supervised:app", "--workers", "2")
    _serving_pids(server, 2)
    stuck, busy, kept = _empty_one_worker(server, 20)  # the stuck one holds none
    waiting: list[socket.socket] = []
    os.kill(stuck, signal.SIGSTOP)
    os.kill(busy, signal.SIGSTOP)
    try:
        waiting += [server.connect() for _ in range(4)]  # queued while neither runs
        os.kill(busy, signal.SIGCONT)  # it holds 8 or more above the stuck one: it steps aside
        assert [_pid_of_one_request(sock) for sock in waiting] == [busy] * 4
    finally:
        os.kill(stuck, signal.SIGCONT)
        os.kill(busy, signal.SIGCONT)
        for sock in kept + waiting:
            sock.close()


def _pid_of_a_closed_connection(server, target: str = "/pid") -> int:
    """One request over a fresh connection that says Connection: close; the pid that answered."""
    with contextlib.closing(server.connect()) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode())
        status, _, body = ResponseReader(sock).read()
    assert status == 200
    return int(body)


def test_at_low_load_one_connection_after_another_goes_to_the_same_warm_worker(serve):
    server = serve("supervised:app", "--workers", "2", workers=2)
    _serving_pids(server, 2)
    pids: Counter = Counter()
    for _ in range(20):
        time.sleep(0.02)  # the worker that answered is waiting for connections again
        pids[_pid_of_a_closed_connection(server)] += 1
    # Taking turns, as forkserve did before, splits them 10/10. (A connection that
    # comes while the warm worker is not yet back in epoll goes to the other.)
    assert max(pids.values()) >= 17, pids


def test_a_client_that_connects_again_at_once_still_finds_the_warm_worker(serve):
    """As wrk does: the next connect comes as soon as the answer is read, while the
    worker that sent it still runs the app's closing work (after_work:app spins
    0.2 ms in close(), as Django's request_finished handlers take time); the kernel
    then wakes the other worker, which leaves the connection to the warm one."""
    server = serve("after_work:app", "--workers", "2", workers=2)
    _serving_pids(server, 2)
    batches = []
    for _ in range(5):  # a busy machine can keep the warm worker off a core past WARM_WAIT
        batch = Counter(_pid_of_a_closed_connection(server, "/?0.0002") for _ in range(30))
        batches.append(sorted(batch.values()))
        if max(batch.values()) >= 27:
            break
    # Without leaving it to the warm worker they alternate: about 15 of 30 each.
    assert max(batch[-1] for batch in batches) >= 27, batches


def test_a_busy_warm_worker_leaves_the_next_connection_to_its_idle_sibling(serve):
    server = serve("slow_pid:app", "--workers", "2", workers=2)
    workers = _serving_pids(server, 2)
    _pid_of_a_closed_connection(server, "/?0")  # warms one of them
    time.sleep(0.02)
    with contextlib.closing(server.connect()) as slow:
        slow.sendall(b"GET /?5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert wait_until(lambda: any(_asleep(pid) for pid in workers), 5)  # in the app's time.sleep()
        (busy,) = [pid for pid in workers if _asleep(pid)]
        assert _pid_of_a_closed_connection(server, "/?0") == workers.difference({busy}).pop()
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # the slow one is still in the app
            slow.recv(1)
        slow.setblocking(True)
        status, _, body = ResponseReader(slow).read()
        assert (status, int(body)) == (200, busy)
