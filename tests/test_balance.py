"""Connections spread over the workers: the scoreboard's rule, then real workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import Counter

import pytest
from conftest import ResponseReader, wait_until

from forkserve.balance import ACCEPT_MAX, STEP_ASIDE_MARGIN, Scoreboard, Share, fair_share
from forkserve.sockets import Address, Listener


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
    unix.listen()
    with unix:
        assert Listener(unix, Address(family=socket.AF_UNIX, path=str(tmp_path / "s"))).waiting() is None


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
    """Ask over fresh connections (closed at once) until every worker has answered."""
    seen: set[int] = set()

    def ask() -> bool:
        with contextlib.closing(server.connect()) as sock:
            seen.add(_pid_of_one_request(sock))
        return len(seen) == workers

    assert wait_until(ask, 10)
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
