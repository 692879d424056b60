"""The control socket: the master's side of ``forkserve ctl``.

The master listens on a unix socket and serves it from its own loop (an
``endpoints.Endpoint``), so a busy or stuck pool never hides it. The
protocol is one JSON line in, one JSON answer out, then the connection
closes::

    {"command": "add", "args": ["2"]}
    {"ok": true, "wanted": 4}
    {"ok": false, "error": "unknown command 'ad'; commands: status, ..."}

Commands: ``status`` (the master and every worker: pid, state, age,
requests served (counted by the workers with ``--metrics-bind``, else
null), memory (resident, proportional and unique bytes, metrics.py), and
the request each busy worker is serving now, from its heartbeat slot), ``reload``, ``add N``, ``remove
N``, ``reopen-logs``, ``stop [--quick]`` and ``config`` (every setting
with where its value came from). The actions call the master's signal
handlers (``handle_hup``, ``handle_ttin``/``handle_ttou`` N times,
``handle_usr1``, ``handle_term``, ``handle_int``): a command does exactly
what the signal does. The client (``ctl.py``) only formats answers.

Who may ask: the peer's credentials come from ``SO_PEERCRED``; only the
master's own user and root are answered. Anyone else gets a one-line
refusal and the master logs it. The file mode (``--control-socket-mode``,
0o600 as in Gunicorn) keeps others from connecting in the first place.

Decisions:

- **On by default**, as in Gunicorn 25.1+, at ``$XDG_RUNTIME_DIR/forkserve.ctl``,
  else ``~/.forkserve/forkserve.ctl`` (the directory made 0700). Not the
  working directory: in containers it is often read-only, and several
  servers started from one project directory would share it. Being able
  to ask a running server what it is doing without having planned for it
  is worth a socket per master. The default is a convenience and never
  stops a start: if it cannot be created (a read-only home) the master
  logs a warning, and if a live server already holds it the newcomer
  logs that it runs without one and says to give it ``--control-socket``.
  A path given explicitly is a promise scripts rely on, so there those
  cases stop the start with exit code 1, like a bind that fails.
- **Stale files.** A socket file nobody listens on (its server died) is
  replaced. A file that is not a socket is never removed.
- **Binding** is done beside the path and renamed over it, so the path
  never names nothing while a server runs.
- **Removal.** At a clean stop the master unlinks the path only if it
  still names the socket it created (same device and inode), so
  it never removes a successor's socket.
- **Upgrade (USR2).** The new master takes the path over from the old
  one (its parent) by that same rename; the old master keeps serving its
  now-unnamed socket until it exits and leaves the path alone. If the new
  master fails and exits, the old one binds the path again, as it takes
  its pid file back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import __version__, settings
from .endpoints import Endpoint, Peer
from .metrics import served, worker_memory
from .sockets import BindError

if TYPE_CHECKING:
    from .lifecycle import Record
    from .master import Master

DEFAULT_NAME = "forkserve.ctl"
BACKLOG = 16


def default_path() -> str:
    """$XDG_RUNTIME_DIR/forkserve.ctl, else ~/.forkserve/forkserve.ctl (the client looks there too)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, DEFAULT_NAME)
    return os.path.join(os.path.expanduser("~"), ".forkserve", DEFAULT_NAME)


