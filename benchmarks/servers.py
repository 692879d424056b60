"""What gets benchmarked: the apps, the servers, and starting/stopping them.

Owns: the catalogue of apps (WSGI modules in benchmarks/apps/) and servers
(command lines), learning the port a server got from the kernel, waiting until
it answers correctly, and stopping exactly the processes it started.

Every server binds 127.0.0.1 port 0 so the kernel picks a free port; nothing
here ever guesses a "free" port. The real port comes from the server's log
line, from /proc/net/tcp for the sockets of its processes, or (nginx) from a
socket this module binds itself and hands over.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import deps
import measure

HERE = Path(__file__).resolve().parent
APPS_DIR = HERE / "apps"
DJANGO_DIR = APPS_DIR / "djbench"
HOST = "127.0.0.1"
UPLOAD_SIZE = 1024 * 1024
GTHREAD_THREADS = 4
WAITRESS_THREADS = 4


# --------------------------------------------------------------------- apps


def _check_json_greeting(body: bytes) -> bool:
    try:
        return json.loads(body).get("name") == "forkserve"
    except ValueError:
        return False


@dataclass(frozen=True)
class App:
    """A WSGI app to serve, and how to tell that an answer to it is right."""

    name: str
    module: str  # "module:callable", imported from ``directory``
    directory: Path
    description: str
    check: Callable[[bytes], bool]  # validates the body of a smoke request
    method: str = "GET"
    smoke_body: bytes = b""
    needs_django: bool = False


_SMOKE_UPLOAD = bytes(range(256)) * 64

APPS: dict[str, App] = {
    a.name: a
    for a in (
        App(
            "hello",
            "hello:app",
            APPS_DIR,
            "hello world, 13-byte body",
            lambda b: b == b"Hello, world!",
        ),
        App(
            "django",
            "djbench.wsgi:application",
            DJANGO_DIR,
            "Django, default middleware, one SQLite row as JSON",
            _check_json_greeting,
            needs_django=True,
        ),
        App(
            "download",
            "download:app",
            APPS_DIR,
            "1 MiB file via wsgi.file_wrapper",
            lambda b: len(b) == 1024 * 1024,
        ),
        App(
            "upload",
            "upload:app",
            APPS_DIR,
            "1 MiB POST body read fully and SHA-256 hashed",
            lambda b: b.decode(errors="replace") == hashlib.sha256(_SMOKE_UPLOAD).hexdigest(),
            method="POST",
            smoke_body=_SMOKE_UPLOAD,
        ),
        App(
            "whoami",
            "whoami:app",
            APPS_DIR,
            "answers its worker's pid (spread measurement)",
            lambda b: b.isdigit(),
        ),
    )
}


# ------------------------------------------------------------------ servers


@dataclass
class Context:
    """Everything a server's command line may depend on."""

    app: App
    workers: int
    tmp: Path
    peers_bin: Path
    peers_site: str  # peers' site-packages, lent to forkserve for Django
    forkserve_env: dict[str, str]
    nginx: str
    env: dict[str, str]  # base environment for every server
    extra_args: list[str] = field(default_factory=list)  # e.g. ["--preload"]
    unix_socket: str = ""  # bind this unix socket instead of 127.0.0.1:0 (behind nginx)


@dataclass
class Launch:
    """A concrete command to start, as built by a Server for one Context."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    inherit: list[socket.socket] = field(default_factory=list)  # fds to pass
    port: int | None = None  # known in advance only when we bound the socket


def _pythonpath(*parts: str) -> str:
    return os.pathsep.join(p for p in parts if p)


def _bind(ctx: Context) -> list[str]:
    """forkserve's and Gunicorn's --bind: the context's unix socket, else port 0."""
    return ["--bind", f"unix:{ctx.unix_socket}" if ctx.unix_socket else f"{HOST}:0"]


def _forkserve(
    ctx: Context, threads: int | None = None, worker_class: str = "", metrics: bool = False
) -> Launch:
    env = dict(ctx.env)
    extra_path = ctx.forkserve_env.get("PYTHONPATH", "")
    # forkserve runs from this interpreter; Django lives in the peers venv
    # (same Python build), so lend it its site-packages for the Django app.
    django_path = ctx.peers_site if ctx.app.needs_django else ""
    if path := _pythonpath(extra_path, django_path):
        env["PYTHONPATH"] = path
    argv = [sys.executable, "-m", "forkserve", ctx.app.module]
    argv += [*_bind(ctx), "--workers", str(ctx.workers)]
    argv += ["--chdir", str(ctx.app.directory), "--pythonpath", str(ctx.app.directory)]
    if threads:
        argv += ["--threads", str(threads)]
    if worker_class:
        argv += ["--worker-class", worker_class]
    if metrics:
        argv += ["--metrics-bind", "127.0.0.1:0"]
    return Launch(argv + ctx.extra_args, ctx.app.directory, env)


