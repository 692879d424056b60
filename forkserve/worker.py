"""Worker: one forked process that accepts connections and runs the app.

``Worker.__init__`` runs in the master before the fork and only stores
data. ``run()`` runs in the child: it installs its own signal handlers,
drops privileges, loads the app (unless it was preloaded), and serves
from an epoll loop over the shared listening sockets and its own client
connections. It leaves when told to (SIGTERM), when it has served
``max_requests``, when its memory passes ``max_worker_memory``, or when
its master is gone.

The worker owns what changes while it serves: how many requests it has
served and whether it is leaving (``closing``, set by signal handlers,
request limits and request threads alike); its ``Balancer`` (balance.py)
owns the listening sockets' registration with the epoll, and its
``Service`` (service.py) the configuration its connections read, frozen
once built by ``make_service``. With ``max_worker_memory`` the resident size is read
after every request (one ``pread`` of /proc/self/statm) and the unique
size (USS, /proc/self/smaps_rollup) only when the resident size comes near
the limit; the once-a-second sweep also reads the USS, for pages that
turn private without growing the resident size (copy-on-write after
``--preload``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import socket
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from .apploader import AppLoadError, load_app
from .balance import OUT_OF_RESOURCES, Balancer, Seat
from .connection import Connection, Phase
from .environ import base_environ
from .handler import RequestAborted
from .heartbeat import Heartbeat
from .hooks import run_hook
from .http.parser import Limits, Request
from .http.response import http_date
from .logs import access_wanted
from .metrics import (
    LEFT_MAX_REQUESTS,
    LEFT_MEMORY,
    LEFT_TIMEOUT,
    RequestMetrics,
    leaving_because,
    request_metrics,
)
from .process import (
    EXIT_ABORTED,
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_FAILURE,
    EXIT_OK,
    drop_privileges,
    fd_limit_summary,
    raise_fd_limit,
    resolve_ids,
    set_title,
    spew,
    thread_stacks,
)
from .proxy import ProxyTrust
from .reloader import FileWatcher
from .service import Health, Service
from .settings import Settings
from .sockets import Listener
from .statsd import StatsD
from .threads import RequestThreads
from .wsgi import FileWrapper

if TYPE_CHECKING:
    import ssl

    from .master import Master

MAX_FIELDS = 32768  # limit_request_fields = 0: Gunicorn's own ceiling
BACKLOG_DRAIN = 4096  # at most this many queued connections taken when stopping
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


class ServerHeaders:
    """The pre-encoded Date and Server headers, rebuilt once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"Date: %s\r\nServer: forkserve\r\n" % http_date(now).encode()
        return self.value


def resident_mib(statm: int) -> float:
    """This process's resident size, from an open /proc/self/statm (one pread)."""
    return int(os.pread(statm, 64, 0).split()[1]) * PAGE_MIB


def unique_memory_mib() -> float:
    """This process's unique set size (private pages), from /proc."""
    total_kib = 0
    try:
        with open("/proc/self/smaps_rollup") as file:
            for line in file:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total_kib += int(line.split()[1])
    except OSError:
        return 0.0
    return total_kib / 1024


