"""The gevent worker (``worker_class = "gevent"``): one greenlet per connection.

Owns only what changes when a worker's connections are greenlets instead of
entries in an epoll loop:

- monkey-patching, in the child after the fork and before the app is
  imported (and again when the app was preloaded in the template: that case
  is logged, since the app's own imports then escaped the patching);
- accepting: a greenlet per listening socket, capped by
  ``worker_connections`` (a gevent ``Pool`` of connection greenlets);
- proof of life: the heartbeat comes from a greenlet only the hub can
  schedule, so a greenlet that holds the hub (CPU-bound, or blocked in
  unpatched C code) silences it and the master's abort path takes over;
- per-request ``--timeout``: the hub stays alive while a request waits, so
  each request has its own clock, read by a watchdog that kills the
  request's greenlet (its client gets a 504) and replaces the worker;
- the graceful stop: stop accepting, serve the connections queued in the
  backlog, finish what is in flight within ``graceful_timeout``.

Everything else is reused unchanged: ``Worker`` (signals, hooks, privilege
drop, app loading, max_requests, max_worker_memory, the quick stop) and
``Connection`` (the sans-IO parser, limits, timeouts, proxy handling, the
WSGI layer, the access log). A connection's greenlet drives the same
``Connection`` the epoll loop drives: once the standard library is
patched, its waits on the socket (``select.poll``) yield to the hub instead
of blocking the process.

gevent is imported only in this module, and only in the child of a worker
of this class: the master never loads it (unless a config file does).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from .connection import Connection, Phase
from .handler import RequestAborted
from .hooks import run_hook
from .metrics import LEFT_TIMEOUT, leaving_because
from .process import EXIT_BOOT_FAILURE, thread_stacks
from .service import Host, Service
from .sockets import Listener
from .worker import BACKLOG_DRAIN, Worker

if TYPE_CHECKING:
    from .http.parser import Request
    from .master import Master

TICK = 0.1  # seconds between the main greenlet's looks at the stop flags
ABORT_LEAVE = 1.0  # seconds in-flight requests get once the master aborted this worker (it kills at 2 s)
ACCEPT_RETRY = 0.1  # pause after a failed accept() (EMFILE and friends) instead of a hot loop

App = Callable[..., Iterable[bytes]]


def patch() -> None:
    """Make the standard library cooperative in this process (raises ImportError without gevent)."""
    import gevent
    import gevent.monkey

    gevent.monkey.patch_all()
    # A hub the master created (a config file that patched there) must not be
    # shared with this child: start this process's own event loop.
    gevent.reinit()


class RequestClocks:
    """When each greenlet's request last made progress; the --timeout watchdog reads them.

    The sync worker's heartbeat stops while its one request runs, so the
    master times that request out. Here the heartbeat keeps going while a
    request waits, so each request has a clock: started when its app is
    called, moved on while it waits on its client (``Connection`` calls
    ``Service.heartbeat`` then, as waiting on a client is not a stuck app),
    stopped when its response is done.
    """

    def __init__(self, current: Callable[[], Any]) -> None:
        self.current = current  # gevent.getcurrent
        self.since: dict[Any, float] = {}

    def start(self) -> None:
        self.since[self.current()] = time.monotonic()

    def touch(self) -> float:
        now = time.monotonic()
        greenlet = self.current()
        if greenlet in self.since:
            self.since[greenlet] = now
        return now

    def stop(self) -> None:
        self.since.pop(self.current(), None)

    def running(self) -> bool:
        """Is the calling greenlet in the middle of a request?"""
        return self.current() in self.since

    def take_overdue(self, timeout: float) -> list[Any]:
        """The greenlets whose request has run past ``timeout``; each is reported once."""
        now = time.monotonic()
        overdue = [greenlet for greenlet, since in self.since.items() if now - since > timeout]
        for greenlet in overdue:
            del self.since[greenlet]
        return overdue


class GreenConnection(Connection):
    """A Connection whose requests run on a clock the watchdog can read."""

    def __init__(
        self,
        sock: socket.socket,
        environ: dict[str, Any],
        service: Service,
        host: Host,
        clocks: RequestClocks,
    ) -> None:
        super().__init__(sock, environ, service, host)
        self.clocks = clocks

    def run(self, request: Request) -> bool:
        self.clocks.start()
        try:
            return super().run(request)
        finally:
            self.clocks.stop()


class GeventWorker(Worker):
    """A Worker whose connections are greenlets (see the module docstring)."""

    # Immutable defaults, so plain class attributes: Worker.__init__ stays the only constructor.
    clocks: RequestClocks | None = None  # set once serving
    aborting = False  # the master aborted this worker (SIGABRT)

    # -- in the child ----------------------------------------------------

    def run(self, master: Master | None = None) -> int:
        if self.app is not None:
            self.log.warning(
                "The app was preloaded before the fork, before gevent patched the standard "
                "library; what it imported by name (from socket import ..., from time import sleep) "
                "may block this worker. Patching anyway."
            )
        try:
            patch()
        except ImportError as error:
            self.log.error("The gevent worker needs gevent: pip install 'forkserve[gevent]' (%s)", error)
            return EXIT_BOOT_FAILURE
        if self.watch_files and self.settings.reload_engine != "poll":
            # watchfiles waits in Rust for up to a second at a time, and once patched
            # its "thread" is a greenlet: it would hold the hub. Polling waits cooperatively.
            self.log.info("The gevent worker watches files by stat polling (watchfiles would block its hub)")
            self.settings = dataclasses.replace(self.settings, reload_engine="poll")
        if self.tls is not None:
            # The master's context makes plain ssl sockets; a patched context makes
            # gevent's, which the patched ssl.SSLSocket (and so Connection) recognises.
            # Built here, before the privileges are dropped, as the key may be root's.
            from .tls import make_context

            self.tls = make_context(self.settings)
        return super().run(master)

    def handle_abort(self, signum: int, frame: FrameType | None) -> None:
        """The master heard no heartbeat: a greenlet held the hub past --timeout.

        This handler runs in whatever greenlet holds the hub. When that is a
        request, it is stopped here and its client gets a 504; the worker
        then leaves with the sync worker's exit code for an abort.
        """
        self.log.error(
            "Worker %d aborted: its hub was blocked for %gs; where it was:\n%s",
            self.pid,
            self.settings.timeout,
            thread_stacks(frame),
        )
        run_hook(self.settings, "worker_abort", self)
        self.aborting = True
        if self.clocks is not None and self.clocks.running():
            raise RequestAborted()

    # -- serving ---------------------------------------------------------

    def serve(self, app: App) -> None:
        import gevent
        from gevent.pool import Pool

        self.clocks = RequestClocks(gevent.getcurrent)
        service = self.make_service(app)
        self.connections = {}  # Worker.sweep expires these; greenlets expire their own
        self.threads = None
        self.pool = Pool(self.settings.worker_connections)
        self.green_listeners = [
            (self.cooperative(listener), listener.server_name) for listener in self.listeners
        ]
        beater = gevent.spawn(self.beat_forever)
        self.acceptors = [
            gevent.spawn(self.accept_forever, sock, server, service) for sock, server in self.green_listeners
        ]
        try:
            self.wait_for_stop(service)
            self.leave_green(service)
        finally:
            beater.kill(block=False)
        if self.aborting:
            raise RequestAborted()  # Worker.run exits with EXIT_ABORTED, as the sync worker does

    def cooperative(self, listener: Listener) -> Any:
        """A gevent socket on a duplicate of the shared listening socket.

        Its accept() waits in the hub. A duplicate, so that closing it (or
        collecting it) never closes the listener the master handed down.
        """
        from gevent import socket as gsocket

        sock = listener.sock
        if sock.family != socket.AF_UNIX:
            # Accepted sockets inherit it (Linux): one call here, none per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return gsocket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))

    def request_threads(self) -> int:
        return 1  # a greenlet per connection: no request threads

    def connection_heartbeat(self) -> Callable[[], float]:
        # Connection calls this after each request and while waiting on its client:
        # here it moves that request's clock on. The process heartbeat comes only
        # from the beater greenlet, so only a running hub can keep it going.
        assert self.clocks is not None
        return self.clocks.touch

    def beat_forever(self) -> None:
        """Proof of life that only a running hub can give."""
        import gevent

        timeout = self.settings.timeout
        interval = min(1.0, timeout / 4) if timeout else 1.0
        beat = self.heartbeat.beat
        while True:
            beat()
            gevent.sleep(interval)

    def wait_for_stop(self, service: Service) -> None:
        """Until told to leave: once a second, Worker.sweep (timeouts, memory, a lost master)."""
        import gevent

        next_sweep = time.monotonic() + 1.0
        # Signal handlers only set these flags: waking the hub from inside a
        # handler (which may interrupt the hub itself) is not safe.
        while self.alive and not self.closing and not self.aborting:
            gevent.sleep(TICK)
            if time.monotonic() >= next_sweep:
                next_sweep = self.sweep(service)

    def accept_forever(self, listener: Any, server: tuple[str, str], service: Service) -> None:
        """One greenlet per listening socket: accept while the pool has room."""
        import gevent

        pool = self.pool
        while not self.closing:
            pool.wait_available()  # worker_connections: hold no more than that
            try:
                sock, addr = listener.accept()
            except OSError as exc:
                self.log.warning("accept() failed: %s", exc)
                gevent.sleep(ACCEPT_RETRY)
                continue
            pool.spawn(self.handle, sock, addr, server, service)

    def handle(self, sock: socket.socket, addr: Any, server: tuple[str, str], service: Service) -> None:
        """A connection's greenlet: serve its requests until it closes or times out."""
        connection = self.open_connection(sock, addr, server, service)
        try:
            self.drive(connection)
        except RequestAborted:
            pass  # its 504 is sent; the watchdog or the abort handler replaces the worker
        finally:
            connection.close()
            if self.metrics is not None:
                self.metrics.connection_closed()

    def open_connection(
        self, sock: socket.socket, addr: Any, server: tuple[str, str], service: Service
    ) -> GreenConnection:
        # Non-blocking: Connection waits itself, with its own timeouts. Multithread
        # (PEP 3333): other greenlets may call the app at the same time.
        sock, environ = self.client(sock, addr, server, multithread=True)
        assert self.clocks is not None
        return GreenConnection(sock, environ, service, self, self.clocks)

    def drive(self, connection: Connection) -> None:
        """What the epoll loop does for one connection: read when readable, until its deadline."""
        from gevent.socket import wait_read

        fd = connection.sock.fileno()
        alive = connection.on_readable()  # the request often arrives with the handshake
        while alive and connection.phase is not Phase.CLOSED:
            left = connection.deadline - time.monotonic()
            if left <= 0:
                if connection.expired(time.monotonic()):
                    return  # idle keep-alive, a finished linger, or closed: done
                continue  # a stalled request got its 408: discard input until the linger ends
            try:
                wait_read(fd, timeout=left)
            except TimeoutError:
                continue  # the deadline may have moved meanwhile: look again
            alive = connection.on_readable()

    def abort_overdue(self, service: Service) -> None:
        """Kill requests past --timeout (their clients get a 504), then get replaced.

        Called by Worker.sweep. The hub is alive, so this is the one place a
        request that waits too long is noticed; the master only sees a
        silent heartbeat, i.e. a blocked hub.
        """
        timeout = self.settings.timeout
        if not timeout or self.clocks is None:
            return
        for greenlet in self.clocks.take_overdue(timeout):
            self.log.error(
                "Worker %d: a request ran past --timeout (%gs); replacing the worker", self.pid, timeout
            )
            greenlet.kill(RequestAborted, block=False)
            run_hook(self.settings, "worker_abort", self)
            self.closing = True  # stop accepting, finish the others, get replaced
            leaving_because(self.heartbeat, LEFT_TIMEOUT)

    # -- leaving ---------------------------------------------------------

    def leave_green(self, service: Service) -> None:
        """Finish what this worker holds, without dropping a request (see Worker.leave).

        Stop accepting; on SIGTERM first take the connections already queued
        in the backlog; when leaving on its own, ask for a replacement first.
        Requests in flight finish with ``Connection: close``; idle keep-alive
        connections live out their keep-alive time. All within
        --graceful-timeout (within ABORT_LEAVE after an abort).
        """
        import gevent

        self.closing = True
        self.seat.leave()
        gevent.killall(self.acceptors)
        if self.aborting:
            grace = min(ABORT_LEAVE, self.settings.graceful_timeout)
        elif self.alive:
            self.log.info("Worker %d leaving after %d requests", self.pid, self.requests)
            self.heartbeat.mark_leaving()
            os.kill(self.master_pid, signal.SIGCHLD)  # wakes the master's loop
            grace = self.settings.graceful_timeout
        else:
            self.take_backlog(service)
            grace = self.settings.graceful_timeout
        for sock, _ in self.green_listeners:
            sock.close()
        self.close_listeners()
        deadline = time.monotonic() + grace
        while len(self.pool) and time.monotonic() < deadline:
            self.pool.join(timeout=min(TICK, max(0.0, deadline - time.monotonic())))
            self.abort_overdue(service)
        if len(self.pool):
            self.log.warning(
                "Worker %d: %d connections still open after %gs; closing them",
                self.pid,
                len(self.pool),
                grace,
            )
            self.pool.kill(timeout=1.0)

    def take_backlog(self, service: Service) -> None:
        """SIGTERM: take the connections already queued; once every worker stops accepting, none would."""
        for sock, server in self.green_listeners:
            sock.settimeout(0)  # accept() raises BlockingIOError once the queue is empty
            for _ in range(BACKLOG_DRAIN):
                try:
                    client, addr = sock.accept()
                except OSError:
                    break
                self.pool.spawn(self.handle, client, addr, server, service)