def _gunicorn(ctx: Context, worker_class: str) -> Launch:
    argv = [str(ctx.peers_bin / "gunicorn"), ctx.app.module]
    argv += [*_bind(ctx), "--workers", str(ctx.workers)]
    # No control socket: it would live in $HOME, shared between runs.
    argv += ["--chdir", str(ctx.app.directory), "--no-control-socket"]
    if worker_class == "gthread":
        argv += ["--worker-class", "gthread", "--threads", str(GTHREAD_THREADS)]
    elif worker_class == "gevent":
        argv += ["--worker-class", "gevent"]  # worker_connections: 1000, as forkserve's
    return Launch(argv + ctx.extra_args, ctx.app.directory, dict(ctx.env))


def _waitress(ctx: Context) -> Launch:
    # Single process by design: --workers does not apply.
    argv = [str(ctx.peers_bin / "waitress-serve"), f"--listen={HOST}:0"]
    argv += [f"--threads={WAITRESS_THREADS}", ctx.app.module]
    return Launch(argv, ctx.app.directory, dict(ctx.env))


def _granian(ctx: Context) -> Launch:
    # granian accepts port 0 but logs ":0"; the real port comes from /proc.
    argv = [str(ctx.peers_bin / "granian"), "--interface", "wsgi", "--workers", str(ctx.workers)]
    argv += ["--uds", ctx.unix_socket] if ctx.unix_socket else ["--host", HOST, "--port", "0"]
    argv += ["--working-dir", str(ctx.app.directory), *ctx.extra_args, ctx.app.module]
    return Launch(argv, ctx.app.directory, dict(ctx.env))


def _runserver(ctx: Context) -> Launch:
    argv = [str(ctx.peers_bin / "python"), "manage.py", "runserver", "--noreload"]
    argv += [f"{HOST}:0"]
    return Launch(argv, DJANGO_DIR, dict(ctx.env))