class Worker:
    def __init__(
        self,
        number: int,
        settings: Settings,
        listeners: list[Listener],
        heartbeat: Heartbeat,
        seat: Seat,
        app: Callable[..., Iterable[bytes]] | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.number = number
        self.settings = settings
        self.listeners = listeners
        self.heartbeat = heartbeat
        self.seat = seat
        self.app = app
        self.tls = tls
        self.master_pid = os.getpid()
        self.log = logging.getLogger("forkserve.error")
        self.alive = True
        self.closing = False  # leaving: stop accepting, and responses say Connection: close
        self.requests = 0  # served so far
        # With --threads or gevent several requests run at once: the slot shows the
        # latest one started, until one ends.
        self.request_ended = heartbeat.end_request
        self.service: Service | None = None  # set once serving
        self.statsd: StatsD | None = None  # set once serving, with --statsd-host
        self.metrics: RequestMetrics | None = None  # set once serving, with --metrics-bind
        self.pid = 0  # set in the master after the fork
        self.watch_files = False  # this worker runs the --reload file watcher
        self.statm = -1  # with --max-worker-memory, once serving: /proc/self/statm, kept open
        self.wakeup_r = -1  # the signal wake-up pipe, once the handlers are installed
        self.memory_check_at = 0.0  # resident MiB from which after_request() reads the USS
        # As in Gunicorn: root_path, else a SCRIPT_NAME in the environment, is where the app is mounted.
        self.script_name = (settings.root_path or os.environ.get("SCRIPT_NAME", "")).rstrip("/")

    # -- in the child ----------------------------------------------------

    def run(self, master: Master | None = None) -> int:
        """The child's whole life; returns its exit code."""
        self.pid = os.getpid()
        set_title(f"forkserve: worker [{self.settings.proc_name or self.settings.app}]")
        if self.settings.spew:
            spew()
        self.install_signals()
        run_hook(self.settings, "post_fork", master, self)
        try:
            drop_privileges(*resolve_ids(self.settings.user, self.settings.group), self.settings.initgroups)
            app = self.app or load_app(self.settings.app, self.settings.raw_paste_global_conf)
        except AppLoadError as error:
            self.log.error("%s", error)
            return EXIT_APP_LOAD_ERROR
        except Exception:
            self.log.exception("Worker failed to boot")
            return EXIT_BOOT_FAILURE
        self.raise_fd_limit()
        self.log.info("Booting worker with pid: %d", self.pid)
        run_hook(self.settings, "post_worker_init", self)
        self.heartbeat.mark_ready()
        if self.watch_files:
            FileWatcher(self.settings.reload_extra_files, self.request_reload).start(
                self.settings.reload_engine
            )
        try:
            self.serve(app)
        except RequestAborted:
            return EXIT_ABORTED
        finally:
            if self.metrics is not None:
                self.metrics.flush()  # the master folds the slot in once this process is gone
            run_hook(self.settings, "worker_exit", master, self)
        return EXIT_OK

    def raise_fd_limit(self) -> None:
        """Soft RLIMIT_NOFILE up to the hard limit; said once, by whoever raised it.

        When the master raised it before forking, workers inherit it and say nothing.
        """
        before, now = raise_fd_limit()
        if now > before:
            self.log.info("%s", fd_limit_summary(now, self.settings.worker_connections))

    def install_signals(self) -> None:
        # The master's handlers were inherited with the fork; replace them all.
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_term)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGABRT, self.handle_abort)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)

    def handle_term(self, signum: int, frame: FrameType | None) -> None:
        """Graceful stop: serve what is queued and in flight, then leave."""
        self.alive = False
        # A response whose head is not yet written says Connection: close,
        # so its client does not keep the leaving worker busy.
        self.closing = True

    def handle_quit(self, signum: int, frame: FrameType | None) -> None:
        """Quick stop: leave now, even in the middle of a request."""
        run_hook(self.settings, "worker_int", self)
        raise SystemExit(EXIT_OK)

    def handle_abort(self, signum: int, frame: FrameType | None) -> None:
        """The master judged this worker stuck in one request past --timeout.

        The stack says where it was stuck: the master's WORKER TIMEOUT line says
        on which request, this one says in which code.
        """
        self.log.error(
            "Worker %d aborted: no heartbeat for %gs; where it was:\n%s",
            self.pid,
            self.settings.timeout,
            thread_stacks(frame),
        )
        run_hook(self.settings, "worker_abort", self)
        raise RequestAborted()

    def handle_usr1(self, signum: int, frame: FrameType | None) -> None:
        from .logs import reopen_files

        reopen_files()

    def request_reload(self, path: str) -> None:
        self.log.info("%s changed; asking the master to reload", path)
        os.kill(self.master_pid, signal.SIGHUP)

    # -- serving ---------------------------------------------------------

    def make_service(self, app: Callable[..., Iterable[bytes]]) -> Service:
        """The worker's Service (kept as ``self.service``): built here only, the profiler and tests too."""
        s = self.settings
        if s.statsd_host:
            self.statsd = StatsD(s.statsd_host, s.statsd_prefix, s.dogstatsd_tags)
            self.statsd.count_log_lines(self.log)
        if s.metrics_bind:
            self.metrics = request_metrics(s, self.heartbeat.counters)
        # As in Gunicorn, 0 lifts a limit; the whole head stays bounded by limit_request_head.
        limits = Limits(
            request_line=s.limit_request_line or s.limit_request_head,
            fields=s.limit_request_fields or MAX_FIELDS,
            field_size=s.limit_request_field_size or s.limit_request_head,
            head_size=s.limit_request_head,
            max_body=s.limit_request_body,
            chunk_ext=s.limit_chunk_extension,
            trailer_size=s.limit_request_trailers,
        )
        access_log = logging.getLogger("forkserve.access") if access_wanted(s) else None
        max_requests = s.max_requests + random.randint(0, s.max_requests_jitter) if s.max_requests else 0
        self.service = Service(
            app=app,
            limits=limits,
            keepalive=s.keepalive,
            header_timeout=s.header_timeout,
            io_timeout=s.io_timeout,
            server_headers=ServerHeaders(),
            heartbeat=self.connection_heartbeat(),
            log=self.log,
            access_log=access_log,
            access_format=s.access_log_format,
            max_requests=max_requests,
            body_prebuffer=s.body_prebuffer,
            proxy=ProxyTrust(s.forwarded_allow_ips, s.scheme_headers, s.forwarder_headers),
            proxy_protocol=ProxyTrust(s.proxy_allow_ips) if s.proxy_protocol != "off" else None,
            proxy_versions=s.proxy_protocol,
            refuse_underscored=s.header_map == "refuse",
            sendfile=s.sendfile,
            body_min_rate=s.body_min_rate,
            statsd=self.statsd,
            metrics=self.metrics,
            busy=self.heartbeat.set_busy if s.workers_max else None,
            dispatch=self.dispatch if self.request_threads() > 1 else None,
            health=Health(s.health_path, lambda: self.heartbeat.stopping) if s.health_path else None,
            pre_request=self.pre_request_hook(),
            post_request=(
                (lambda req, environ, resp: run_hook(s, "post_request", self, req, environ, resp))
                if s.post_request
                else None
            ),
        )
        return self.service

    def request_threads(self) -> int:
        """How many request threads run the app (--threads; 1: the loop runs it)."""
        return self.settings.threads

    def connection_heartbeat(self) -> Callable[[], float]:
        """What connections call after each request and while they wait on a client."""
        # Without a memory limit the heartbeat alone: nothing more per request.
        return self.after_request if self.settings.max_worker_memory else self.heartbeat.beat

    def request_started(self, request: Request, peer: str) -> float:
        """Count a request, and show it running in the heartbeat slot (for ctl and timeouts).

        The last one before max_requests says so in its response.
        """
        self.requests += 1
        started = time.monotonic()
        self.heartbeat.begin_request(started, f"{request.method} {request.target} {peer}".encode())
        service = self.service
        if service is not None and service.max_requests and self.requests >= service.max_requests:
            self.closing = True
            leaving_because(self.heartbeat, LEFT_MAX_REQUESTS)
        return started

    def after_request(self) -> float:
        """Service.heartbeat with --max-worker-memory: beat, then check memory cheaply."""
        now = self.heartbeat.beat()
        if self.statm >= 0 and not self.closing:
            self.watch_memory()
        return now

    def watch_memory(self) -> None:
        """Read the USS only when the RSS says it may have passed the limit.

        The resident size (RSS) is never below the unique size (USS), and the
        USS grows no faster than the RSS unless shared pages turn private (the
        sweep catches those). So the USS is read only once the RSS reaches
        ``memory_check_at``, and after a reading below the limit the next one
        waits for the RSS to grow by half of what is left.
        """
        try:
            resident = resident_mib(self.statm)
        except (OSError, ValueError, IndexError):
            return
        if resident >= self.memory_check_at:
            left = self.check_memory()
            self.memory_check_at = resident + max(left / 2, 0.5)

    def check_memory(self) -> float:
        """Recycle this worker if its unique memory passed --max-worker-memory; returns the MiB left."""
        limit = self.settings.max_worker_memory
        used = unique_memory_mib()
        if used > limit:
            resident = ""
            if self.statm >= 0:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    resident = f" (resident {resident_mib(self.statm):.0f} MiB)"
            self.log.info(
                "Worker %d uses %.0f MiB (limit %d MiB); recycling%s", self.pid, used, limit, resident
            )
            self.closing = True
            leaving_because(self.heartbeat, LEFT_MEMORY)
        return limit - used

    def pre_request_hook(self) -> Callable[[Request], None] | None:
        """The pre_request hook; without one, at debug level, Gunicorn's default: log method and path."""
        if self.settings.pre_request:
            return lambda request: run_hook(self.settings, "pre_request", self, request)
        if self.log.isEnabledFor(logging.DEBUG):
            return lambda request: self.log.debug("%s %s", request.method, request.path)
        return None

    def open_statm(self) -> None:
        """With --max-worker-memory: keep /proc/self/statm open for after_request()."""
        if self.settings.max_worker_memory:
            # Without it, the sweep still checks once a second.
            with contextlib.suppress(OSError):
                self.statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)

    def serve(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.open_statm()
        service = self.make_service(app)
        balancer = self.start_loop()
        poll_timeout = min(1.0, self.settings.timeout / 4) if self.settings.timeout else 1.0
        next_sweep = time.monotonic() + 1.0
        beat = self.heartbeat.beat
        while self.alive and not self.closing:
            beat()
            self.poll_once(service, balancer.timeout(poll_timeout))
            now = time.monotonic()
            balancer.tick(now)
            if now >= next_sweep:
                next_sweep = self.sweep(service)
        self.leave(service)

    def start_loop(self) -> Balancer:
        """The event loop's state: its epoll, the connections, the listeners watched by the balancer."""
        self.poller = select.epoll()
        self.connections: dict[int, Connection] = {}
        self.by_fd = {listener.sock.fileno(): listener for listener in self.listeners}
        self.servers = {fd: listener.server_name for fd, listener in self.by_fd.items()}
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if listener.sock.family != socket.AF_UNIX:
                # Accepted sockets inherit it (Linux): one call here, none per connection.
                listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.wakeup_r >= 0:  # none in an in-process harness, which installs no handlers
            self.poller.register(self.wakeup_r, select.EPOLLIN)
        self.threads: RequestThreads | None = None
        if self.request_threads() > 1:
            self.threads = RequestThreads(self.request_threads())
            self.poller.register(self.threads.done_r, select.EPOLLIN)
        self.balancer = Balancer(self.poller, self.by_fd, self.seat, self)
        self.balancer.start()
        return self.balancer

    def open_connections(self) -> int:
        return len(self.connections) + (len(self.threads.running) if self.threads else 0)

    def poll_once(self, service: Service, timeout: float) -> None:
        connections = self.connections
        for fd, _ in self.poller.poll(timeout):
            connection = connections.get(fd)
            if connection is not None:
                if not connection.on_readable() and not self.handed_off(connection):
                    self.drop(connection)
            elif fd in self.by_fd:
                self.on_listener(fd, service)
            elif fd == self.wakeup_r:
                os.read(self.wakeup_r, 512)
            elif fd == self.balancer.nudge_fd:
                if self.balancer.take_nudges():
                    for listening in self.by_fd:
                        self.on_listener(listening, service)
            elif self.threads is not None and fd == self.threads.done_r:
                for done in self.threads.collect():
                    self.resume(done)

    def on_listener(self, fd: int, service: Service) -> None:
        """Connections are waiting: take this worker's fair share of them, up to worker_connections."""
        room = self.settings.worker_connections - self.open_connections()
        if room <= 0:
            self.balancer.became_full()
            return
        self.accept(fd, service, min(room, self.balancer.how_many_to_take(self.by_fd[fd])))

    def dispatch(self, connection: Connection, request: Request) -> None:
        """--threads: hand a connection with a request ready to a request thread."""
        assert self.threads is not None
        fd = connection.sock.fileno()
        if self.connections.pop(fd, None) is not None:
            self.poller.unregister(fd)
        self.threads.submit(connection, request)

    def handed_off(self, connection: Connection) -> bool:
        """Is a request thread serving it? (Only the loop's thread changes the answer.)"""
        return self.threads is not None and connection in self.threads.running

    def resume(self, connection: Connection) -> None:
        """A request thread is done with this connection: watch it again, or close it."""
        if connection.phase is Phase.CLOSED or connection.aborted:
            self.drop(connection)
            return
        fd = connection.sock.fileno()
        self.connections[fd] = connection
        self.poller.register(fd, select.EPOLLIN)

    def abort_overdue(self, service: Service) -> None:
        """--threads: answer requests past --timeout, then leave (their threads cannot be stopped)."""
        if self.threads is None or not self.settings.timeout:
            return
        for connection in self.threads.overdue(self.settings.timeout):
            connection.abort()
            run_hook(self.settings, "worker_abort", self)
            self.closing = True  # stop accepting, finish the others, get replaced
            leaving_because(self.heartbeat, LEFT_TIMEOUT)

    def accept(self, fd: int, service: Service, batch: int) -> None:
        listener = self.by_fd[fd]
        server = self.servers[fd]
        # socket.accept() reads the listener's family and type as enums for
        # every connection it wraps: read them once per wake-up instead.
        raw_accept = listener.sock._accept  # type: ignore[attr-defined]
        family, kind = listener.sock.family, listener.sock.type
        stepped_back = False
        for _ in range(batch):
            try:
                client_fd, addr = raw_accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self.balancer.back_off(exc)
                else:  # the client gave up before it was accepted, or similar: try again on the next wake-up
                    self.log.warning("accept() failed: %s", exc)
                return
            sock = socket.socket(family, kind, 0, client_fd)
            sock, environ = self.client(sock, addr, server, multithread=self.threads is not None)
            connection = Connection(sock, environ, service, self)
            stepped_back = self.balancer.accepted(stepped_back)
            # The request often arrives with the handshake: try it before epoll.
            alive = connection.on_readable()
            if self.handed_off(connection):
                pass  # a request thread has it; resume() takes it back
            elif alive:
                self.connections[sock.fileno()] = connection
                self.poller.register(sock.fileno(), select.EPOLLIN)
            else:
                self.drop(connection)

    def client(
        self, sock: socket.socket, addr: Any, server: tuple[str, str], multithread: bool
    ) -> tuple[socket.socket, dict[str, Any]]:
        """A just-accepted socket made non-blocking (and TLS-wrapped), with its connection's base environ."""
        sock.setblocking(False)
        if self.metrics is not None:
            self.metrics.connection_opened()
        peer = (addr[0], str(addr[1])) if addr else ("", "")  # a unix socket's peer has no address
        if self.tls is not None:
            # The handshake runs inside the first reads, without blocking.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        environ = base_environ(
            server=server,
            peer=peer,
            url_scheme="https" if self.tls is not None else "http",
            multithread=multithread,
            file_wrapper=FileWrapper,
            script_name=self.script_name,
        )
        return sock, environ

    def drop(self, connection: Connection) -> None:
        fd = connection.sock.fileno()
        if self.connections.pop(fd, None) is not None:
            self.poller.unregister(fd)
        connection.close()
        if self.metrics is not None:
            self.metrics.connection_closed()
        self.balancer.closed(self.settings.worker_connections)

    def sweep(self, service: Service) -> float:
        """Once a second: expire connections, watch memory, notice a lost master."""
        now = time.monotonic()
        for connection in [c for c in self.connections.values() if c.expired(now)]:
            self.drop(connection)
        self.abort_overdue(service)
        if os.getppid() != self.master_pid:
            self.log.warning("Master %d is gone; worker %d leaving", self.master_pid, self.pid)
            self.alive = False
        if self.settings.max_worker_memory and not self.closing:
            self.check_memory()  # pages turned private show in the USS alone
        if self.metrics is not None:
            self.metrics.flush()
        return now + 1.0

    # -- leaving ---------------------------------------------------------

    def close_listeners(self) -> None:
        """Close this worker's copies of the listening sockets, as it stops accepting.

        The master closes its own as a stop begins, so once every worker has
        taken its share of the backlog the kernel refuses new connections: a
        balancer tries another host at once, instead of sending a request
        into a queue that nobody will take it from.
        """
        for listener in self.listeners:
            listener.sock.close()

    def leave(self, service: Service) -> None:
        """Finish what this worker holds, without dropping a request.

        On SIGTERM it first takes the connections already queued in the
        listen backlog: their handshakes are complete, and once every
        worker stops accepting nobody else would serve them. When it leaves
        on its own (max_requests, memory) it asks the master for a
        replacement first. Then it stops accepting and keeps serving the
        connections it holds, each response saying ``Connection: close``.
        Idle keep-alive connections are not cut short: closing one while
        its client is sending the next request would lose that request, so
        each lives out its normal keep-alive timeout, and a request that
        comes meanwhile is answered. A connection closed after a response
        that says close is closed gently (``Connection.end``), so a request
        that crossed that response costs the client none of it; the client
        sends that request again (RFC 9112 §9.3.1, §9.3.2). All within
        --graceful-timeout.
        """
        self.closing = True
        self.balancer.stop()
        if self.alive:
            self.log.info("Worker %d leaving after %d requests", self.pid, self.requests)
            self.heartbeat.mark_leaving()
            os.kill(self.master_pid, signal.SIGCHLD)  # wakes the master's loop
        else:
            for fd in self.by_fd:
                self.accept(fd, service, BACKLOG_DRAIN)
        self.close_listeners()
        deadline = time.monotonic() + self.settings.graceful_timeout
        while (self.connections or (self.threads and self.threads.busy)) and time.monotonic() < deadline:
            self.heartbeat.beat()
            self.poll_once(service, 0.1)
            self.abort_overdue(service)
            now = time.monotonic()
            for connection in [c for c in self.connections.values() if c.expired(now)]:
                self.drop(connection)
        for connection in list(self.connections.values()):
            self.drop(connection)
