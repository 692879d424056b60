"""The master's one-shot servers (endpoints.py), driven in-process over real sockets."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

from forkserve.endpoints import MAX_REQUEST, Endpoint, Endpoints, Peer
from forkserve.heartbeat import REQUEST_TEXT_SIZE, Heartbeats


def serve_until(endpoints: Endpoints, done: threading.Event, limit: float = 5.0) -> None:
    """The master loop's part, without the master."""
    deadline = time.monotonic() + limit
    while not done.is_set() and time.monotonic() < deadline:
        readable, writable, _ = select.select(endpoints.readers(), endpoints.writers(), [], 0.05)
        endpoints.handle(readable, writable)


def ask(path: str, data: bytes, pieces: int = 1) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        step = max(1, len(data) // pieces)
        for start in range(0, len(data), step):
            sock.sendall(data[start : start + step])
            time.sleep(0.01)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def run_clients(tmp_path, respond, *requests: tuple[bytes, int]) -> list[bytes]:
    path = str(tmp_path / "ctl.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    endpoints = Endpoints()
    endpoints.add(Endpoint(listener, lambda data: data.endswith(b"\n"), respond, "test"))
    done = threading.Event()
    answers: list[bytes] = []

    def clients() -> None:
        try:
            answers.extend(ask(path, data, pieces) for data, pieces in requests)
        finally:
            done.set()

    thread = threading.Thread(target=clients)
    thread.start()
    serve_until(endpoints, done)
    thread.join(5)
    endpoints.close()
    return answers


def test_each_request_gets_its_answer_even_in_pieces(tmp_path):
    answers = run_clients(
        tmp_path, lambda data, peer: data.upper() * 1000, (b"status\n", 1), (b"reload now\n", 7)
    )
    assert answers == [b"STATUS\n" * 1000, b"RELOAD NOW\n" * 1000]


def test_a_unix_peer_is_known_by_its_credentials(tmp_path):
    seen: list[Peer] = []
    run_clients(tmp_path, lambda data, peer: seen.append(peer) or b"ok", (b"who\n", 1))
    assert seen == [Peer("unix", os.getpid(), os.getuid(), os.getgid())]


def test_a_request_too_big_is_dropped_without_an_answer(tmp_path):
    answers = run_clients(tmp_path, lambda data, peer: b"answered", (b"x" * (MAX_REQUEST + 10) + b"\n", 1))
    assert answers == [b""]


def test_a_silent_client_does_not_stop_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr("forkserve.endpoints.CLIENT_DEADLINE", 0.3)
    path = str(tmp_path / "ctl.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    endpoints = Endpoints()
    endpoint = Endpoint(listener, lambda data: data.endswith(b"\n"), lambda d, p: b"ok", "test")
    endpoints.add(endpoint)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(path)
    done = threading.Event()
    answers: list[bytes] = []
    thread = threading.Thread(target=lambda: (answers.append(ask(path, b"hi\n")), done.set()))
    thread.start()
    serve_until(endpoints, done)
    thread.join(5)
    assert answers == [b"ok"]
    done.clear()
    serve_until(endpoints, done, limit=0.6)  # past the deadline: the silent one is dropped
    assert endpoint.clients == {}
    silent.settimeout(1)
    assert silent.recv(10) == b""
    silent.close()
    endpoints.close()


def test_the_current_request_is_readable_from_another_process():
    heartbeat = Heartbeats().claim()
    assert heartbeat.current_request() is None
    pid = os.fork()
    if pid == 0:
        heartbeat.begin_request(time.monotonic(), b"GET /slow?x=1 10.0.0.7")
        os._exit(0)
    os.waitpid(pid, 0)
    line, elapsed = heartbeat.current_request()
    assert line == "GET /slow?x=1 10.0.0.7" and 0 <= elapsed < 5
    heartbeat.begin_request(time.monotonic(), b"POST /" + b"a" * 1000)
    line, _ = heartbeat.current_request()
    assert len(line) == REQUEST_TEXT_SIZE and line.startswith("POST /aaa")
    heartbeat.end_request()
    assert heartbeat.current_request() is None