def _floor(ctx: Context) -> Launch:
    argv = [sys.executable, str(HERE / "floor.py"), "--bind", f"{HOST}:0"]
    argv += ["--workers", str(ctx.workers)]
    return Launch(argv, HERE, dict(ctx.env))


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port};
        location / {{
            default_type text/plain;
            return 200 "Hello, world!";
        }}
    }}
}}
"""


def _nginx_launch(ctx: Context, render: Callable[[Path, int], str], globals_: str = "") -> Launch:
    """nginx on 127.0.0.1 port 0, with the config ``render(prefix, port)`` returns.

    nginx refuses "listen ...:0". Instead we bind port 0 ourselves and hand
    the listening socket over through nginx's own inheritance mechanism
    (the NGINX environment variable, as used for binary upgrades); the
    config names the same address so nginx adopts the inherited socket.
    ``globals_`` are extra main-context directives (nginx's ``-g``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen(4096)
    port = sock.getsockname()[1]
    prefix = ctx.tmp / f"nginx-{port}"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render(prefix, port))
    env = dict(ctx.env, NGINX=f"{sock.fileno()};")
    argv = [ctx.nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    argv += ["-g", globals_] if globals_ else []
    return Launch(argv, prefix, env, inherit=[sock], port=port)


def _nginx(ctx: Context) -> Launch:
    return _nginx_launch(
        ctx, lambda prefix, port: NGINX_CONF.format(workers=ctx.workers, prefix=prefix, host=HOST, port=port)
    )


DEPLOY_NGINX_CONF = HERE.parent / "conf" / "nginx.conf"
# The deployment config's TLS server block: the benchmark leaves TLS out.
_TLS_SERVER = re.compile(r"    server \{\n        listen @LISTEN_TLS@ ssl;.*?\n    \}\n", re.DOTALL)


def render_deploy_conf(prefix: Path, port: int, upstream_socket: str) -> str:
    """conf/nginx.conf, as the README deploys it, proxying 127.0.0.1:``port``
    to the unix socket ``upstream_socket`` (its TCP block points there too,
    and listens on an unused unix socket; its TLS block is dropped)."""
    text = _TLS_SERVER.sub("", DEPLOY_NGINX_CONF.read_text())
    for token, value in {
        "@PREFIX@": str(prefix),
        "@SOCKET@": upstream_socket,
        "@UPSTREAM@": f"unix:{upstream_socket}",
        "@LISTEN_UNIX@": f"{HOST}:{port}",
        "@LISTEN_TCP@": f"unix:{prefix}/unused-tcp-block.sock",
    }.items():
        text = text.replace(token, value)
    if left := re.findall(r"@[A-Z_]+@", text):
        raise ServerError(f"{DEPLOY_NGINX_CONF} has placeholders the benchmark does not fill: {left}")
    return text


def _nginx_proxy(ctx: Context) -> Launch:
    # conf/nginx.conf names no user: as root, nginx's workers would run as
    # nobody and could not reach the upstream socket in our 0700 temp dir.
    user = "user root root;" if os.geteuid() == 0 else ""
    return _nginx_launch(
        ctx, lambda prefix, port: render_deploy_conf(prefix, port, ctx.unix_socket), f"daemon off; {user}"
    )


@dataclass(frozen=True)
class Server:
    """A server under test."""

    name: str
    label: str
    build: Callable[[Context], Launch]
    model: str  # how it runs, shown in the table (processes x threads)
    peers: frozenset[str] = frozenset()  # packages needed in the peers venv
    apps: frozenset[str] | None = None  # None: any WSGI app
    reference: bool = False  # a reference line, not a WSGI server


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("forkserve", "forkserve", _forkserve, "{w} worker processes"),
        Server(
            "forkserve-metrics",
            "forkserve --metrics-bind",
            lambda c: _forkserve(c, metrics=True),
            "{w} worker processes, Prometheus metrics on",
        ),
        Server(
            "forkserve-threads",
            "forkserve --threads 4",
            lambda c: _forkserve(c, threads=GTHREAD_THREADS),
            "{w} worker processes x 4 threads",
        ),
        Server(
            "gunicorn-sync",
            "Gunicorn sync",
            lambda c: _gunicorn(c, "sync"),
            "{w} worker processes",
            frozenset({"gunicorn"}),
        ),
        Server(
            "gunicorn-gthread",
            "Gunicorn gthread",
            lambda c: _gunicorn(c, "gthread"),
            "{w} worker processes x 4 threads",
            frozenset({"gunicorn"}),
        ),
        Server(
            "forkserve-gevent",
            "forkserve -k gevent",
            lambda c: _forkserve(c, worker_class="gevent"),
            "{w} worker processes, a greenlet per connection",
        ),
        Server(
            "gunicorn-gevent",
            "Gunicorn gevent",
            lambda c: _gunicorn(c, "gevent"),
            "{w} worker processes, a greenlet per connection",
            frozenset({"gunicorn", "gevent"}),
        ),
        Server(
            "waitress",
            "waitress",
            _waitress,
            "1 process x 4 threads (single-process by design)",
            frozenset({"waitress"}),
        ),
        Server(
            "granian",
            "granian (WSGI)",
            _granian,
            "{w} worker processes (Rust I/O)",
            frozenset({"granian"}),
        ),
        Server(
            "django-runserver",
            "Django runserver",
            _runserver,
            "1 process, thread per connection (dev server)",
            frozenset({"django"}),
            frozenset({"django"}),
        ),
        Server(
            "floor",
            "Python floor",
            _floor,
            "{w} worker processes, no HTTP parsing",
            apps=frozenset({"hello"}),
            reference=True,
        ),
        Server(
            "nginx",
            "nginx (C limit)",
            _nginx,
            "{w} worker processes, static answer",
            apps=frozenset({"hello"}),
            reference=True,
        ),
    )
}

DEFAULT_SERVERS = [n for n in SERVERS if n not in ("forkserve-threads", "forkserve-metrics")]
# nginx configured as the README deploys it, in front of a server on
# Context.unix_socket (behind_nginx.py); not a server of run.py's own.
NGINX_PROXY = Server(
    "nginx-proxy",
    "nginx (conf/nginx.conf)",
    _nginx_proxy,
    "conf/nginx.conf: 1 worker process, upstream keep-alive over a unix socket",
    reference=True,
)
BASELINE = "gunicorn-sync"


def supports(server: Server, app: App) -> bool:
    if server.apps is not None:
        return app.name in server.apps
    return True


def base_env(tmp: Path) -> dict[str, str]:
    """Environment for every server: where the Django db and 1 MiB file live."""
    return dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        FORKSERVE_BENCH_DB=str(tmp / "django.sqlite3"),
        FORKSERVE_BENCH_FILE=str(tmp / "download-1MiB.bin"),
    )


