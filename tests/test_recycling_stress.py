"""Recycling under steady load loses no request: a stress test of a leaving worker.

Two workers recycle every 3-5 requests (``--max-requests 3
--max-requests-jitter 2``) while six client threads send requests over raw
sockets, so every way a request can fail is seen and named:

- three send each request on a fresh connection with ``Connection: close``;
- two send requests back to back on one keep-alive connection, and open a
  new one when a response says ``Connection: close``;
- one pipelines two requests at a time on a keep-alive connection.

What a leaving worker guarantees (and this test holds it to):

- every connection it has accepted is served; it stops watching the
  listening sockets for good, so connections still queued there are
  announced to the workers that stay (EPOLLEXCLUSIVE tells one worker);
- it never closes a keep-alive connection between requests because it is
  leaving: the next request that comes within --keep-alive is read and
  answered, with ``Connection: close``;
- the response that says ``Connection: close`` reaches the client whole:
  closing a connection its client asked to keep, the worker sends its FIN
  after the last byte and reads and discards what the client still sends
  for a moment. Closed outright with unread input (a request that crossed
  the response), the connection would be reset, and a reset throws away
  the part of the response still queued to send.

Requests the client sent before the response saying ``Connection: close``
reached it (pipelined behind it, or crossing it) get no answer, on purpose:
the worker has not run them, the connection ends cleanly right after that
response, and the client sends them again on a new connection (RFC 9112
§9.3.2; §9.3.1 allows it for idempotent requests). This test does, and
counts them as retried, not lost.

The normal run lasts about ``FORKSERVE_STRESS_SECONDS`` (default 12) seconds
and at most ``FORKSERVE_STRESS_REQUESTS`` (default 20000) requests. For a
longer hunt, for example::

    FORKSERVE_STRESS_SECONDS=300 FORKSERVE_STRESS_REQUESTS=1000000 \\
        python -m pytest tests/test_recycling_stress.py -q
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field

from forkserve.balance import Balancer, Scoreboard
from forkserve.connection import Connection
from forkserve.heartbeat import Heartbeats
from forkserve.settings import Settings
from forkserve.sockets import Address, Listener
from forkserve.worker import Worker

SECONDS = float(os.environ.get("FORKSERVE_STRESS_SECONDS", "12"))
REQUESTS = int(os.environ.get("FORKSERVE_STRESS_REQUESTS", "20000"))
TIMEOUT = 10.0  # seconds one response may take before it counts as lost
REQUEST = b"GET /pid HTTP/1.1\r\nHost: stress\r\n\r\n"
CLOSE_REQUEST = b"GET /pid HTTP/1.1\r\nHost: stress\r\nConnection: close\r\n\r\n"


class Lost(Exception):
    """A request got no (complete) response; the message names how it failed."""


@dataclass
class Tally:
    deadline: float
    ok: int = 0
    retried: int = 0  # pipelined behind a response that said close, sent again
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def more(self) -> bool:
        return time.monotonic() < self.deadline and self.ok + sum(self.failures.values()) < REQUESTS

    def count(self, ok: int = 0, retried: int = 0, failure: str = "", example: str = "") -> None:
        with self.lock:
            self.ok += ok
            self.retried += retried
            if failure:
                self.failures[failure] += 1
                if len(self.examples) < 20:
                    self.examples.append(example or failure)


class Reader:
    """Reads whole responses from one socket; every way it can fail raises Lost."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise Lost("timeout") from None
        except ConnectionResetError:
            raise Lost("reset before the response" if not self.buf else "reset mid-response") from None
        except OSError as exc:
            raise Lost(f"recv: {exc.__class__.__name__}") from None
        if not chunk:
            raise Lost("closed before the response" if not self.buf else "closed mid-response")
        self.buf += chunk

    def response(self) -> bool:
        """One response; True if it says Connection: close."""
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split()[1:2] != ["200"]:
            raise Lost(f"status line {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        length = int(headers["content-length"])
        self.buf = rest
        while len(self.buf) < length:
            self.fill()
        self.buf = self.buf[length:]
        return headers.get("connection") == "close"

    def after_close(self) -> None:
        """After a response that said close: the connection must end cleanly, and soon."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass  # the response was read whole; a reset after it loses nothing
        except TimeoutError:
            raise Lost("not closed after Connection: close") from None


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except ConnectionResetError:
        raise Lost("reset while sending") from None
    except BrokenPipeError:
        raise Lost("broken pipe while sending") from None


def close_client(address: tuple[str, int], tally: Tally) -> None:
    """One request per connection, Connection: close."""
    while tally.more():
        try:
            try:
                sock = connect(address)
            except OSError as exc:
                raise Lost(f"connect: {exc.__class__.__name__}") from None
            with sock:
                send(sock, CLOSE_REQUEST)
                reader = Reader(sock)
                if not reader.response():
                    raise Lost("no Connection: close in the answer")
                reader.after_close()
            tally.count(ok=1)
        except Lost as lost:
            tally.count(failure=str(lost), example=f"close client: {lost}")


def keepalive_client(address: tuple[str, int], tally: Tally, depth: int) -> None:
    """Requests on one keep-alive connection, ``depth`` at a time, until a response says close."""
    owed = 0  # requests pipelined behind a close, to send again
    while tally.more():
        try:
            sock = connect(address)
        except OSError as exc:
            tally.count(failure=f"connect: {exc.__class__.__name__}")
            continue
        with sock:
            reader = Reader(sock)
            closed = False
            try:
                while tally.more() and not closed:
                    batch = max(depth, owed)
                    owed = 0
                    send(sock, REQUEST * batch)
                    for i in range(batch):
                        closed = reader.response()
                        tally.count(ok=1)
                        if closed:
                            owed = batch - i - 1  # never answered: sent again on the next connection
                            tally.count(retried=owed)
                            reader.after_close()
                            break
            except Lost as lost:
                tally.count(failure=str(lost), example=f"keep-alive client (depth {depth}): {lost}")


def run_stress(address: tuple[str, int], seconds: float) -> Tally:
    tally = Tally(deadline=time.monotonic() + seconds)
    threads = [threading.Thread(target=close_client, args=(address, tally)) for _ in range(3)]
    threads += [threading.Thread(target=keepalive_client, args=(address, tally, 1)) for _ in range(2)]
    threads += [threading.Thread(target=keepalive_client, args=(address, tally, 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 4 * TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    return tally


def test_recycling_every_few_requests_loses_none(serve):
    server = serve(
        "supervised:app",
        "--workers",
        "2",
        "--max-requests",
        "3",
        "--max-requests-jitter",
        "2",
        workers=2,
    )
    tally = run_stress(server.address, SECONDS)
    recycled = server.log().count("leaving after")
    print(f"{tally.ok} answered, {tally.retried} retried, {recycled} recycled, lost: {dict(tally.failures)}")
    assert not tally.failures, f"lost {dict(tally.failures)} of {tally.ok}; e.g. {tally.examples}"
    assert tally.ok > 500
    assert recycled > 100


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_a_leaving_worker_that_had_stepped_aside_does_not_watch_the_listeners_again():
    """Closing its last connections must not end the step aside by watching the listeners.

    A leaving worker watching them again would be told of new connections
    (EPOLLEXCLUSIVE: instead of a sibling) and either take them, which
    delays its exit, or leave them waiting for the next connect.
    """
    board = Scoreboard()
    seat, sibling = board.claim(), board.claim()
    sibling.publish(0)
    server = socket.create_server(("127.0.0.1", 0))
    listener = Listener(server, Address(family=socket.AF_INET, host="127.0.0.1", port=0))
    heartbeat = Heartbeats().claim()
    worker = Worker(1, Settings(), [listener], heartbeat, seat, hello)
    service = worker.make_service(hello)
    worker.poller = select.epoll()
    worker.connections = {}
    worker.by_fd = {server.fileno(): listener}
    worker.threads = None
    worker.balancer = Balancer(worker.poller, worker.by_fd, seat, worker)
    worker.balancer.aside_until = time.monotonic() + 60  # it stepped aside, holding one connection
    ours, theirs = socket.socketpair()
    sock, environ = worker.client(ours, None, ("127.0.0.1", "80"), multithread=False)
    connection = Connection(sock, environ, service, worker)
    worker.connections[sock.fileno()] = connection
    worker.poller.register(sock.fileno(), select.EPOLLIN)
    with server, theirs:
        theirs.sendall(CLOSE_REQUEST)
        worker.leave(service)  # serves it and closes it
        assert not worker.balancer.watching
        assert worker.balancer.aside_until == 0.0
        theirs.settimeout(5)
        reply = Reader(theirs)
        assert reply.response() is True
        reply.after_close()
    worker.poller.close()


def test_a_request_crossing_a_leaving_workers_close_costs_no_part_of_the_response():
    """The client sent its next request before our Connection: close reached it.

    The leaving worker has not read that request when it closes, so it must
    close gently (FIN after the last byte, then read and discard): closed
    outright, the kernel resets the connection and drops the end of the
    response still queued to send. The client then gets all of its answer
    and a clean end, and may send the crossing request again elsewhere.
    """
    body = b"x" * (1 << 20)
    entered, released = threading.Event(), threading.Event()

    def big(environ, start_response):
        entered.set()
        released.wait(5)  # meanwhile the next request arrives, unread
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    heartbeat = Heartbeats().claim()
    worker = Worker(1, Settings(), [], heartbeat, Scoreboard().claim(), big)
    service = worker.make_service(big)
    worker.closing = True  # the worker is leaving: this response says close
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # keep the response's end queued
    client.settimeout(10)
    client.connect(server.getsockname())
    accepted, addr = server.accept()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sock, environ = worker.client(accepted, addr, ("127.0.0.1", "80"), multithread=False)
    connection = Connection(sock, environ, service, worker)

    def serve_connection() -> None:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while poller.poll(10_000) and connection.on_readable():
            pass
        connection.close()

    thread = threading.Thread(target=serve_connection)
    thread.start()
    with server, client:
        client.sendall(REQUEST)
        assert entered.wait(5)
        client.sendall(REQUEST)  # crosses the answer to the first
        released.set()
        time.sleep(0.2)  # the server sends what fits and waits for the client to read
        reader = Reader(client)
        assert reader.response() is True  # the whole body, and Connection: close
        reader.after_close()
    thread.join(15)
    assert not thread.is_alive()
