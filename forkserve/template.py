"""--preload that reloads: the app imported once in a template process, never in the master.

With ``--preload`` the master forks a template process per generation. The
template imports the app (and freezes the garbage collector, so those
pages stay shared), says it is ready, and then forks each worker of its
generation when the master asks. Workers share the template's memory just
as they shared a preloading master's; and since the master holds no app
code, HUP starts a new template with the new code: only once it has
imported cleanly and its workers have booted are the old template and its
workers retired. A template whose import fails changes nothing.

A worker must still be the master's child, so the master can reap it and
judge its exit: the master is a child subreaper (``PR_SET_CHILD_SUBREAPER``)
and the template forks each worker through a short-lived intermediate
process, so the worker is handed to the master at once.

One socket pair carries lines between the two::

    master -> template   spawn NUMBER SLOT SEAT WATCH
    template -> master   ready              (the app is imported)
                         pid NUMBER PID     (the worker was forked)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import socket
from typing import TYPE_CHECKING

from .apploader import AppLoadError, load_app
from .process import EXIT_APP_LOAD_ERROR, EXIT_BOOT_FAILURE, fork_child, set_title

if TYPE_CHECKING:
    from .master import Master
    from .worker import Worker

PR_SET_CHILD_SUBREAPER = 36
SPAWN_REPLY_TIMEOUT = 10.0  # seconds the master waits for a forked worker's pid


def become_subreaper() -> None:
    """Orphaned descendants (the template's workers) become this process's children."""
    import ctypes  # only --preload's template needs it; every worker would carry it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


class TemplateError(RuntimeError):
    """The template did not answer a spawn request."""


class Template:
    """The master's handle on one generation's template process."""

    def __init__(self, generation: int, pid: int, sock: socket.socket) -> None:
        self.generation = generation
        self.pid = pid
        self.sock = sock
        self.ready = False
        self.stopped = False  # asked to leave: its exit is expected
        self.buffer = b""

    @classmethod
    def start(cls, master: Master) -> Template:
        ours, theirs = socket.socketpair()
        pid = master.fork(lambda: run_template(master, theirs, ours))
        theirs.close()
        ours.setblocking(False)
        return cls(master.generation, pid, ours)

    def poll_ready(self) -> bool:
        """Has the template imported the app? (Never blocks.)"""
        if not self.ready:
            self.ready = b"ready" in self.read_lines(wait=0)
        return self.ready

    def spawn(self, number: int, slot: int, seat: int, watch: bool) -> int:
        """Ask for a worker; its pid."""
        self.sock.sendall(f"spawn {number} {slot} {seat} {int(watch)}\n".encode())
        prefix = f"pid {number} ".encode()
        lines = self.read_lines(wait=SPAWN_REPLY_TIMEOUT, until=prefix)
        reply = next((line for line in lines if line.startswith(prefix)), None)
        if reply is None:
            raise TemplateError(f"template {self.pid} forked no worker {number}")
        return int(reply[len(prefix) :])

    def read_lines(self, wait: float, until: bytes = b"") -> list[bytes]:
        lines: list[bytes] = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                data = None
            if data == b"":
                return lines  # the template is gone; reap() says why
            if data:
                self.buffer += data
                *complete, self.buffer = self.buffer.split(b"\n")
                lines += complete
                if not until or any(line.startswith(until) for line in lines):
                    return lines
                continue
            if not wait or not select.select([self.sock], [], [], wait)[0]:
                return lines

    def stop(self) -> None:
        """Ask it to leave (its workers are the master's, and stay until retired)."""
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def close(self) -> None:
        """It has exited: drop our end of the socket."""
        self.sock.close()


def run_template(master: Master, sock: socket.socket, masters_end: socket.socket) -> int:
    """In the template process: import the app, then fork workers on request until told to stop."""
    masters_end.close()
    settings = master.settings
    log = logging.getLogger("forkserve.error")
    set_title(f"forkserve: template [{settings.proc_name or settings.app}]")
    try:
        app = load_app(settings.app, settings.raw_paste_global_conf)
    except AppLoadError as error:
        log.error("%s", error)
        return EXIT_APP_LOAD_ERROR
    except Exception:
        log.exception("The template failed to import the app")
        return EXIT_BOOT_FAILURE
    gc.freeze()  # keep the app's objects on pages the workers share copy-on-write
    sock.sendall(b"ready\n")
    for line in sock.makefile("rb"):  # ends when the master closes its end
        _, number, slot, seat, watch = line.split()
        worker = master.worker_class()(
            int(number),
            settings,
            master.listeners,
            master.heartbeats.at(int(slot)),
            master.scoreboard.seat(int(seat)),
            app,
            master.tls,
        )
        worker.master_pid = master.pid
        worker.watch_files = watch == b"1"
        fork_worker(worker, master, sock)
    return 0


def fork_worker(worker: Worker, master: Master, sock: socket.socket) -> None:
    """Fork ``worker`` through an intermediate that exits at once, handing it to the master."""
    intermediate = os.fork()
    if intermediate == 0:
        pid = fork_child(lambda: worker.run(master))
        sock.sendall(b"pid %d %d\n" % (worker.number, pid))
        os._exit(0)
    os.waitpid(intermediate, 0)