def migrate_django(env: dict[str, str]) -> None:
    """Creates the Django app's SQLite db (and its one row) where env says."""
    subprocess.run(
        [str(deps.peers_python()), "manage.py", "migrate", "-v0"],
        cwd=DJANGO_DIR,
        env=env,
        check=True,
        timeout=300,
    )


def standalone_context(app: App, names: list[str], workers: int, tmp: Path) -> Context:
    """A Context for the side scripts (slow_clients.py, memory.py): installs
    the peers the named servers need and prepares the Django db if needed."""
    need = set().union(*(SERVERS[n].peers for n in names))
    if app.needs_django:
        need.add("django")
    if need:
        deps.ensure_peers(need)
    fs_env: dict[str, str] = {}
    if any(n.startswith("forkserve") for n in names):
        found = deps.forkserve_env()
        if found is None:
            raise ServerError("forkserve does not import from this interpreter")
        fs_env = found[1]
    env = base_env(tmp)
    if app.needs_django:
        migrate_django(env)
    return Context(
        app=app,
        workers=workers,
        tmp=tmp,
        peers_bin=deps.peers_bin(),
        peers_site=deps.peers_site_packages() if need else "",
        forkserve_env=fs_env,
        nginx=deps.find_program("nginx") or "nginx",
        env=env,
    )


# ----------------------------------------------------------------- running


class ServerError(RuntimeError):
    """A server did not start, did not answer, or answered wrongly."""


_PORT_IN_LOG = re.compile(r"(?:Listening at|Serving on|development server at):? http://127\.0\.0\.1:(\d+)")


def http_request(
    port: int, method: str = "GET", body: bytes = b"", timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        conn.request(method, "/", body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Running:
    """One started server: its Popen, its log, its port; stops what it started.

    The server runs in a new session (its own process group, pgid = its pid),
    so stopping signals exactly that group and nothing else on the machine.
    """

    def __init__(self, server: Server, ctx: Context, log_path: Path) -> None:
        self.server = server
        self.app = ctx.app
        self.launch = server.build(ctx)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                self.launch.argv,
                cwd=self.launch.cwd,
                env=self.launch.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=[s.fileno() for s in self.launch.inherit],
            )
        except OSError:
            self._log.close()
            raise
        finally:
            # The child has its copy; ours would keep the port open after stop.
            for sock in self.launch.inherit:
                sock.close()
        self.pid = self.proc.pid
        self.port: int | None = self.launch.port

    def wait_unix_socket(self, path: str, timeout: float = 60.0) -> None:
        """Waits until ``path`` accepts a connection (a server bound there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded by the deadline
            self._check_alive()
            with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                probe.connect(path)
                return
            time.sleep(0.1)
        raise ServerError(f"{self.server.name} not on {path} after {timeout:.0f}s:\n{self.log_tail()}")

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServerError(
                f"{self.server.name} exited with {self.proc.returncode} before answering:\n{self.log_tail()}"
            )

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def _find_port(self) -> int | None:
        for match in _PORT_IN_LOG.finditer(self.log_tail(200_000)):
            if int(match.group(1)) != 0:
                return int(match.group(1))
        ports = measure.listening_ports(measure.group_pids(self.pid))
        return min(ports) if len(ports) == 1 else None

    def wait_ready(self, timeout: float = 60.0) -> int:
        """Returns the port once a smoke request got the right answer."""
        deadline = time.monotonic() + timeout
        last_error = "no port found yet"
        while time.monotonic() < deadline:  # bounded by the deadline
            self._check_alive()
            if self.port is None:
                self.port = self._find_port()
            if self.port is not None:
                try:
                    status, body = http_request(self.port, self.app.method, self.app.smoke_body, timeout=10)
                except OSError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if status == 200 and self.app.check(body):
                        return self.port
                    raise ServerError(
                        f"{self.server.name} answered {status} with a wrong body "
                        f"{body[:200]!r} for {self.app.name}:\n{self.log_tail()}"
                    )
            time.sleep(0.1)
        raise ServerError(
            f"{self.server.name} not ready after {timeout:.0f}s ({last_error}):\n{self.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after ``grace``.

        The master is reaped last: until then its pid (= the pgid) cannot be
        reused, so signalling the group can never hit a stranger.
        """
        pgid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and measure.group_pids(pgid):
            time.sleep(0.05)
        if measure.group_pids(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=grace)
        self._log.close()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
