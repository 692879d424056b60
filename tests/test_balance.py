"""Connections spread over the workers: the scoreboard's rule, then real workers."""

from __future__ import annotations

import contextlib
import socket
import time
from collections import Counter

from conftest import ResponseReader, wait_until

from forkserve.balance import Scoreboard


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


def test_new_connections_go_to_the_worker_whose_clients_left(serve):
    server = serve("supervised:app", "--workers", "2")
    _serving_pids(server, 2)
    held, _ = _hold_connections(server, 8)
    by_pid: dict[int, list[socket.socket]] = {}
    for sock in held:
        by_pid.setdefault(_pid_of_one_request(sock), []).append(sock)
    emptied, other = sorted(by_pid)
    for sock in by_pid[emptied]:
        sock.close()
    time.sleep(0.3)  # let the emptied worker read its clients' EOFs
    more, counts = _hold_connections(server, 5)
    try:
        # Taking turns would leave 6 or 7 against 2 or 3; the load decides. (The
        # first may still go to the fuller worker if it has the kernel's turn.)
        totals = Counter({other: len(by_pid[other])}) + counts
        assert abs(totals[emptied] - totals[other]) <= 1, (by_pid, counts)
    finally:
        for sock in by_pid[other] + more:
            sock.close()
