"""One client connection: bytes in -> parser -> app -> bytes out; keep-alive.

The worker's event loop calls ``on_readable()`` when the socket has data.
Everything a slow client can drag out happens there, without blocking:
collecting the request head, the first part of the body, and the rest of
a body the app left unread. The app runs only once its head is complete
and its body is in (or its first ``body_prebuffer`` bytes are, or the
client waits for ``100 Continue``), so a client that sends one byte a
second holds a socket, never the worker. While the app runs, body reads
and response writes wait on this one socket, each stall bounded by
``io_timeout`` (the worker serves one request at a time).

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

The body rate (Apache mod_reqtimeout's MinRate): while the app waits for
body bytes, the client has ``header_timeout`` plus one second for every
``body_min_rate`` bytes it has sent since the app first waited; the clock
runs only while the app is waiting, so a slow app never counts against
its client.

With --threads, a request thread and the loop share the socket, and a
response has exactly one writer. The thread owns it from its first write
(``claim()``, ``100 Continue`` included); until then the loop may take it
over. ``abort()`` (the loop, past --timeout) marks the connection aborted
under ``owner_lock``: if the thread has not written, the loop sends the
504 with one non-blocking send (never blocking the loop) and shuts the
socket down; if the thread has, the loop writes nothing and the thread's
next write stops with ClientGone. Either way the thread never writes
again once aborted, and the loop never waits on the lock for longer than
a flag check.

Socket timeouts are done with ``poll`` on a non-blocking socket rather than
``settimeout()``, which would add a ``poll`` before every ``recv``/``send``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any

from . import logs
from .environ import UNDERSCORED, build_environ
from .http.errors import BadRequest, HTTPError
from .http.parser import Limits, Request, RequestParser
from .http.response import simple_response
from .proxy import (
    ProxyTrust,
    apply_forwarded,
    apply_forwarder_headers,
    parse_proxy_protocol,
    starts_proxy_header,
)
from .statsd import StatsD
from .streams import EMPTY_INPUT, InputStream
from .wsgi import Exchange

RECV_SIZE = 65536
DRAIN_LIMIT = 1 << 20  # unread body bytes skipped to reuse a connection; past it, close
LINGER_SECONDS = 2.0  # how long a closing connection's leftover input is discarded
LINGER_LIMIT = 1 << 20  # how much of it at most; past it, close (a reset then costs nothing owed)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A TLS socket that needs to read (or write) before it can go on says so with
# these rather than BlockingIOError.
WANT_READ = (BlockingIOError, ssl.SSLWantReadError)
WANT_WRITE = (BlockingIOError, ssl.SSLWantWriteError)


class ClientGone(Exception):
    """The client closed the connection or stalled past the I/O timeout."""


class BodyTooSlow(ClientGone):
    """The body the app reads arrives slower than --body-min-rate: 408 if nothing was answered."""


class RequestAborted(BaseException):
    """Raised in the worker when the master aborts a request past --timeout.

    A BaseException so that an app's ``except Exception`` cannot swallow it.
    """


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
    body_prebuffer: int = 65536  # body bytes collected before the app runs
    body_min_rate: int = 500  # bytes/s a body the app reads must keep up, after a grace (0: off)
    proxy: ProxyTrust | None = None  # whose X-Forwarded-* / Forwarded headers to believe
    proxy_protocol: ProxyTrust | None = None  # who may send a PROXY protocol header (None: off)
    proxy_versions: str = "auto"  # which PROXY protocol versions: auto (both), v1 or v2
    refuse_underscored: bool = False  # header_map "refuse": 400 for header names with "_"
    sendfile: bool = True  # False (--no-sendfile): files are read and sent, never os.sendfile'd
    statsd: StatsD | None = None  # --statsd-host
    busy: Callable[[bool], None] | None = None  # --workers-max: says when a request is running
    dispatch: Callable[[Connection, Request], None] | None = None  # --threads: run in a pool
    pre_request: Callable[[Request], None] | None = None
    post_request: Callable[[Request, dict[str, Any], Exchange], None] | None = None
    closing: bool = False  # the worker is leaving: answer with Connection: close
    requests: int = 0


class Connection:
    def __init__(self, sock: socket.socket, base_environ: dict[str, Any], service: Service) -> None:
        self.sock = sock
        self.base_environ = base_environ
        self.service = service
        self.parser = RequestParser(service.limits)
        self.phase = Phase.HEAD
        self.idle = False  # between requests, before the next head's first byte
        self.deadline = time.monotonic() + service.header_timeout
        self.request: Request | None = None  # the request being served
        self.early = bytearray()  # body bytes collected before the app ran
        self.drained = 0  # unread body bytes discarded after the response
        self.continue_sent = False
        self.body_error: HTTPError | None = None  # a framing error met while the app read
        self.broken = False  # the client vanished while the app read its body
        self._poller: select.poll | None = None
        self.exchange: Exchange | None = None  # the response being sent
        self.in_thread = False  # being served by a request thread right now
        self.aborted = False  # timed out in its thread; the worker is replacing itself
        self.responding = False  # --threads: the thread has written, so it owns the socket
        self.owner_lock = threading.Lock() if service.dispatch is not None else None
        self.lingered = 0  # bytes discarded while lingering
        self.body_clock = 0.0  # when the app first waited for body bytes (0: not yet)
        self.body_bytes = 0  # body bytes received since then
        self._steps = {Phase.HEAD: self.take_head, Phase.BODY_START: self.start_body, Phase.DRAIN: self.drain}
        self.tls = isinstance(sock, ssl.SSLSocket)
        proxy = service.proxy
        self.trusted = proxy is not None and proxy.trusts(base_environ["REMOTE_ADDR"])
        if service.proxy_protocol is not None and service.proxy_protocol.trusts(base_environ["REMOTE_ADDR"]):
            self.phase = Phase.PROXY
            self.proxy_header = bytearray()

    @property
    def peer(self) -> str:
        return f"{self.base_environ['REMOTE_ADDR']}:{self.base_environ['REMOTE_PORT']}"

    @property
    def closing(self) -> bool:
        """Is the worker leaving? Then the next response head says Connection: close."""
        return self.service.closing

    # -- event loop entry points -----------------------------------------

    def on_readable(self) -> bool:
        """Read what arrived and serve every request it completes; False to close."""
        try:
            # Plain sockets skip recv()'s TLS bookkeeping: this runs once per request.
            data = self.recv() if self.tls else self.sock.recv(RECV_SIZE)
        except WANT_READ:
            return True
        except OSError as exc:  # a failed TLS handshake lands here too
            return self.client_left(str(exc))
        if not data:
            return self.client_left("closed")
        if self.phase is Phase.LINGER:  # discard: we already answered and are closing
            self.lingered += len(data)
            return self.lingered <= LINGER_LIMIT
        try:
            if self.phase is Phase.PROXY:
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

    def recv(self) -> bytes:
        data = self.sock.recv(RECV_SIZE)
        if self.tls and data:
            # TLS may hold decrypted bytes that epoll will never announce.
            while pending := self.sock.pending():  # type: ignore[attr-defined]
                data += self.sock.recv(pending)
        return data

    def take_proxy_header(self, data: bytes) -> bytes:
        """Read a PROXY protocol header, if one comes; returns the bytes after it ("" while incomplete)."""
        self.proxy_header += data
        starts = starts_proxy_header(self.proxy_header, self.service.proxy_versions)
        if starts is None:
            return b""
        if not starts:  # plain HTTP from a proxy that sends no header on this connection
            rest = bytes(self.proxy_header)
            self.proxy_header.clear()
            self.phase = Phase.HEAD
            return rest
        result = parse_proxy_protocol(bytes(self.proxy_header))
        if result is None:
            return b""
        consumed, client = result
        if client is not None:
            self.base_environ = {**self.base_environ, "REMOTE_ADDR": client[0], "REMOTE_PORT": client[1]}
        rest = bytes(self.proxy_header[consumed:])
        self.proxy_header.clear()
        self.phase = Phase.HEAD
        return rest

    def client_left(self, how: str) -> bool:
        """The client went away; worth a debug line only if it left a request unfinished."""
        if self.phase is not Phase.LINGER and (self.parser.buffer or self.phase is not Phase.HEAD):
            self.service.log.debug("%s: client left mid-request (%s)", self.peer, how)
        return False

    def advance(self) -> bool:
        """Go through the phases as far as the buffered bytes allow; False to close."""
        while (step := self._steps.get(self.phase)) is not None and step():
            pass
        return self.phase is not Phase.CLOSED

    def expired(self, now: float) -> bool:
        """Has the deadline passed? A request left half-sent first gets a 408 (then lingers)."""
        if now < self.deadline:
            return False
        phase = self.phase
        begun = phase is Phase.BODY_START or (phase is Phase.HEAD and not self.idle and self.parser.buffer)
        if not begun:
            return True  # idle keep-alive, a lingering close, or no byte yet: close silently
        self.service.log.info("%s: 408 Request Timeout: the request stalled", self.peer)
        self.send_once(
            simple_response(408, "Request Timeout", b"Request Timeout\n", self.service.server_headers())
        )
        return self.closed_after_linger()

    def closed_after_linger(self) -> bool:
        """Linger after an answer; True if the socket could not even be shut down (close it)."""
        self.linger()
        return self.phase is Phase.CLOSED

    def close(self) -> None:
        self.phase = Phase.CLOSED
        with contextlib.suppress(OSError):
            self.sock.close()

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
        self.phase = Phase.BODY_START
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
        self.phase = Phase.HEAD
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
            self.phase = Phase.CLOSED
            return False
        self.phase = Phase.LINGER
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
        self.phase = Phase.CLOSED
        return False

    # -- one request -----------------------------------------------------

    def start_app(self, request: Request) -> bool:
        """Run the app here, or hand the connection to a request thread (--threads)."""
        dispatch = self.service.dispatch
        if dispatch is None or self.in_thread:
            return self.run(request)
        self.phase = Phase.APP
        dispatch(self, request)
        return False

    def run_in_thread(self, request: Request) -> None:
        """In a request thread: serve this request and any complete ones behind it."""
        self.in_thread = True
        try:
            if self.run(request):
                self.advance()
        except HTTPError as error:
            self.reject(error)
        except Exception:
            self.service.log.exception("%s: internal error on this connection", self.peer)
            self.close()
        finally:
            self.in_thread = False

    def abort(self) -> None:
        """From the worker's loop: this request ran past --timeout in its thread.

        The thread cannot be stopped. If it has not written yet, the loop
        takes the socket: one non-blocking send of the 504, then shutdown.
        If it has, the response is the thread's: the loop writes nothing,
        and the thread's next write ends it (see the module docstring).
        """
        request = self.request
        if request is not None:
            self.log_aborted(request)
        lock = self.owner_lock
        assert lock is not None  # only request threads are aborted
        with lock:
            self.aborted = True
            if self.responding:
                return
        self.send_once(
            simple_response(504, "Gateway Timeout", b"request timed out\n", self.service.server_headers())
        )
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def claim(self) -> None:
        """In a request thread, before each write: own the socket, unless the loop took it."""
        if not self.responding:
            assert self.owner_lock is not None
            with self.owner_lock:
                if not self.aborted:
                    self.responding = True
        if self.aborted:
            raise ClientGone("aborted past the timeout")

    def run(self, request: Request) -> bool:
        """Serve one request, then pick the phase that follows it."""
        self.phase = Phase.APP
        keep_going = self.serve(request)
        self.early.clear()
        self.service.heartbeat()
        if self.phase is not Phase.APP:  # serve() already rejected or closed
            return False
        if not keep_going or self.broken:
            return self.end()
        if self.parser.body_complete:
            return self.wait_for_next()
        if request.expect_continue and not self.continue_sent:
            return self.end()  # the client waits for 100 Continue: its body may never come
        self.phase = Phase.DRAIN
        self.drained = 0
        self.deadline = time.monotonic() + self.service.io_timeout
        return True

    def serve(self, request: Request) -> bool:
        """Run the app for one request and send its response; False to close."""
        service = self.service
        service.requests += 1
        if service.max_requests and service.requests >= service.max_requests:
            service.closing = True  # this is the last one: say so in its response
        measured = service.access_log is not None or service.statsd is not None
        started = time.perf_counter() if measured else 0.0
        keep_alive = request.keep_alive and service.keepalive > 0 and not service.closing
        exchange = self.exchange = Exchange(request, self, service.server_headers(), keep_alive)
        self.continue_sent = False
        self.body_error = None
        self.broken = False
        self.responding = False
        self.body_clock = 0.0
        has_body = request.chunked or request.content_length
        body = InputStream(self.receive_body) if has_body else EMPTY_INPUT
        environ = build_environ(self.base_environ, request, body)
        underscored = environ.pop(UNDERSCORED, None)
        if underscored is not None:
            self.judge_underscored(environ, underscored)
        if self.trusted:
            apply_forwarded(environ, service.proxy)  # type: ignore[arg-type]
        if service.pre_request is not None:
            service.pre_request(request)
        if service.busy is not None:
            service.busy(True)
        try:
            exchange.run(service.app, environ)
        except BodyTooSlow as exc:
            service.log.info("%s: %s %s: %s", self.peer, request.method, request.target, exc)
            if exchange.head is None:
                self.send_error(408, "Request Timeout", b"Request Timeout: the body arrived too slowly\n")
            self.linger()  # the client is still sending: a close now would reset the answer
            return False
        except ClientGone as exc:
            service.log.debug(
                "%s: client gone during %s %s: %s", self.peer, request.method, request.target, exc
            )
            self.phase = Phase.CLOSED
            return False
        except RequestAborted:
            self.log_aborted(request)
            if exchange.head is None:
                self.send_error(504, "Gateway Timeout", b"request timed out\n")
            raise
        except Exception:
            if self.body_error is not None:
                self.refuse_body(self.body_error, answered=exchange.head is not None)
                return False
            service.log.exception("Error handling %s %s from %s", request.method, request.target, self.peer)
            if exchange.head is None:
                self.send_error(500, "Internal Server Error", b"Internal Server Error\n")
            return False
        except (SystemExit, KeyboardInterrupt) as exc:
            # The app tried to end the process: it costs this worker, never the server.
            # Answer, then leave gracefully; the master starts a replacement.
            service.log.error(
                "%r from the app in %s %s from %s; this worker will be replaced",
                exc,
                request.method,
                request.target,
                self.peer,
            )
            if exchange.head is None:
                self.send_error(500, "Internal Server Error", b"Internal Server Error\n")
            service.closing = True
            return False
        finally:
            if service.busy is not None:
                service.busy(False)
        if measured:
            self.record(environ, exchange, time.perf_counter() - started)
        if service.post_request is not None:
            service.post_request(request, environ, exchange)
        if self.body_error is not None:  # the app swallowed it: the framing is lost all the same
            self.refuse_body(self.body_error, answered=True)
            return False
        return exchange.keep_alive

    def judge_underscored(self, environ: dict[str, Any], headers: list[tuple[str, str]]) -> None:
        """Header names with "_": refused (header_map), or a trusted proxy's forwarder headers."""
        if self.service.refuse_underscored:
            raise BadRequest(f"header name {headers[0][0]!r} contains '_'")
        if self.trusted:
            apply_forwarder_headers(environ, headers, self.service.proxy)  # type: ignore[arg-type]

    def log_aborted(self, request: Request) -> None:
        self.service.log.error(
            "%s: %s %s aborted past the timeout", self.peer, request.method, request.target
        )

    def record(self, environ: dict[str, Any], exchange: Exchange, duration: float) -> None:
        """The access log line and the StatsD request metrics, whichever are on."""
        service = self.service
        status = exchange.head.status if exchange.head else 0
        if service.access_log is not None:
            line = logs.access_line(
                service.access_format, environ, status, exchange.sent, duration, exchange.headers
            )
            service.access_log.info(line)
        if service.statsd is not None:
            service.statsd.request(status, duration)

    def reject(self, error: HTTPError) -> bool:
        """Answer a request that broke the protocol, then close."""
        if self.phase is Phase.DRAIN:  # its response is already out: just close
            return self.refuse_body(error, answered=True)
        self.service.log.info("%s: %d %s: %s", self.peer, error.status, error.phrase, error.reason)
        self.send_error(error.status, error.phrase, f"{error.phrase}: {error.reason}\n".encode())
        self.linger()
        return self.phase is not Phase.CLOSED

    def refuse_body(self, error: HTTPError, answered: bool) -> bool:
        """A body broke the framing: answer if nothing was sent yet, and close."""
        if not answered:
            return self.reject(error)
        self.service.log.info("%s: closing after a bad request body: %s", self.peer, error.reason)
        self.linger()
        return self.phase is not Phase.CLOSED

    def send_error(self, status: int, phrase: str, body: bytes) -> None:
        with contextlib.suppress(ClientGone, OSError):
            self.send(simple_response(status, phrase, body, self.service.server_headers()))

    def send_once(self, data: bytes) -> None:
        """One non-blocking send attempt, for the loop: what does not fit is lost (we close)."""
        with contextlib.suppress(OSError):  # ssl.SSLError and BlockingIOError included
            self.sock.send(data)

    # -- the transport used by wsgi.Exchange and wsgi.input -------------

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
            request = self.request
            if request is not None and request.expect_continue and not parser.buffer:
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
            except WANT_READ:
                self.wait(select.POLLIN, self.body_deadline())
                continue
            except ssl.SSLWantWriteError:
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

    def send(self, data: bytes) -> None:
        if self.in_thread:
            self.claim()
        try:
            sent = self.sock.send(data)
        except (*WANT_WRITE, ssl.SSLWantReadError):
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
            except WANT_WRITE:
                event = select.POLLOUT
            except ssl.SSLWantReadError:  # TLS renegotiation: the peer must speak first
                event = select.POLLIN
            except OSError as exc:
                raise ClientGone(str(exc)) from None

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
