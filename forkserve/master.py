"""Master: binds nothing itself, forks the workers and keeps them healthy.

One loop: wait for a signal (or a second), handle the queued signals one
small ``handle_<name>`` method each, reap exited workers, abort stuck
ones, and spawn workers up to the wanted number. Signal handlers do no
work: ``signal.set_wakeup_fd`` writes each signal's number to a pipe, and
the loop reads the numbers from that pipe.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Iterable

from .heartbeat import Heartbeat
from .process import (
    EXIT_APP_LOAD_ERROR,
    EXIT_BOOT_FAILURE,
    describe_exit,
    fork_child,
    set_title,
)
from .settings import Settings
from .sockets import Listener
from .worker import Worker

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGCHLD,
)
ABORT_GRACE = 2.0  # seconds between SIGABRT and SIGKILL for a stuck worker
QUICK_STOP_GRACE = 2.0  # seconds workers get on SIGINT/SIGQUIT before SIGKILL
CRASH_WINDOW = 60.0  # crashes counted for the respawn back-off
BOOT_FAILURES = (EXIT_BOOT_FAILURE, EXIT_APP_LOAD_ERROR)


class Master:
    def __init__(
        self,
        settings: Settings,
        listeners: list[Listener],
        app: Callable[..., Iterable[bytes]] | None = None,
    ) -> None:
        self.settings = settings
        self.listeners = listeners
        self.app = app  # set when preloaded
        self.wanted = settings.worker_count
        self.workers: dict[int, Worker] = {}
        self.log = logging.getLogger("forkserve.error")
        self.exit_code: int | None = None
        self.graceful = True
        self.crashes: list[float] = []
        self.spawn_after = 0.0
        self.next_number = 1

    # -- the loop --------------------------------------------------------

    def run(self) -> int:
        set_title(f"forkserve: master [{self.settings.proc_name or self.settings.app}]")
        self.install_signals()
        for listener in self.listeners:
            self.log.info("Listening at: %s (pid %d)", listener.url, os.getpid())
        if self.app is not None:
            gc.freeze()  # keep the preloaded app's objects on shared copy-on-write pages
        self.spawn_missing()
        while self.exit_code is None:
            for signum in self.wait_for_signals(self.sleep_time()):
                self.dispatch(signum)
            self.reap()
            self.abort_stuck()
            self.spawn_missing()
        return self.stop()

    def install_signals(self) -> None:
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the number

    def wait_for_signals(self, timeout: float) -> list[int]:
        ready, _, _ = select.select([self.wakeup_r], [], [], timeout)
        if not ready:
            return []
        try:
            return list(os.read(self.wakeup_r, 64))
        except BlockingIOError:
            return []

    def sleep_time(self) -> float:
        return max(0.05, min(1.0, self.spawn_after - time.monotonic())) if self.spawn_after else 1.0

    def dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name.lower()
        handler = getattr(self, f"handle_{name[3:]}", None)
        if handler is not None:
            handler()

    # -- signal handlers, one small method each --------------------------

    def handle_chld(self) -> None:
        """Reaping happens in the loop right after the signals."""

    def handle_term(self) -> None:
        """Graceful stop: workers finish what they have, then everything exits."""
        self.log.info("Handling SIGTERM: graceful stop")
        self.exit_code, self.graceful = 0, True

    def handle_int(self) -> None:
        self.log.info("Handling SIGINT: quick stop")
        self.exit_code, self.graceful = 0, False

    def handle_quit(self) -> None:
        self.log.info("Handling SIGQUIT: quick stop")
        self.exit_code, self.graceful = 0, False

    def handle_ttin(self) -> None:
        self.wanted += 1
        self.log.info("Handling SIGTTIN: %d workers wanted", self.wanted)

    def handle_ttou(self) -> None:
        self.wanted = max(1, self.wanted - 1)
        self.log.info("Handling SIGTTOU: %d workers wanted", self.wanted)
        self.retire_extra()

    def handle_hup(self) -> None:
        """Reload: new workers with freshly loaded code, then the old ones leave."""
        self.log.info("Handling SIGHUP: reloading workers")
        old = list(self.workers.values())
        for _ in range(self.wanted):
            self.spawn()
        for worker in old:
            self.retire(worker)

    def handle_usr1(self) -> None:
        self.log.info("Handling SIGUSR1: reopening log files")
        for handler in (
            logging.getLogger("forkserve.error").handlers + logging.getLogger("forkserve.access").handlers
        ):
            if isinstance(handler, logging.FileHandler):
                handler.close()  # reopened on the next record
        for worker in self.workers.values():
            self.kill_worker(worker, signal.SIGUSR1)

    # -- workers ---------------------------------------------------------

    def spawn(self) -> None:
        worker = Worker(self.next_number, self.settings, self.listeners, Heartbeat(), self.app)
        self.next_number += 1
        worker.pid = fork_child(worker.run)
        self.workers[worker.pid] = worker

    def spawn_missing(self) -> None:
        if self.exit_code is not None or time.monotonic() < self.spawn_after:
            return
        while len(self.workers) < self.wanted:
            self.spawn()

    def retire_extra(self) -> None:
        """Gracefully stop the oldest workers beyond the wanted number."""
        extra = len(self.workers) - self.wanted
        for worker in sorted(self.workers.values(), key=lambda w: w.number)[: max(0, extra)]:
            self.retire(worker)

    def retire(self, worker: Worker) -> None:
        worker.retiring = True
        self.kill_worker(worker, signal.SIGTERM)

    def kill_worker(self, worker: Worker, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)

    def reap(self) -> None:
        """Collect every exited child and explain its exit; unknown pids are ignored."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            worker.heartbeat.close()
            self.explain_exit(worker, status)

    def explain_exit(self, worker: Worker, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if code in BOOT_FAILURES and self.exit_code is None:
            self.log.error("Worker %d failed to boot (%s); stopping", worker.pid, describe_exit(status))
            self.exit_code, self.graceful = code, False
        elif code == 0 or self.exit_code is not None or worker.retiring:
            self.log.info("Worker %d exited (%s)", worker.pid, describe_exit(status))
        else:
            self.log.warning("Worker %d died (%s); replacing it", worker.pid, describe_exit(status))
            self.back_off()

    def back_off(self) -> None:
        """Delay respawns when workers keep crashing, instead of a fork storm."""
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW] + [now]
        if len(self.crashes) > 3:
            delay = min(30.0, 0.5 * 2 ** (len(self.crashes) - 4))
            self.log.warning("Workers keep crashing; next respawn in %.1fs", delay)
            self.spawn_after = now + delay

    def abort_stuck(self) -> None:
        """SIGABRT a worker silent past --timeout; SIGKILL it if that is not enough."""
        timeout = self.settings.timeout
        if not timeout:
            return
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.aborted_at:
                if now - worker.aborted_at > ABORT_GRACE:
                    self.log.error("Worker %d ignored SIGABRT; killing it", worker.pid)
                    self.kill_worker(worker, signal.SIGKILL)
            elif worker.heartbeat.age() > timeout:
                self.log.critical("WORKER TIMEOUT (pid:%d) after %gs", worker.pid, timeout)
                worker.aborted_at = now
                self.kill_worker(worker, signal.SIGABRT)

    # -- stopping --------------------------------------------------------

    def stop(self) -> int:
        """Stop every worker (gracefully or quickly), close the sockets, return the exit code."""
        signum = signal.SIGTERM if self.graceful else signal.SIGQUIT
        grace = self.settings.graceful_timeout if self.graceful else QUICK_STOP_GRACE
        for worker in self.workers.values():
            self.kill_worker(worker, signum)
        deadline = time.monotonic() + grace
        while self.workers and time.monotonic() < deadline:
            for received in self.wait_for_signals(0.1):
                if self.graceful and received in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                    self.log.info("Second stop signal: stopping quickly")
                    self.graceful = False
                    deadline = min(deadline, time.monotonic() + QUICK_STOP_GRACE)
                    for worker in self.workers.values():
                        self.kill_worker(worker, signal.SIGQUIT)
            self.reap()
        for worker in self.workers.values():
            self.log.warning("Worker %d did not stop in time; killing it", worker.pid)
            self.kill_worker(worker, signal.SIGKILL)
        while self.workers:
            pid, _status = os.waitpid(-1, 0)
            if pid in self.workers:
                self.workers.pop(pid).heartbeat.close()
        for listener in self.listeners:
            listener.close()
        self.log.info("Shutting down: master %d", os.getpid())
        assert self.exit_code is not None
        return self.exit_code
