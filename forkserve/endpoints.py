"""The master's own small servers: one request in, one answer out, then close.

The metrics page (``--metrics-bind``) and the control socket (``forkserve
ctl``) are served by the master itself, so a stuck or busy pool cannot hide
them. The master must never block on one of their clients, so each
``Endpoint`` is non-blocking and driven from the master's loop: the loop
adds ``Endpoints.readers()``/``writers()`` to the descriptors it waits on
and hands what is ready to ``Endpoints.handle()``. A request is read until
its ``complete`` test says it is whole (a blank line for HTTP, a newline for
a control command), answered by ``respond`` and written out; a client that
is too slow or too big is dropped. Children close these sockets right
after the fork (``Endpoints.close``): a worker holding a copy of the control
socket would keep it looking alive after the master died.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLIENT_DEADLINE = 5.0  # seconds a client has to send its request and take the answer
MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 64  # beyond this, new clients wait in the listen queue


@dataclass(frozen=True)
class Peer:
    """Who is asking: the address, and for a unix socket the peer's credentials."""

    address: str
    pid: int = 0
    uid: int = -1
    gid: int = -1


Respond = Callable[[bytes, Peer], bytes]


@dataclass
class Client:
    sock: socket.socket
    peer: Peer
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    answer: memoryview | None = None


class Endpoint:
    """A listening socket whose every request gets one answer."""

    def __init__(
        self, sock: socket.socket, complete: Callable[[bytes], bool], respond: Respond, name: str
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.complete = complete
        self.respond = respond
        self.name = name
        self.clients: dict[int, Client] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> None:
        while len(self.clients) < MAX_CLIENTS:
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors or the like: the next loop turn retries
            sock.setblocking(False)
            deadline = time.monotonic() + CLIENT_DEADLINE
            self.clients[sock.fileno()] = Client(sock, peer_of(sock, address), deadline)

    def read(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        client.received += data
        if len(client.received) > MAX_REQUEST:
            self.drop(client)
        elif self.complete(bytes(client.received)):
            client.answer = memoryview(self.respond(bytes(client.received), client.peer))
            self.write(client)

    def write(self, client: Client) -> None:
        assert client.answer is not None
        try:
            sent = client.sock.send(client.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(client)
            return
        client.answer = client.answer[sent:]
        if not client.answer:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_WR)
            self.drop(client)

    def drop(self, client: Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        client.sock.close()

    def sweep(self, now: float) -> None:
        for client in [c for c in self.clients.values() if c.deadline < now]:
            self.drop(client)

    def close(self) -> None:
        for client in list(self.clients.values()):
            self.drop(client)
        self.sock.close()


class Endpoints:
    """All of the master's endpoints, as the master's loop sees them."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def add(self, endpoint: Endpoint) -> None:
        self.endpoints.append(endpoint)

    def readers(self) -> list[int]:
        fds = [e.fileno() for e in self.endpoints if len(e.clients) < MAX_CLIENTS]
        for endpoint in self.endpoints:
            fds += [fd for fd, client in endpoint.clients.items() if client.answer is None]
        return fds

    def writers(self) -> list[int]:
        return [fd for e in self.endpoints for fd, client in e.clients.items() if client.answer is not None]

    def handle(self, readable: list[int], writable: list[int]) -> None:
        for endpoint in self.endpoints:
            if endpoint.fileno() in readable:
                endpoint.accept()
            for fd in [fd for fd in readable if fd in endpoint.clients]:
                endpoint.read(endpoint.clients[fd])
            for fd in [fd for fd in writable if fd in endpoint.clients]:
                endpoint.write(endpoint.clients[fd])
            endpoint.sweep(time.monotonic())

    def close(self) -> None:
        """At the master's stop, and in a freshly forked child (closing only its copies)."""
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints = []


def peer_of(sock: socket.socket, address: object) -> Peer:
    if sock.family != socket.AF_UNIX:
        host = address[0] if isinstance(address, tuple) else str(address)
        return Peer(str(host))
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return Peer("unix")
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer("unix", pid, uid, gid)
