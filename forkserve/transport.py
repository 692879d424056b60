"""The client socket while the app runs: blocking body reads and response writes.

The app runs only after ``Connection`` has collected its request head (and
the body's first bytes) without blocking. From then on the app's reads of
``wsgi.input`` and the response's writes wait on this one socket, each stall
bounded by ``io_timeout``, and the body the app waits for by
``body_min_rate`` (Apache mod_reqtimeout's MinRate): the client has
``header_timeout`` plus one second for every ``body_min_rate`` bytes it has
sent since the app first waited; the clock runs only while the app is
waiting, so a slow app never counts against its client.

With --threads, a response has exactly one writer. A request thread owns
the socket from its first write (``claim()``, ``100 Continue`` included);
until then the worker's loop may take it over (``take_over()``, past
--timeout): the thread then never writes again, and the loop never waits
on the lock for longer than a flag check.

Socket timeouts are done with ``poll`` on a non-blocking socket rather than
``settimeout()``, which would add a ``poll`` before every ``recv``/``send``.
TLS sockets say "read first" or "write first" with their own exceptions,
and may hold decrypted bytes that epoll never announces: ``recv()`` and the
waits below handle both.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from typing import IO

from .http.errors import HTTPError
from .http.parser import RequestParser
from .service import Host, Service
from .tls import PLAIN_WAITS, is_tls, tls_waits

RECV_SIZE = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientGone(Exception):
    """The client closed the connection or stalled past the I/O timeout."""


class BodyTooSlow(ClientGone):
    """The body the app reads arrives slower than --body-min-rate: 408 if nothing was answered."""


class Transport:
    """One connection's socket as the app's request sees it (``wsgi.Transport``, ``wsgi.input``)."""

    # Created with every connection and used on every request: slots keep both cheap.
    __slots__ = (
        "_poller",
        "aborted",
        "body_bytes",
        "body_clock",
        "body_error",
        "broken",
        "continue_sent",
        "early",
        "expect_continue",
        "host",
        "in_thread",
        "owner_lock",
        "parser",
        "responding",
        "service",
        "sock",
        "tls",
        "waits",
    )

    def __init__(self, sock: socket.socket, parser: RequestParser, service: Service, host: Host) -> None:
        self.sock = sock
        self.parser = parser  # the connection's: body bytes the app reads are parsed as they come
        self.service = service
        self.host = host
        self.tls = is_tls(sock)
        # A TLS socket that must read (or write) before it can go on says so with
        # ssl's own errors rather than BlockingIOError.
        self.waits = tls_waits() if self.tls else PLAIN_WAITS
        self.early = bytearray()  # body bytes the connection collected before the app ran
        self.expect_continue = False  # the request waits for 100 Continue before its body
        self.continue_sent = False
        self.body_error: HTTPError | None = None  # a framing error met while the app read
        self.broken = False  # the client vanished while the app read its body
        self.body_clock = 0.0  # when the app first waited for body bytes (0: not yet)
        self.body_bytes = 0  # body bytes received since then
        self._poller: select.poll | None = None
        self.in_thread = False  # being served by a request thread right now
        self.aborted = False  # timed out in its thread; the worker is replacing itself
        self.responding = False  # --threads: the thread has written, so it owns the socket
        self.owner_lock = threading.Lock() if service.dispatch is not None else None

    @property
    def closing(self) -> bool:
        """Is the worker leaving? Then the next response head says Connection: close."""
        return self.host.closing

    def start(self, expect_continue: bool) -> None:
        """A new request is about to run: forget the last one's body and writer."""
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.body_error = None
        self.broken = False
        self.responding = False
        self.body_clock = 0.0

    # -- reading ---------------------------------------------------------

    def recv(self) -> bytes:
        data = self.sock.recv(RECV_SIZE)
        if self.tls and data:
            # TLS may hold decrypted bytes that epoll will never announce.
            while pending := self.sock.pending():  # type: ignore[attr-defined]
                data += self.sock.recv(pending)
        return data

    def receive_body(self, size: int) -> bytes:
        """Decoded body bytes (b"" at the end), waiting for the client if needed."""
        early = self.early
        if early:
            if 0 <= size < len(early):
                data = bytes(early[:size])
                del early[:size]
            else:
                data = bytes(early)
                early.clear()
            return data
        parser = self.parser
        if not self.continue_sent:
            self.continue_sent = True
            if self.expect_continue and not parser.buffer:
                self.send(CONTINUE)
        while True:
            try:
                body = parser.read_body(size)
            except HTTPError as error:
                self.body_error = error
                raise
            if body is not None:
                return body
            parser.feed(self.recv_waiting())

    def body_deadline(self) -> float | None:
        """When the body the app waits for falls behind --body-min-rate (None: no bound)."""
        rate = self.service.body_min_rate
        if not rate:
            return None
        if not self.body_clock:
            self.body_clock = time.monotonic()
            self.body_bytes = 0
        return self.body_clock + self.service.header_timeout + self.body_bytes / rate

    def recv_waiting(self) -> bytes:
        while True:
            try:
                data = self.recv()
            except self.waits.read:
                self.wait(select.POLLIN, self.body_deadline())
                continue
            except self.waits.tls_write:
                self.wait(select.POLLOUT)
                continue
            except OSError as exc:
                self.broken = True
                raise ClientGone(str(exc)) from None
            if not data:
                self.broken = True
                raise ClientGone("closed while sending the body")
            self.body_bytes += len(data)
            return data

    # -- writing ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.in_thread:
            self.claim()
        try:
            sent = self.sock.send(data)
        except self.waits.either:
            sent = 0
        except OSError as exc:
            raise ClientGone(str(exc)) from None
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        event = select.POLLOUT
        while view:
            self.wait(event)
            try:
                view = view[self.sock.send(view) :]
            except self.waits.write:
                event = select.POLLOUT
            except self.waits.tls_read:  # TLS renegotiation: the peer must speak first
                event = select.POLLIN
            except OSError as exc:
                raise ClientGone(str(exc)) from None

    def send_once(self, data: bytes) -> None:
        """One non-blocking send attempt, for the loop: what does not fit is lost (we close)."""
        with contextlib.suppress(OSError):  # ssl.SSLError and BlockingIOError included
            self.sock.send(data)

    def sendfile(self, file: IO[bytes], offset: int, count: int) -> int:
        if self.in_thread:
            self.claim()
        if self.tls or not self.service.sendfile:
            return self.copy_file(file, offset, count)
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

    def copy_file(self, file: IO[bytes], offset: int, count: int) -> int:
        """Read and send: os.sendfile would bypass TLS, or is turned off (--no-sendfile)."""
        sent = 0
        fd = file.fileno()
        while sent < count:
            data = os.pread(fd, min(RECV_SIZE, count - sent), offset + sent)
            if not data:
                break
            self.send(data)
            sent += len(data)
        return sent

    def wait(self, event: int, slow_after: float | None = None) -> None:
        """Wait until the socket is ready, beating the heartbeat; ClientGone past the timeout.

        ``slow_after``: when a body the app reads has fallen behind
        --body-min-rate (BodyTooSlow then, unless the I/O timeout comes first).
        """
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        self._poller.modify(self.sock, event)
        timeout = self.service.io_timeout
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise ClientGone(f"no progress for {timeout:g}s")
            if slow_after is not None:
                if now >= slow_after:
                    self.broken = True
                    rate = self.service.body_min_rate
                    raise BodyTooSlow(f"request body slower than {rate} bytes/s")
                left = min(left, slow_after - now)
            if self._poller.poll(min(1000, max(1, int(left * 1000)))):
                return
            self.service.heartbeat()  # waiting on the client is not a stuck app

    # -- one writer per response (--threads) -----------------------------

    def claim(self) -> None:
        """In a request thread, before each write: own the socket, unless the loop took it."""
        if not self.responding:
            assert self.owner_lock is not None
            with self.owner_lock:
                if not self.aborted:
                    self.responding = True
        if self.aborted:
            raise ClientGone("aborted past the timeout")

    def take_over(self) -> bool:
        """From the loop, past --timeout: mark the request aborted; may the loop answer it?

        Only if its thread has not written: then the response is the loop's.
        """
        lock = self.owner_lock
        assert lock is not None  # only request threads are aborted
        with lock:
            self.aborted = True
            return not self.responding
