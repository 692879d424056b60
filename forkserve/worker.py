"""Worker: one forked process that accepts connections and runs the app.

``Worker.__init__`` runs in the master before the fork and only stores
data. ``run()`` runs in the child: it installs its own signal handlers,
loads the app (unless it was preloaded), and serves from an epoll loop over
the shared listening sockets and its own client connections.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from types import FrameType

from .apploader import AppLoadError, load_app
from .connection import Connection, RequestAborted, Service
from .environ import base_environ
from .heartbeat import Heartbeat
from .http.parser import Limits
from .process import EXIT_ABORTED, EXIT_APP_LOAD_ERROR, EXIT_BOOT_FAILURE, EXIT_OK, set_title
from .settings import Settings
from .sockets import Listener
from .wsgi import FileWrapper

ACCEPT_BATCH = 16  # connections taken per wake-up: fewer epoll rounds under load


class ServerHeaders:
    """The pre-encoded Date and Server headers, rebuilt once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"Date: %s\r\nServer: forkserve\r\n" % formatdate(now, usegmt=True).encode()
        return self.value


class Worker:
    def __init__(
        self,
        number: int,
        settings: Settings,
        listeners: list[Listener],
        heartbeat: Heartbeat,
        app: Callable[..., Iterable[bytes]] | None,
    ) -> None:
        self.number = number
        self.settings = settings
        self.listeners = listeners
        self.heartbeat = heartbeat
        self.app = app
        self.master_pid = os.getpid()
        self.log = logging.getLogger("forkserve.error")
        self.alive = True
        self.pid = 0  # set in the master after the fork
        self.aborted_at = 0.0  # when the master sent SIGABRT, in the master
        self.retiring = False  # the master asked it to leave, in the master

    # -- in the child ----------------------------------------------------

    def run(self) -> int:
        """The child's whole life; returns its exit code."""
        set_title(f"forkserve: worker [{self.settings.proc_name or self.settings.app}]")
        self.install_signals()
        try:
            app = self.app or load_app(self.settings.app)
        except AppLoadError as error:
            self.log.error("%s", error)
            return EXIT_APP_LOAD_ERROR
        except Exception:
            self.log.exception("Worker failed to boot")
            return EXIT_BOOT_FAILURE
        self.log.info("Booting worker with pid: %d", os.getpid())
        try:
            self.serve(app)
        except RequestAborted:
            return EXIT_ABORTED
        return EXIT_OK

    def install_signals(self) -> None:
        # The master's handlers were inherited with the fork; replace them all.
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGABRT, self.handle_abort)
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w)

    def handle_term(self, signum: int, frame: FrameType | None) -> None:
        """Graceful stop: finish the request in hand, then leave."""
        self.alive = False

    def handle_quit(self, signum: int, frame: FrameType | None) -> None:
        """Quick stop: leave now, even in the middle of a request."""
        raise SystemExit(EXIT_OK)

    def handle_abort(self, signum: int, frame: FrameType | None) -> None:
        """The master judged this worker stuck past --timeout."""
        self.log.error("Worker %d aborted after %gs with no heartbeat", os.getpid(), self.settings.timeout)
        raise RequestAborted()

    def make_service(self, app: Callable[..., Iterable[bytes]]) -> Service:
        s = self.settings
        limits = Limits(
            request_line=s.limit_request_line,
            fields=s.limit_request_fields,
            field_size=s.limit_request_field_size,
            max_body=s.limit_request_body,
        )
        access_log = logging.getLogger("forkserve.access") if s.accesslog else None
        return Service(
            app=app,
            limits=limits,
            keepalive=s.keepalive,
            header_timeout=s.header_timeout,
            io_timeout=s.io_timeout,
            server_headers=ServerHeaders(),
            heartbeat=self.heartbeat.beat,
            log=self.log,
            access_log=access_log,
            max_requests=s.max_requests,
        )

    def serve(self, app: Callable[..., Iterable[bytes]]) -> None:
        service = self.make_service(app)
        poller = select.epoll()
        by_fd = {listener.sock.fileno(): listener for listener in self.listeners}
        for fd, listener in by_fd.items():
            listener.sock.setblocking(False)
            # EPOLLEXCLUSIVE: one connection wakes one worker, not all of them.
            poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        poller.register(self.wakeup_r, select.EPOLLIN)
        servers = {fd: listener.server_name for fd, listener in by_fd.items()}
        connections: dict[int, Connection] = {}
        poll_timeout = min(1.0, self.settings.timeout / 4) if self.settings.timeout else 1.0
        next_sweep = time.monotonic() + 1.0
        beat = self.heartbeat.beat
        while self.alive and not service.closing:
            beat()
            for fd, _ in poller.poll(poll_timeout):
                connection = connections.get(fd)
                if connection is not None:
                    if not connection.on_readable():
                        self.drop(poller, connections, connection)
                elif fd in by_fd:
                    self.accept(by_fd[fd], servers[fd], service, poller, connections)
                elif fd == self.wakeup_r:
                    os.read(self.wakeup_r, 512)
            if time.monotonic() >= next_sweep:
                next_sweep = self.sweep(poller, connections)
        if service.closing:
            self.log.info("Worker %d reached max_requests (%d); leaving", os.getpid(), service.requests)
        for connection in list(connections.values()):
            self.drop(poller, connections, connection)

    def accept(
        self,
        listener: Listener,
        server: tuple[str, str],
        service: Service,
        poller: select.epoll,
        connections: dict[int, Connection],
    ) -> None:
        tcp = listener.sock.family != socket.AF_UNIX
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = listener.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and friends: try again on the next wake-up
                self.log.warning("accept() failed: %s", exc)
                return
            sock.setblocking(False)
            if tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = (addr[0], str(addr[1]))
            else:
                peer = ("", "")
            environ = base_environ(
                server=server, peer=peer, url_scheme="http", multithread=False, file_wrapper=FileWrapper
            )
            connection = Connection(sock, environ, service)
            # The request often arrives with the handshake: try it before epoll.
            if connection.on_readable():
                connections[sock.fileno()] = connection
                poller.register(sock.fileno(), select.EPOLLIN)
            else:
                connection.close()

    def drop(self, poller: select.epoll, connections: dict[int, Connection], connection: Connection) -> None:
        fd = connection.sock.fileno()
        if connections.pop(fd, None) is not None:
            poller.unregister(fd)
        connection.close()

    def sweep(self, poller: select.epoll, connections: dict[int, Connection]) -> float:
        """Close connections past their deadline; leave if the master is gone."""
        now = time.monotonic()
        for connection in [c for c in connections.values() if c.expired(now)]:
            self.drop(poller, connections, connection)
        if os.getppid() != self.master_pid:
            self.log.warning("Master %d is gone; worker %d leaving", self.master_pid, os.getpid())
            self.alive = False
        return now + 1.0
