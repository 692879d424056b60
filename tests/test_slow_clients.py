"""Slow and stalled clients: what they get, and how little of the server they can hold.

Raw sockets to 127.0.0.1 against the real server (the sync worker), every
wait bounded; the --threads hand-over between a request thread and the
event loop is also driven in-process over a socket pair.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ResponseReader, Server
from inprocess import make_worker

from forkserve.connection import Connection
from forkserve.http.parser import RequestParser
from forkserve.transport import ClientGone
from forkserve.wsgi import Exchange


def start(tmp: Path, *args: str) -> Server:
    server = Server(
        ["basic:app", "--bind", "127.0.0.1:0", "--workers", "1", *args], tmp, tmp / "server.log", None
    )
    server.wait_ready()
    return server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        leftovers = server.shutdown()
        assert not leftovers, f"forkserve processes survived: {leftovers}"


def read_until_closed(sock: socket.socket, timeout: float = 15.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


# -- 1. a closing connection discards a bounded amount of input ----------------------------


def test_input_after_an_error_response_is_discarded_up_to_a_byte_limit(servers, tmp_path):
    server = start(tmp_path)
    servers.append(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock.connect(server.address)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")  # 400, then the server lingers
    sock.settimeout(10)
    chunk = b"x" * 65536
    sent, cap, began = 0, 512 << 20, time.monotonic()
    try:
        while sent < cap and time.monotonic() - began < 10:
            sent += sock.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.close()
    # 1 MiB discarded, plus whatever the kernels buffered on both sides; today's
    # code took everything for two seconds (gigabytes on loopback).
    assert sent < 48 << 20, f"the server accepted {sent >> 20} MiB after its error response"
    assert time.monotonic() - began < 1.5


# -- 2. 408 for a request left half-sent; silence for an idle connection -------------------


def assert_408(sock: socket.socket) -> None:
    reader = ResponseReader(sock)
    sock.settimeout(10)
    status, headers, body = reader.read()
    assert status == 408, body
    assert headers["connection"] == "close"
    assert reader.closed()


def test_stalled_head_gets_408(servers, tmp_path):
    server = start(tmp_path, "--header-timeout", "1")
    servers.append(server)
    sock = server.connect()
    began = time.monotonic()
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
    assert_408(sock)
    assert 0.9 < time.monotonic() - began < 5
    assert server.wait_for_log(r"408 Request Timeout")


def test_stalled_next_head_on_a_keep_alive_connection_gets_408(servers, tmp_path):
    server = start(tmp_path, "--header-timeout", "1", "--keep-alive", "5")
    servers.append(server)
    sock = server.connect()
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = ResponseReader(sock)
    assert reader.read()[0] == 200
    sock.sendall(b"GET /hel")
    assert_408(sock)


def test_stalled_body_before_the_app_gets_408(servers, tmp_path):
    server = start(tmp_path, "--header-timeout", "1")
    servers.append(server)
    sock = server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    assert_408(sock)


def test_idle_keep_alive_connection_still_closes_silently(servers, tmp_path):
    server = start(tmp_path, "--header-timeout", "1", "--keep-alive", "1")
    servers.append(server)
    sock = server.connect()
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = ResponseReader(sock)
    assert reader.read()[0] == 200
    began = time.monotonic()
    assert read_until_closed(sock) == b""
    assert time.monotonic() - began < 5
    never = server.connect()  # and a connection that never sent a byte
    assert read_until_closed(never) == b""


# -- 3. a minimum body rate while the app reads -----------------------------------------------


def test_body_slower_than_the_minimum_rate_gets_408_and_frees_the_worker(servers, tmp_path):
    server = start(tmp_path, "--header-timeout", "2", "--io-timeout", "30")
    servers.append(server)
    sock = server.connect()
    size = 1 << 20
    sock.sendall(b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    sock.sendall(b"a" * 65536)  # the prebuffered part arrives at once; the app starts reading
    other: dict[str, object] = {}

    def normal_client() -> None:
        response = requests.get(server.url + "/hello", timeout=20)
        other["status"], other["at"] = response.status_code, time.monotonic()

    began = time.monotonic()
    helper = threading.Thread(target=normal_client)
    helper.start()
    answer = b""
    while time.monotonic() - began < 20:  # ~100 B/s, until the server answers
        if select.select([sock], [], [], 0.1)[0]:
            answer = read_until_closed(sock)
            break
        with contextlib.suppress(OSError):
            sock.send(b"b" * 10)
    took = time.monotonic() - began
    helper.join(25)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert took < 8, took  # 2 s grace plus 1/500 s per byte sent at 100 B/s: about 2.5 s
    assert other.get("status") == 200
    assert server.wait_for_log(r"slower than 500 bytes/s")


def test_body_at_a_fair_rate_is_served(servers, tmp_path):
    server = start(tmp_path, "--header-timeout", "1", "--body-prebuffer", "0")
    servers.append(server)
    sock = server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n")
    for _ in range(15):  # 1000 B/s for 3 s: above the 500 B/s minimum
        sock.sendall(b"c" * 200)
        time.sleep(0.2)
    answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"c" * 3000)


# -- 4. --threads: one writer per response, and the loop never blocks on it ----------------


def test_request_past_timeout_in_a_thread_gets_one_504_while_other_requests_complete(servers, tmp_path):
    server = start(tmp_path, "--threads", "2", "--timeout", "2", "--graceful-timeout", "3")
    servers.append(server)
    slow = server.connect()
    slow.sendall(b"GET /sleep?4 HTTP/1.1\r\nHost: x\r\n\r\n")
    began = time.monotonic()
    statuses = []
    while time.monotonic() - began < 2.5:  # the other thread goes on serving meanwhile
        statuses.append(requests.get(server.url + "/hello", timeout=10).status_code)
    answer = read_until_closed(slow)
    assert answer.startswith(b"HTTP/1.1 504 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # the late thread wrote nothing after it
    assert time.monotonic() - began < 6
    assert statuses and set(statuses) == {200}


def make_connection(sock: socket.socket, io_timeout: float = 5.0) -> Connection:
    """A connection of a worker with request threads (so a response has one writer to decide)."""
    worker = make_worker(
        lambda environ, start_response: [], threads=2, header_timeout=1.0, io_timeout=io_timeout
    )
    assert worker.service is not None
    return Connection(sock, {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "1"}, worker.service, worker)


def full_socket_pair() -> tuple[socket.socket, socket.socket]:
    """A non-blocking server side whose send buffer is full (the client reads nothing)."""
    ours, client = socket.socketpair()
    ours.setblocking(False)
    for size in (65536, 4096, 64, 1):
        with contextlib.suppress(BlockingIOError):
            while True:
                ours.send(b"z" * size)
    return ours, client


def test_abort_writes_the_504_without_blocking_the_loop():
    ours, client = full_socket_pair()
    connection = make_connection(ours)
    parser = RequestParser()
    parser.feed(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
    request = parser.next_request()
    assert request is not None
    connection.request = request
    connection.exchange = Exchange(request, connection.transport, b"", True)  # no response head yet
    began = time.monotonic()
    connection.abort()  # the thread has not written: the loop's one send attempt, then shutdown
    assert time.monotonic() - began < 0.5  # today's code waited up to --io-timeout (5 s)
    assert connection.aborted
    with pytest.raises(ClientGone):
        connection.transport.in_thread = True
        connection.transport.send(b"late")  # the thread may never write after that
    ours.close()
    client.close()


def test_abort_leaves_a_response_the_thread_began_to_the_thread():
    ours, client = socket.socketpair()
    ours.setblocking(False)
    connection = make_connection(ours)
    connection.transport.in_thread = True
    connection.transport.send(b"HTTP/1.1 200 OK\r\n")  # the thread owns the socket now
    connection.abort()  # from the loop: no 504 in the middle of it
    with pytest.raises(ClientGone):
        connection.transport.send(b"rest")  # and the thread's next write ends it
    ours.close()
    client.settimeout(5)
    assert read_until_closed(client) == b"HTTP/1.1 200 OK\r\n"
    client.close()
