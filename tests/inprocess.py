"""In-process harness: one ``Connection`` and the WSGI layer over ``socket.socketpair()``.

No subprocess, no sleeps. The worker, its ``Service`` and the connection are
built the way a worker builds them (``Worker.make_service``,
``Worker.client``); the test writes the client's bytes, then calls
``on_readable()`` as the worker's loop does when epoll reports the socket.
The sync worker answers a request before ``on_readable()`` returns, so the
response is already in the client's socket when the test reads it.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterable
from typing import Any

from conftest import ResponseReader

from forkserve.balance import Scoreboard
from forkserve.connection import Connection
from forkserve.heartbeat import Heartbeats
from forkserve.settings import Settings
from forkserve.worker import Worker

App = Callable[..., Iterable[bytes]]
SERVER = ("127.0.0.1", "8000")


def make_worker(app: App, **settings: Any) -> Worker:
    """A worker as it stands once serving begins, without its loop: its Service is built."""
    worker = Worker(1, Settings(**settings), [], Heartbeats().claim(), Scoreboard().claim(), app)
    worker.make_service(app)
    return worker


class Client:
    """The client's end of one connection, and the server's side driven by hand."""

    def __init__(self, app: App, **settings: Any) -> None:
        self.worker = make_worker(app, **settings)
        ours, self.sock = socket.socketpair()
        self.sock.settimeout(5)  # a harness bug fails the test instead of hanging it
        sock, environ = self.worker.client(ours, None, SERVER, multithread=False)
        assert self.worker.service is not None
        self.connection = Connection(sock, environ, self.worker.service, self.worker)
        self.reader = ResponseReader(self.sock)

    def send(self, data: bytes) -> bool:
        """The client sends ``data``; the server reads while it is readable. False: it closes."""
        self.sock.sendall(data)
        poller = select.poll()
        poller.register(self.connection.sock, select.POLLIN)
        alive = self.connection.on_readable()
        while alive and poller.poll(0):  # what epoll would report next, without waiting
            alive = self.connection.on_readable()
        return alive

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: (status, lower-cased headers, body)."""
        return self.reader.read()

    def rest(self) -> bytes:
        """Whatever the server sends until it shuts its side down."""
        return self.reader.rest()

    def close(self) -> None:
        self.connection.close()
        self.sock.close()
