"""One client connection: bytes in -> parser -> app -> bytes out; keep-alive.

The worker's event loop calls ``on_readable()`` when the socket has data.
Request heads are collected without blocking, so a slow client costs the
worker nothing until its head is complete. Only then does the app run, and
while it runs, body reads and response writes wait on this one socket with
a timeout (the worker serves one request at a time).

Socket timeouts are done with ``poll`` on a non-blocking socket rather than
``settimeout()``, which would add a ``poll`` before every ``recv``/``send``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from . import logs
from .environ import build_environ
from .http.errors import HTTPError
from .http.parser import Limits, Request, RequestParser
from .http.response import simple_response
from .streams import InputStream
from .wsgi import Exchange

RECV_SIZE = 65536
DRAIN_LIMIT = 1 << 20  # unread body bytes skipped to reuse a connection; past it, close
LINGER_SECONDS = 2.0  # how long a closing connection's leftover input is discarded
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientGone(Exception):
    """The client closed the connection or stalled past the I/O timeout."""


class RequestAborted(BaseException):
    """Raised in the worker when the master aborts a request past --timeout.

    A BaseException so that an app's ``except Exception`` cannot swallow it.
    """


@dataclass(slots=True)
class Service:
    """What every connection of one worker shares."""

    app: Callable[..., Iterable[bytes]]
    limits: Limits
    keepalive: float
    header_timeout: float
    io_timeout: float
    server_headers: Callable[[], bytes]
    heartbeat: Callable[[], None]
    log: logging.Logger
    access_log: logging.Logger | None
    access_format: str = logs.ACCESS_FORMAT
    max_requests: int = 0  # 0: no limit
    closing: bool = False  # the worker is leaving: answer with Connection: close
    requests: int = 0


class Connection:
    def __init__(self, sock: socket.socket, base_environ: dict[str, Any], service: Service) -> None:
        self.sock = sock
        self.base_environ = base_environ
        self.service = service
        self.parser = RequestParser(service.limits)
        self.pending: Request | None = None  # head in, waiting for the body to start
        self.request: Request | None = None  # the request being served
        self.lingering = False
        self.deadline = time.monotonic() + service.header_timeout
        self.continue_sent = False
        self.body_error: HTTPError | None = None
        self._poller: select.poll | None = None

    @property
    def peer(self) -> str:
        return f"{self.base_environ['REMOTE_ADDR']}:{self.base_environ['REMOTE_PORT']}"

    # -- event loop entry points -----------------------------------------

    def on_readable(self) -> bool:
        """Read what arrived and serve every complete request; False to close."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        if self.lingering:
            return True  # discard: we already answered and are closing
        self.parser.feed(data)
        return self.serve_ready()

    def serve_ready(self) -> bool:
        """Serve the requests whose heads are complete; False to close."""
        service = self.service
        while True:
            request = self.pending
            if request is None:
                try:
                    request = self.parser.next_request()
                except HTTPError as error:
                    return self.reject(error)
                if request is None:
                    if self.parser.buffer and self.deadline > time.monotonic() + service.header_timeout:
                        self.deadline = time.monotonic() + service.header_timeout
                    return True
                # Run the app only once its body has started (or the client
                # waits for 100 Continue), so a slow sender holds no worker.
                if not self.parser.body_complete and not self.parser.buffer and not request.expect_continue:
                    self.pending = request
                    self.deadline = time.monotonic() + service.header_timeout
                    return True
            elif not self.parser.buffer:
                return True
            self.pending = None
            if not self.serve(request):
                return False
            service.heartbeat()
            self.deadline = time.monotonic() + service.keepalive

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- one request -----------------------------------------------------

    def serve(self, request: Request) -> bool:
        """Run the app for one request and send its response; False to close."""
        service = self.service
        service.requests += 1
        if service.requests == service.max_requests:
            service.closing = True  # this is the last one: say so in its response
        started = time.perf_counter()
        keep_alive = request.keep_alive and service.keepalive > 0 and not service.closing
        exchange = Exchange(request, self, service.server_headers(), keep_alive)
        self.request = request
        self.continue_sent = False
        self.body_error = None
        environ = build_environ(self.base_environ, request, InputStream(self.receive_body))
        try:
            exchange.run(service.app, environ)
        except ClientGone as exc:
            service.log.debug(
                "%s: client gone during %s %s: %s", self.peer, request.method, request.target, exc
            )
            return False
        except RequestAborted:
            if exchange.head is None:
                self.send_error(504, "Gateway Timeout", b"request timed out\n")
            raise
        except Exception:
            if self.body_error is not None:
                return self.reject(self.body_error)
            service.log.exception("Error handling %s %s from %s", request.method, request.target, self.peer)
            if exchange.head is None:
                self.send_error(500, "Internal Server Error", b"Internal Server Error\n")
            return False
        if service.access_log is not None:
            self.log_access(environ, exchange, time.perf_counter() - started)
        if not exchange.keep_alive:
            return False
        if not self.parser.body_complete and not self.drain_body():
            return False
        self.parser.start_next()
        return True

    def log_access(self, environ: dict[str, Any], exchange: Exchange, duration: float) -> None:
        status = exchange.head.status if exchange.head else 0
        line = logs.access_line(
            self.service.access_format, environ, status, exchange.sent, duration, exchange.headers
        )
        assert self.service.access_log is not None
        self.service.access_log.info(line)

    def reject(self, error: HTTPError) -> bool:
        """Answer a request that broke the protocol, then close."""
        self.service.log.info("%s: %d %s: %s", self.peer, error.status, error.phrase, error.reason)
        self.send_error(error.status, error.phrase, f"{error.phrase}: {error.reason}\n".encode())
        return self.start_lingering()

    def send_error(self, status: int, phrase: str, body: bytes) -> None:
        with contextlib.suppress(ClientGone, OSError):
            self.send(simple_response(status, phrase, body, self.service.server_headers()))

    def start_lingering(self) -> bool:
        """Close our side but keep reading a little, so the client sees our answer.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy the response before the client reads it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.lingering = True
        self.pending = None
        self.deadline = time.monotonic() + LINGER_SECONDS
        return True

    def drain_body(self) -> bool:
        """Skip the body the app did not read, so it is never parsed as a request."""
        if self.request is not None and self.request.expect_continue and not self.continue_sent:
            return False  # the client still waits for 100 Continue: its body need not come
        skipped = 0
        while not self.parser.body_complete:
            try:
                data = self.receive_body(RECV_SIZE)
            except (ClientGone, HTTPError, OSError):
                return False
            skipped += len(data)
            if skipped > DRAIN_LIMIT:
                return False
        return True

    # -- the transport used by wsgi.Exchange and wsgi.input -------------

    def receive_body(self, size: int) -> bytes:
        """Decoded body bytes (b"" at the end), waiting for the client if needed."""
        parser = self.parser
        if not self.continue_sent:
            self.continue_sent = True
            request = self.request
            if request is not None and request.expect_continue and not parser.buffer:
                self.send(CONTINUE)
        while True:
            try:
                data = parser.read_body(size)
            except HTTPError as error:
                self.body_error = error
                raise
            if data is not None:
                return data
            parser.feed(self.recv_waiting())

    def recv_waiting(self) -> bytes:
        while True:
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                self.wait(select.POLLIN)
                continue
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if not data:
                raise ClientGone("closed while sending the body")
            return data

    def send(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self.wait(select.POLLOUT)
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientGone(str(exc)) from None

    def sendfile(self, file: IO[bytes], offset: int, count: int) -> int:
        sent = 0
        out, src = self.sock.fileno(), file.fileno()
        while sent < count:
            try:
                n = os.sendfile(out, src, offset + sent, count - sent)
            except BlockingIOError:
                self.wait(select.POLLOUT)
                continue
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if n == 0:
                break  # the file shrank under us; finish() notices the shortfall
            sent += n
        return sent

    def wait(self, event: int) -> None:
        """Wait until the socket is ready, beating the heartbeat; ClientGone past the timeout."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        self._poller.modify(self.sock, event)
        deadline = time.monotonic() + self.service.io_timeout
        while not self._poller.poll(1000):
            self.service.heartbeat()  # waiting on the client is not a stuck app
            if time.monotonic() >= deadline:
                raise ClientGone(f"no progress for {self.service.io_timeout:g}s")