class Held(OSError):
    """A live server already listens on the path."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"the running server {pid} holds it")
        self.pid = pid


def live_holder(path: str) -> int:
    """The pid of the process listening on ``path``; 0 if none (no file, or a stale one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return 0
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[0] or -1


def listen(path: str, mode: int, take_from: int = 0) -> socket.socket:
    """A listening socket at ``path``, replacing a stale file (or ``take_from``'s live socket).

    Raises ``Held`` when another live server holds the path, OSError when it cannot be made.
    """
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(f"{path} exists and is not a socket; forkserve will not remove it")
        holder = live_holder(path)
        if holder and holder != take_from:
            raise Held(holder)
    temporary = f"{path}.{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock.bind(temporary)
        os.chmod(temporary, mode)
        sock.listen(BACKLOG)
        os.replace(temporary, path)
    except OSError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return sock


def identity(path: str) -> tuple[int, int]:
    """(device, inode) of the file at ``path``; (0, 0) when there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return 0, 0
    return info.st_dev, info.st_ino


class CommandError(ValueError):
    """A command the master will not run as asked; the message is the answer."""


class Control:
    """The master's control socket and the commands it answers."""

    def __init__(self, master: Master, path: str, sock: socket.socket) -> None:
        self.master = master
        self.path = path
        self.started = time.time()
        self.identity = identity(path)
        self.endpoint = self.serve(sock)

    @classmethod
    def start(cls, master: Master) -> Control | None:
        """At the master's start: the control socket, or None (disabled, or the default is taken).

        Raises BindError when a path given explicitly cannot be used.
        """
        config = master.settings
        if config.control_socket_disable:
            return None
        explicit = bool(config.control_socket)
        path = os.path.abspath(config.control_socket or default_path())
        take_from = os.getppid() if master.origin.upgraded else 0  # USR2: the old master is our parent
        try:
            if not explicit:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            sock = listen(path, config.control_socket_mode, take_from)
        except Held as held:
            if explicit:
                raise BindError(
                    f"control socket {path}: the forkserve master {held.pid} is serving it; "
                    "stop that server or give this one another --control-socket"
                ) from None
            master.log.info(
                "No control socket: %s belongs to the running server %d (give this one --control-socket)",
                path,
                held.pid,
            )
            return None
        except OSError as error:
            why = error.strerror or str(error)
            if explicit:
                raise BindError(f"control socket {path}: {why}") from None
            master.log.warning("No control socket: cannot create %s: %s", path, why)
            return None
        master.log.info("Control socket: %s (forkserve ctl)", path)
        return cls(master, path, sock)

    def serve(self, sock: socket.socket) -> Endpoint:
        endpoint = Endpoint(sock, lambda data: b"\n" in data, self.respond, "control")
        self.master.endpoints.add(endpoint)
        return endpoint

    def reclaim(self) -> None:
        """A new master (USR2) took the path and has exited: bind it again."""
        if identity(self.path) == self.identity:
            return
        try:
            sock = listen(self.path, self.master.settings.control_socket_mode)
        except OSError as error:
            self.master.log.warning("Cannot take control socket %s back: %s", self.path, error)
            return
        self.master.endpoints.endpoints.remove(self.endpoint)
        self.endpoint.close()
        self.identity = identity(self.path)
        self.endpoint = self.serve(sock)
        self.master.log.info("Control socket: %s again", self.path)

    def remove(self) -> None:
        """At a clean stop: unlink the path if it still names our socket (not a successor's)."""
        if identity(self.path) == self.identity:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    # -- answering -----------------------------------------------------

    def respond(self, data: bytes, peer: Peer) -> bytes:
        own = os.geteuid()
        if peer.uid not in (own, 0):
            self.master.log.warning(
                "Control socket: refused pid %d (uid %d): only uid %d or root may control this server",
                peer.pid,
                peer.uid,
                own,
            )
            return failure(f"refused: uid {peer.uid} is neither the server's user (uid {own}) nor root")
        try:
            request = json.loads(data.partition(b"\n")[0])
            command, args = request["command"], request.get("args", [])
            if not isinstance(command, str) or not isinstance(args, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            return failure('a request is one JSON line: {"command": NAME, "args": [...]}')
        run = COMMANDS.get(command)
        if run is None:
            return failure(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
        if command in ACTIONS:
            if self.master.exit_code is not None:
                return failure("the server is stopping")
            shown = " ".join([command, *map(str, args)])
            self.master.log.info("Control: %s (from pid %d, uid %d)", shown, peer.pid, peer.uid)
        try:
            return encode({"ok": True, **run(self, [str(arg) for arg in args])})
        except CommandError as error:
            return failure(str(error))

    def status(self, args: list[str]) -> dict[str, Any]:
        no_arguments("status", args)
        master = self.master
        now = time.monotonic()
        records = sorted(master.workers.values(), key=lambda record: record.worker.number)
        return {
            "master": {
                "pid": master.pid,
                "app": master.settings.app,
                "version": __version__,
                "uptime": round(time.time() - self.started, 3),
                "generation": master.generation,
                "wanted": master.wanted,
                "reloading": master.reloading is not None,
                "stopping": master.exit_code is not None or bool(master.stop_at),
                "listening": [listener.url for listener in master.listeners],
            },
            "workers": [describe(record, now, bool(master.settings.metrics_bind)) for record in records],
        }

    def reload(self, args: list[str]) -> dict[str, Any]:
        no_arguments("reload", args)
        before = self.master.generation
        self.master.handle_hup()
        return {"generation": self.master.generation, "started": self.master.generation != before}

    def add(self, args: list[str]) -> dict[str, Any]:
        for _ in range(count("add", args)):
            self.master.handle_ttin()
        return {"wanted": self.master.wanted}

    def remove_workers(self, args: list[str]) -> dict[str, Any]:
        for _ in range(count("remove", args)):
            self.master.handle_ttou()
        return {"wanted": self.master.wanted}

    def reopen_logs(self, args: list[str]) -> dict[str, Any]:
        no_arguments("reopen-logs", args)
        self.master.handle_usr1()
        return {}

    def stop(self, args: list[str]) -> dict[str, Any]:
        if args not in ([], ["--quick"]):
            raise CommandError("stop takes only --quick")
        if args:
            self.master.handle_int()
        else:
            self.master.handle_term()
        return {"pid": self.master.pid, "graceful": self.master.graceful}

    def config(self, args: list[str]) -> dict[str, Any]:
        no_arguments("config", args)
        sources = self.master.origin.sources
        return {
            "settings": [
                {
                    "name": entry.name,
                    "value": plain(getattr(self.master.settings, entry.name)),
                    "source": sources.get(entry.name, "default"),
                }
                for entry in settings.registry()
            ]
        }


Command = Callable[[Control, list[str]], dict[str, Any]]
COMMANDS: dict[str, Command] = {
    "status": Control.status,
    "reload": Control.reload,
    "add": Control.add,
    "remove": Control.remove_workers,
    "reopen-logs": Control.reopen_logs,
    "stop": Control.stop,
    "config": Control.config,
}
ACTIONS = frozenset({"reload", "add", "remove", "reopen-logs", "stop"})
MOST_AT_ONCE = 256  # workers one add/remove may ask for


def no_arguments(command: str, args: list[str]) -> None:
    if args:
        raise CommandError(f"{command} takes no arguments")


def count(command: str, args: list[str]) -> int:
    if len(args) != 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= MOST_AT_ONCE:
        raise CommandError(f"{command} needs one number of workers, 1 to {MOST_AT_ONCE}")
    return int(args[0])


def describe(record: Record, now: float, counting: bool) -> dict[str, Any]:
    """One worker as ``status`` shows it (``counting``: workers count requests, --metrics-bind)."""
    heartbeat = record.worker.heartbeat
    request = None
    current = heartbeat.current_request()
    if current is not None:
        line, elapsed = current
        method, path, client = [*line.split(" ", 2), "", ""][:3]
        request = {"method": method, "path": path, "client": client, "elapsed": round(elapsed, 3)}
    memory = worker_memory(record.pid)
    return {
        "pid": record.pid,
        "number": record.worker.number,
        "generation": record.generation,
        "state": record.state.value,
        "age": round(now - record.born, 3),
        "served": served(heartbeat) if counting else None,
        "memory": None if memory is None else dataclasses.asdict(memory),
        "request": request,
    }


def plain(value: Any) -> Any:
    """A setting's value as JSON can carry it (a hook by its name)."""
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    if isinstance(value, tuple):
        return list(value)
    return value


def encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, default=str).encode() + b"\n"


def failure(message: str) -> bytes:
    return encode({"ok": False, "error": message})
