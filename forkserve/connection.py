"""One client connection's phases: bytes in -> parser -> app -> keep-alive, never blocking.

The worker's event loop calls ``on_readable()`` when the socket has data.
Everything a slow client can drag out happens there, without blocking:
collecting the request head, the first part of the body, and the rest of
a body the app left unread. The app runs only once its head is complete
and its body is in (or its first ``body_prebuffer`` bytes are, or the
client waits for ``100 Continue``), so a client that sends one byte a
second holds a socket, never the worker. While the app runs, the request
is ``handler.serve()``'s, and body reads and response writes wait on this
one socket through the connection's ``Transport`` (the worker serves one
request at a time).

Phases of a connection and what bounds each (outside APP, the worker's
sweep expires the connection once its deadline passes, through ``expired()``)::

    phase       waiting for                                bound, and what the client gets past it
    HEAD        a request head (idle between requests)     keepalive while idle: silent close;
                                                           header_timeout from the first byte:
                                                           408, then LINGER
    BODY_START  the body, up to body_prebuffer bytes       header_timeout from the head's end:
                                                           408, then LINGER
    APP         the app, which blocks on this socket       io_timeout per stalled recv/send: close;
                                                           body_min_rate for the body the app
                                                           reads, after a header_timeout grace:
                                                           408 (close if the response began)
    DRAIN       the end of a body the app did not read     io_timeout, and DRAIN_LIMIT bytes
    LINGER      nothing: answered and closing, input is    LINGER_SECONDS, and LINGER_LIMIT bytes
                read and discarded
    CLOSED      -                                          -

With --threads, a request thread and the loop share the socket, and a
response has exactly one writer (see transport.py). ``abort()`` (the
loop, past --timeout) marks the connection aborted: if the thread has not
written, the loop sends the 504 with one non-blocking send (never blocking
the loop) and shuts the socket down; if the thread has, the loop writes
nothing and the thread's next write stops with ClientGone.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

from .handler import After, log_aborted, send_error, serve
from .http.errors import HTTPError
from .http.parser import Request, RequestParser
from .http.response import simple_response
from .proxy import parse_proxy_protocol, starts_proxy_header
from .service import Host, Service
from .transport import RECV_SIZE, Transport
from .wsgi import Exchange

DRAIN_LIMIT = 1 << 20  # unread body bytes skipped to reuse a connection; past it, close
LINGER_SECONDS = 2.0  # how long a closing connection's leftover input is discarded
LINGER_LIMIT = 1 << 20  # how much of it at most; past it, close (a reset then costs nothing owed)


class Phase(Enum):
    PROXY = "proxy"
    HEAD = "head"
    BODY_START = "body-start"
    APP = "app"
    DRAIN = "drain"
    LINGER = "linger"
    CLOSED = "closed"

    # Members are singletons: hash by identity. Enum's own __hash__ is Python
    # code, and advance() looks a phase up twice per request.
    __hash__ = object.__hash__


# Looking a member up on an Enum class runs Python code (Python 3.11; about
# 90 ns), and every request checks a few phases: read once, as module globals.
PROXY, HEAD, BODY_START, APP = Phase.PROXY, Phase.HEAD, Phase.BODY_START, Phase.APP
DRAIN, LINGER, CLOSED = Phase.DRAIN, Phase.LINGER, Phase.CLOSED
NEXT = After.NEXT


class Connection:
    """One client socket through its phases; the request itself is ``handler.serve()``'s."""

    def __init__(
        self, sock: socket.socket, base_environ: dict[str, Any], service: Service, host: Host
    ) -> None:
        self.sock = sock
        self.base_environ = base_environ
        self.peer = f"{base_environ['REMOTE_ADDR']}:{base_environ['REMOTE_PORT']}"  # logs, heartbeat
        self.service = service
        self.host = host
        self.parser = RequestParser(service.limits)
        self.transport = transport = Transport(sock, self.parser, service, host)
        self.tls = transport.tls
        self.phase = HEAD
        self.idle = False  # between requests, before the next head's first byte
        self.deadline = time.monotonic() + service.header_timeout
        self.request: Request | None = None  # the request being served
        self.early = transport.early  # body bytes collected here before the app ran, read there
        self.drained = 0  # unread body bytes discarded after the response
        self.exchange: Exchange | None = None  # the response being sent
        self.lingered = 0  # bytes discarded while lingering
        proxy = service.proxy
        self.trusted = proxy is not None and proxy.trusts(base_environ["REMOTE_ADDR"])
        if service.proxy_protocol is not None and service.proxy_protocol.trusts(base_environ["REMOTE_ADDR"]):
            self.phase = PROXY
            self.proxy_header = bytearray()

    @property
    def aborted(self) -> bool:
        """Timed out in its request thread; the worker is replacing itself."""
        return self.transport.aborted

    # -- event loop entry points -----------------------------------------

    def on_readable(self) -> bool:
        """Read what arrived and serve every request it completes; False to close."""
        try:
            # Plain sockets skip recv()'s TLS bookkeeping: this runs once per request.
            data = self.transport.recv() if self.tls else self.sock.recv(RECV_SIZE)
        except self.transport.waits.read:
            return True
        except OSError as exc:  # a failed TLS handshake lands here too
            return self.client_left(str(exc))
        if not data:
            return self.client_left("closed")
        if self.phase is LINGER:  # discard: we already answered and are closing
            self.lingered += len(data)
            return self.lingered <= LINGER_LIMIT
        try:
            if self.phase is PROXY:
                data = self.take_proxy_header(data)
                if not data:
                    return True
            self.parser.feed(data)
            return self.advance()
        except HTTPError as error:
            return self.reject(error)
        except Exception:
            # A bug here must cost one connection, never the worker.
            self.service.log.exception("%s: internal error on this connection", self.peer)
            return False

    def take_proxy_header(self, data: bytes) -> bytes:
        """Read a PROXY protocol header, if one comes; returns the bytes after it ("" while incomplete)."""
        self.proxy_header += data
        starts = starts_proxy_header(self.proxy_header, self.service.proxy_versions)
        if starts is None:
            return b""
        if not starts:  # plain HTTP from a proxy that sends no header on this connection
            rest = bytes(self.proxy_header)
            self.proxy_header.clear()
            self.phase = HEAD
            return rest
        result = parse_proxy_protocol(bytes(self.proxy_header))
        if result is None:
            return b""
        consumed, client = result
        if client is not None:
            self.base_environ = {**self.base_environ, "REMOTE_ADDR": client[0], "REMOTE_PORT": client[1]}
            self.peer = f"{client[0]}:{client[1]}"
        rest = bytes(self.proxy_header[consumed:])
        self.proxy_header.clear()
        self.phase = HEAD
        return rest

    def client_left(self, how: str) -> bool:
        """The client went away; worth a debug line only if it left a request unfinished."""
        if self.phase is not LINGER and (self.parser.buffer or self.phase is not HEAD):
            self.service.log.debug("%s: client left mid-request (%s)", self.peer, how)
        return False

    def advance(self) -> bool:
        """Go through the phases as far as the buffered bytes allow; False to close."""
        while (step := STEPS.get(self.phase)) is not None and step(self):
            pass
        return self.phase is not CLOSED

    def expired(self, now: float) -> bool:
        """Has the deadline passed? A request left half-sent first gets a 408 (then lingers)."""
        if now < self.deadline:
            return False
        phase = self.phase
        begun = phase is BODY_START or (phase is HEAD and not self.idle and self.parser.buffer)
        if not begun:
            return True  # idle keep-alive, a lingering close, or no byte yet: close silently
        self.service.log.info("%s: 408 Request Timeout: the request stalled", self.peer)
        self.transport.send_once(
            simple_response(408, "Request Timeout", b"Request Timeout\n", self.service.server_headers())
        )
        return self.closed_after_linger()

    def closed_after_linger(self) -> bool:
        """Linger after an answer; True if the socket could not even be shut down (close it)."""
        self.linger()
        return self.phase is CLOSED

    def close(self) -> None:
        self.phase = CLOSED
        try:  # noqa: SIM105 (contextlib.suppress would make an object per closed connection)
            self.sock.close()
        except OSError:
            pass

    # -- the phases; each returns True when it moved on, False to wait ---

    def take_head(self) -> bool:
        parser = self.parser
        request = parser.next_request()
        if request is None:
            if self.idle and parser.buffer:
                # The next head has begun: from now on it has header_timeout.
                self.idle = False
                self.deadline = time.monotonic() + self.service.header_timeout
            return False
        self.request = request
        self.idle = False
        if parser.body_complete or request.expect_continue:
            return self.start_app(request)
        self.phase = BODY_START
        self.deadline = time.monotonic() + self.service.header_timeout
        return True

    def start_body(self) -> bool:
        """Collect the body's first bytes; run the app once enough are in."""
        parser, early, want = self.parser, self.early, self.service.body_prebuffer
        while len(early) < want:
            data = parser.read_body(want - len(early))
            if not data:
                break  # None: wait for more; b"": the body is complete
            early += data
        if not parser.body_complete and len(early) < want:
            return False
        assert self.request is not None
        return self.start_app(self.request)

    def drain(self) -> bool:
        """Discard a body the app left unread, so it is never parsed as a request."""
        parser = self.parser
        left = parser.body_left()
        if left is not None and self.drained + left > DRAIN_LIMIT:
            return self.linger()
        while (data := parser.read_body(-1)) is not None:
            if not data:
                return self.wait_for_next()
            self.drained += len(data)
            if self.drained > DRAIN_LIMIT:
                return self.linger()
        return False

    def wait_for_next(self) -> bool:
        """Wait, idle, for the next request on this connection."""
        self.parser.start_next()
        self.phase = HEAD
        self.idle = True
        self.request = None
        self.deadline = time.monotonic() + self.service.keepalive
        return bool(self.parser.buffer)  # go on only if a pipelined request is waiting

    def linger(self) -> bool:
        """Close our side but keep reading a little, so the client sees our answer.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy the response before the client reads it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.phase = CLOSED
            return False
        self.phase = LINGER
        self.lingered = 0
        self.deadline = time.monotonic() + LINGER_SECONDS
        return False

    def end(self) -> bool:
        """Close after a response: gently if the client may still be sending.

        It may be when bytes of a body or of a next request are buffered, and
        whenever the server closes a connection its client asked to keep (a
        leaving worker's ``Connection: close``): that client may have sent
        its next request before our answer reached it. Unread, that request
        would make close() reset the connection, and a reset throws away the
        part of our response still queued to send.
        """
        request = self.request
        if (
            self.parser.buffer
            or not self.parser.body_complete
            or (request is not None and request.keep_alive and self.service.keepalive > 0)
        ):
            return self.linger()
        self.phase = CLOSED
        return False

    # -- one request -----------------------------------------------------

    def start_app(self, request: Request) -> bool:
        """Run the app here, or hand the connection to a request thread (--threads)."""
        dispatch = self.service.dispatch
        if dispatch is None or self.transport.in_thread:
            return self.run(request)
        self.phase = APP
        dispatch(self, request)
        return False

    def run_in_thread(self, request: Request) -> None:
        """In a request thread: serve this request and any complete ones behind it."""
        self.transport.in_thread = True
        try:
            if self.run(request):
                self.advance()
        except HTTPError as error:
            self.reject(error)
        except Exception:
            self.service.log.exception("%s: internal error on this connection", self.peer)
            self.close()
        finally:
            self.transport.in_thread = False

    def abort(self) -> None:
        """From the worker's loop: this request ran past --timeout in its thread.

        The thread cannot be stopped. If it has not written yet, the loop
        takes the socket: one non-blocking send of the 504, then shutdown.
        If it has, the response is the thread's: the loop writes nothing,
        and the thread's next write ends it (see the module docstring).
        """
        request = self.request
        if request is not None:
            log_aborted(self.service, self.peer, request)
        if not self.transport.take_over():
            return
        self.transport.send_once(
            simple_response(504, "Gateway Timeout", b"request timed out\n", self.service.server_headers())
        )
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def run(self, request: Request) -> bool:
        """Serve one request, then pick the phase that follows it."""
        self.phase = APP
        after = serve(self, request)  # it beats the heartbeat as the request ends
        self.early.clear()
        if after is not NEXT or self.transport.broken:
            return self.close_after(after)
        if self.parser.body_complete:
            return self.wait_for_next()
        if request.expect_continue and not self.transport.continue_sent:
            return self.end()  # the client waits for 100 Continue: its body may never come
        self.phase = DRAIN
        self.drained = 0
        self.deadline = time.monotonic() + self.service.io_timeout
        return True

    def close_after(self, after: After) -> bool:
        """End the connection as the request's outcome asks; False (a lingering one stays watched)."""
        if after is After.NEXT or after is After.CLOSE:
            return self.end()
        if after is After.LINGER:
            return self.linger()
        if after is After.REFUSE:
            error, exchange = self.transport.body_error, self.exchange
            assert error is not None and exchange is not None
            self.refuse_body(error, answered=exchange.head is not None)
            return False
        self.phase = CLOSED  # the client is gone
        return False

    def reject(self, error: HTTPError) -> bool:
        """Answer a request that broke the protocol, then close."""
        if self.phase is DRAIN:  # its response is already out: just close
            return self.refuse_body(error, answered=True)
        self.service.log.info("%s: %d %s: %s", self.peer, error.status, error.phrase, error.reason)
        if self.service.metrics is not None:
            self.service.metrics.refused(error.status)
        send_error(
            self.transport,
            self.service,
            error.status,
            error.phrase,
            f"{error.phrase}: {error.reason}\n".encode(),
        )
        self.linger()
        return self.phase is not CLOSED

    def refuse_body(self, error: HTTPError, answered: bool) -> bool:
        """A body broke the framing: answer if nothing was sent yet, and close."""
        if not answered:
            return self.reject(error)
        self.service.log.info("%s: closing after a bad request body: %s", self.peer, error.reason)
        self.linger()
        return self.phase is not CLOSED


# What advance() runs in each phase that reads buffered bytes. A table of plain
# functions, not of bound methods held by each connection: those would tie every
# connection into a reference cycle, left for the garbage collector to find.
STEPS: dict[Phase, Callable[[Connection], bool]] = {
    HEAD: Connection.take_head,
    BODY_START: Connection.start_body,
    DRAIN: Connection.drain,
}
