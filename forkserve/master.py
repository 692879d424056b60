"""Master: forks the workers and keeps the pool healthy.

One loop: wait for a signal (or a second), handle the queued signals one
small ``handle_<name>`` method each, reap exited workers, start a
template when --preload needs one, read the heartbeat pages (who booted,
who is leaving), kill workers that do not boot or abort stuck ones,
finish a reload in progress, size the pool (--workers-max), and spawn
workers up to the wanted number. What the master knows of each worker is
a ``lifecycle.Record`` moved only along the table in ``lifecycle.py``.
Signal handlers do no work: ``signal.set_wakeup_fd`` writes each
signal's number to a pipe, and the loop reads the numbers from that pipe.

Operator signals (Gunicorn's): TERM graceful stop, INT/QUIT quick stop,
HUP reload, TTIN/TTOU one worker more/less, USR1 reopen logs, USR2
upgrade the master in place, WINCH stop the workers but keep the master.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import logs, systemd
from .balance import Scoreboard
from .control import Control
from .endpoints import Endpoints
from .heartbeat import Heartbeats
from .hooks import run_hook
from .lifecycle import Event, Record, State
from .metrics import MetricsServer
from .process import (
    BOOT_FAILURES,
    EXIT_BOOT_FAILURE,
    describe_exit,
    fd_limit_summary,
    fork_child,
    raise_fd_limit,
    set_title,
)
from .settings import SettingError, Settings
from .sockets import UPGRADE_FDS, Listener
from .statsd import StatsD
from .template import Template, TemplateError, become_subreaper
from .tls import make_context
from .worker import Worker

if TYPE_CHECKING:
    import ssl

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCHLD,
)
ABORT_GRACE = 2.0  # seconds between SIGABRT and SIGKILL for a stuck worker
QUICK_STOP_GRACE = 2.0  # seconds workers get on SIGINT/SIGQUIT before SIGKILL
CRASH_WINDOW = 60.0  # crashes counted for the respawn back-off
SCALE_UP_AFTER = 1.0  # seconds of sustained pressure before --workers-max adds a worker
SCALE_CHECK = 0.25  # how often the master looks at the pressure with --workers-max


def doing(record: Record) -> str:
    """What a worker is busy with, for a log line: its current request, if any."""
    current = record.worker.heartbeat.current_request()
    if current is None:
        return "between requests"
    line, elapsed = current
    return f"serving {line} for {elapsed:.1f}s"


@dataclass
class Origin:
    """How this master was started, to reload settings or re-execute itself."""

    argv: list[str] = field(default_factory=list)
    cwd: str = ""
    reload_settings: Callable[[], Settings] | None = None
    upgraded: bool = False  # started by an older master's SIGUSR2
    sources: dict[str, str] = field(default_factory=dict)  # where each setting came from (ctl config)


@dataclass
class Reload:
    """A reload in progress: what to go back to if its workers cannot boot.

    The workers it replaces are those of other generations; they are retired
    once every worker of the new generation is ready.
    """

    old_settings: Settings
    old_tls: ssl.SSLContext | None
    old_wanted: int
    old_generation: int


class Master:
    def __init__(
        self,
        settings: Settings,
        listeners: list[Listener],
        origin: Origin | None = None,
    ) -> None:
        self.settings = settings
        self.listeners = listeners
        self.tls = make_context(settings)  # a bad certificate stops us here, before any fork
        self.origin = origin or Origin()
        self.wanted = settings.worker_count
        self.workers: dict[int, Record] = {}  # by pid; see lifecycle.py
        self.scoreboard = Scoreboard()
        self.heartbeats = Heartbeats()
        self.endpoints = Endpoints()  # the master's own servers: metrics, control (endpoints.py)
        self.control: Control | None = None  # forkserve ctl (control.py)
        self.templates: dict[int, Template] = {}  # --preload: by pid (see template.py)
        self.generation = 0
        self.reloading: Reload | None = None
        self.log = logs.error_logger()
        self.exit_code: int | None = None
        self.graceful = True
        self.announced_ready = False
        self.ever_ready = False  # some worker has served: boot failures no longer stop the master
        self.crashes: list[float] = []
        self.spawn_after = 0.0
        self.next_number = 1
        self.pidfile = settings.pidfile
        self.new_master = 0  # pid of the master started by SIGUSR2
        self.statsd: StatsD | None = None
        if settings.statsd_host:
            self.statsd = StatsD(settings.statsd_host, settings.statsd_prefix, settings.dogstatsd_tags)
            self.statsd.count_log_lines(self.log)
        self.metrics_sent = 0.0
        self.metrics: MetricsServer | None = None  # --metrics-bind (metrics.py)
        self.pressure_since = 0.0  # --workers-max: when the current stretch of pressure began
        self.quiet_since = 0.0  # ... and of quiet
        self.stop_at = 0.0  # --shutdown-delay: when the graceful stop a SIGTERM asked for begins

    # -- the loop --------------------------------------------------------

    def run(self) -> int:
        self.pid = os.getpid()
        self.control = Control.start(self)  # BindError for a given path: cli exits 1, as for --bind
        set_title(f"forkserve: master [{self.settings.proc_name or self.settings.app}]")
        self.install_signals()
        run_hook(self.settings, "nworkers_changed", self, self.wanted, None)  # from None, as Gunicorn
        run_hook(self.settings, "on_starting", self)
        self.write_pidfile()
        for listener in self.listeners:
            self.log.info("Listening at: %s (pid %d)", listener.url, self.pid)
        if self.settings.metrics_bind:
            self.metrics = MetricsServer(self)
            if not self.metrics.start(self.origin.upgraded):
                self.exit_code, self.graceful = 1, False  # as for a --bind that cannot listen
        if self.settings.preload_app:
            become_subreaper()  # the templates' workers are handed to us
        # Raised once here, before any fork: every worker inherits it.
        self.log.info("%s", fd_limit_summary(raise_fd_limit()[1], self.settings.worker_connections))
        self.spawn_missing()
        while self.exit_code is None:
            for signum in self.wait_for_signals(self.sleep_time()):
                self.dispatch(signum)
            self.reap()
            self.tend_templates()
            self.observe()
            self.abort_stuck()
            self.check_shutdown_delay()
            self.check_reload()
            self.check_ready()
            self.size_pool()
            self.spawn_missing()
            self.send_metrics()
        return self.stop()

    def send_metrics(self) -> None:
        """Once a second with --statsd-host: the pool's size and, if asked, the listen queue's."""
        if self.metrics is not None:
            self.metrics.tick()
        now = time.monotonic()
        if self.statsd is None or now - self.metrics_sent < 1.0:
            return
        self.metrics_sent = now
        self.statsd.send("gunicorn.workers", len(self.workers), "g")
        if self.settings.enable_backlog_metric:
            backlog = sum(listener.waiting() or 0 for listener in self.listeners)
            self.statsd.send("gunicorn.backlog", backlog, "h")

    def install_signals(self) -> None:
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, lambda *_: None)  # the wakeup fd carries the number

    def wait_for_signals(self, timeout: float) -> list[int]:
        """Wait for a signal, serving the master's endpoints meanwhile; the signals received."""
        readers = [self.wakeup_r, *self.endpoints.readers()]
        readable, writable, _ = select.select(readers, self.endpoints.writers(), [], timeout)
        self.endpoints.handle(readable, writable)
        if self.wakeup_r not in readable:
            return []
        try:
            return list(os.read(self.wakeup_r, 64))
        except BlockingIOError:
            return []

    def fork(self, run: Callable[[], int]) -> int:
        """``fork_child``, with the child dropping its copies of the master's endpoints."""

        def child() -> int:
            self.endpoints.close()
            return run()

        return fork_child(child)

    def sleep_time(self) -> float:
        wait = self.usual_sleep_time()
        if self.stop_at:  # wake when the shutdown delay ends
            wait = min(wait, max(0.01, self.stop_at - time.monotonic()))
        return wait

    def usual_sleep_time(self) -> float:
        booting = any(record.state is State.BOOTING for record in self.workers.values())
        if booting or any(not t.ready and not t.stopped for t in self.templates.values()):
            return 0.1  # waiting for workers or a template to boot: look often
        if self.settings.workers_max:
            return SCALE_CHECK
        return max(0.05, min(1.0, self.spawn_after - time.monotonic())) if self.spawn_after else 1.0

    def check_shutdown_delay(self) -> None:
        """--shutdown-delay: once it has passed, the graceful stop SIGTERM asked for begins."""
        if self.stop_at and self.exit_code is None and time.monotonic() >= self.stop_at:
            self.log.info("Shutdown delay over: graceful stop")
            self.exit_code, self.graceful = 0, True

    def dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name.lower()
        handler = getattr(self, f"handle_{name[3:]}", None)
        if handler is not None:
            handler()

    # -- signal handlers, one small method each --------------------------

    def handle_chld(self) -> None:
        """Reaping happens in the loop right after the signals."""

    def handle_term(self) -> None:
        """Graceful stop: workers serve what is queued and in flight, then all exit.

        --health-path answers 503 from here on. With --shutdown-delay the stop
        itself waits: everything keeps serving until ``stop_at``, which the loop
        checks (``check_shutdown_delay``), so signals and reaping go on meanwhile.
        A second SIGTERM (or ``ctl stop``) during the delay stops at once.
        """
        self.heartbeats.begin_stopping()
        delay = self.settings.shutdown_delay
        if delay and not self.stop_at:
            self.log.info("Handling SIGTERM: graceful stop after the shutdown delay")
            self.log.info("Shutdown delay: readiness says 503; stopping in %gs", delay)
            self.stop_at = time.monotonic() + delay
            return
        if self.stop_at:
            self.log.info("Handling SIGTERM again during the shutdown delay: graceful stop now")
        else:
            self.log.info("Handling SIGTERM: graceful stop")
        self.exit_code, self.graceful = 0, True

    def handle_int(self) -> None:
        self.log.info("Handling SIGINT: quick stop")
        self.exit_code, self.graceful = 0, False

    def handle_quit(self) -> None:
        self.log.info("Handling SIGQUIT: quick stop")
        self.exit_code, self.graceful = 0, False

    def handle_ttin(self) -> None:
        self.set_wanted(self.wanted + 1, "SIGTTIN")

    def handle_ttou(self) -> None:
        self.set_wanted(max(1, self.wanted - 1), "SIGTTOU")
        self.retire_extra()

    def handle_hup(self) -> None:
        """Reload: new workers with the new config and code; the old leave once they are up."""
        self.log.info("Handling SIGHUP: reloading")
        systemd.notify("RELOADING=1")
        try:
            settings = self.origin.reload_settings() if self.origin.reload_settings else self.settings
            tls = make_context(settings)  # certificates are re-read: rotate them with a reload
            logs.configure(settings)
        except SettingError as error:
            logs.configure(self.settings)
            self.log.error("Reload failed, keeping the running workers: %s", error)
            systemd.notify("READY=1")
            return
        if self.metrics is not None:
            self.metrics.pool.reloads += 1
        if settings.binds != self.settings.binds:
            self.log.warning("bind changed in the config; sockets stay as they are until a restart")
        if self.reloading is None:
            self.reloading = Reload(self.settings, self.tls, self.wanted, self.generation)
        else:
            # A reload already under way is superseded: its workers never served, and the
            # workers to fall back on are still those the first reload found serving.
            for record in self.current_workers():
                self.retire(record)
        self.settings, self.tls = settings, tls
        run_hook(settings, "on_reload", self)
        self.generation += 1
        self.retire_templates({self.reloading.old_generation, self.generation})  # a superseded one
        self.set_wanted(settings.worker_count, "reload")

    def handle_usr1(self) -> None:
        self.log.info("Handling SIGUSR1: reopening log files")
        logs.reopen_files()
        for record in self.workers.values():
            self.kill_worker(record, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        """Upgrade in place: start a new master that inherits the listening sockets."""
        if self.new_master:
            self.log.warning("Handling SIGUSR2: an upgrade is already running (pid %d)", self.new_master)
            return
        self.log.info("Handling SIGUSR2: starting a new master")
        self.new_master = self.fork(self.exec_new_master)
        if self.pidfile:
            self.move_pidfile(self.settings.pidfile + ".oldbin")

    def handle_winch(self) -> None:
        """Stop the workers gracefully but keep the master (after an upgrade)."""
        self.log.info("Handling SIGWINCH: stopping workers, keeping the master")
        self.wanted = 0
        for record in list(self.workers.values()):
            self.retire(record)

    # -- workers ---------------------------------------------------------

    def current_workers(self) -> list[Record]:
        """The workers that count towards the wanted number: booting or ready, this generation."""
        return [
            record
            for record in self.workers.values()
            if record.generation == self.generation and record.state in (State.BOOTING, State.READY)
        ]

    def set_wanted(self, wanted: int, why: str = "") -> None:
        old, self.wanted = self.wanted, wanted
        if old != wanted:
            if why:
                self.log.info("%s: %d workers wanted (was %d)", why, wanted, old)
            run_hook(self.settings, "nworkers_changed", self, wanted, old)

    def worker_class(self) -> type[Worker]:
        """The class that runs in each child; gevent's module is imported only when chosen."""
        if self.settings.worker_class == "gevent":
            from .gevent_worker import GeventWorker

            return GeventWorker
        return Worker

    def spawn(self) -> None:
        seat, heartbeat = self.scoreboard.claim(), self.heartbeats.claim()
        worker = self.worker_class()(
            self.next_number, self.settings, self.listeners, heartbeat, seat, None, self.tls
        )
        worker.watch_files = self.settings.reload and not any(
            record.worker.watch_files for record in self.current_workers()
        )
        self.next_number += 1
        run_hook(self.settings, "pre_fork", self, worker)
        template = self.template(self.generation)
        if template is None:
            worker.pid = self.fork(lambda: worker.run(self))
        else:
            try:
                worker.pid = template.spawn(worker.number, heartbeat.slot, seat.index, worker.watch_files)
            except (TemplateError, OSError) as error:
                self.log.error("Cannot fork a worker from the template: %s", error)
                self.heartbeats.release(heartbeat)
                self.scoreboard.release(seat)
                self.back_off()
                return
        self.workers[worker.pid] = Record(worker, self.generation)

    def spawn_missing(self) -> None:
        if self.exit_code is not None or time.monotonic() < self.spawn_after:
            return
        if self.settings.preload_app and not self.template_ready():
            return  # workers fork from the template once it has imported the app
        current = self.current_workers()
        missing = self.wanted - len(current)
        if self.reloading is not None and self.settings.reload_mode == "chain":
            # One new worker at a time, and only into a free slot: the pool, old
            # workers still finishing included, never holds more than wanted + 1.
            booting = any(record.state is State.BOOTING for record in current)
            room = self.wanted + 1 - len(current) - len(self.other_generations())
            missing = 0 if booting else min(missing, room)
        for _ in range(missing):
            self.spawn()

    def other_generations(self, live_only: bool = False) -> list[Record]:
        """Workers of other generations still there (live_only: not yet asked to leave)."""
        states = (State.BOOTING, State.READY) if live_only else (State.BOOTING, State.READY, State.RETIRING)
        return [r for r in self.workers.values() if r.generation != self.generation and r.state in states]

    def retire_extra(self) -> None:
        """Gracefully stop the oldest workers beyond the wanted number."""
        current = sorted(self.current_workers(), key=lambda record: record.worker.number)
        for record in current[: max(0, len(current) - self.wanted)]:
            self.retire(record)

    def retire(self, record: Record) -> None:
        """Ask a worker to go: a booting one has no clients and is killed, a ready one finishes first."""
        if record.state is State.BOOTING:
            self.kill_worker(record, signal.SIGKILL)
        elif record.state is State.READY:
            self.kill_worker(record, signal.SIGTERM)
        else:
            return
        record.move(Event.RETIRE)

    def kill_worker(self, record: Record, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signum)

    def observe(self) -> None:
        """Read the heartbeat pages: who has booted, who is leaving on its own."""
        for record in self.workers.values():
            self.observe_one(record)

    def observe_one(self, record: Record) -> None:
        heartbeat = record.worker.heartbeat
        if record.state is State.BOOTING and heartbeat.ready:
            record.move(Event.BOOTED)
            self.ever_ready = True
        if record.state is State.READY and heartbeat.leaving:
            record.move(Event.LEAVING)  # replaced at once, not after it exits

    def reap(self) -> None:
        """Collect every exited child and explain its exit; unknown pids are ignored."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.new_master:
                self.new_master_exited(status)
                continue
            if pid in self.templates:
                self.template_exited(self.templates[pid], status)
                continue
            record = self.workers.pop(pid, None)
            if record is None:
                continue
            self.observe_one(record)  # it may have booted since the loop last looked
            if self.metrics is not None:  # its counts and why it left, before the slot is reused
                self.metrics.pool.worker_gone(record, self.exit_code is not None, self.generation)
            self.heartbeats.release(record.worker.heartbeat)
            self.scoreboard.release(record.worker.seat)
            self.explain_exit(record, status)
            record.move(Event.EXITED)
            run_hook(self.settings, "child_exit", self, record.worker)

    def explain_exit(self, record: Record, status: int) -> None:
        how = describe_exit(status)
        if record.boot_deadline_missed:
            how = f"no check-in within {self.settings.timeout:g}s of booting"
        if self.exit_code is not None:
            self.log.info("Worker %d exited (%s)", record.pid, how)
        elif record.failed_to_boot():
            self.boot_failed(record, os.waitstatus_to_exitcode(status), how)
        elif os.waitstatus_to_exitcode(status) == 0 or record.state is State.RETIRING:
            self.log.info("Worker %d exited (%s)", record.pid, how)
        else:
            self.log.warning("Worker %d died (%s); replacing it", record.pid, how)
            self.back_off()

    def boot_failed(self, record: Record, code: int, how: str) -> None:
        """A worker left before it ever served (see lifecycle.py for the rules)."""
        if record.state is State.RETIRING:
            self.log.info("Worker %d of a superseded reload left before booting (%s)", record.pid, how)
        elif self.reloading is not None and record.generation == self.generation:
            self.abandon_reload(f"a new worker failed to boot ({how})")
        elif not self.ever_ready and (code in BOOT_FAILURES or record.boot_deadline_missed):
            self.log.error("Worker %d failed to boot (%s); stopping", record.pid, how)
            self.exit_code = code if code in BOOT_FAILURES else EXIT_BOOT_FAILURE
            self.graceful = False
        else:
            self.log.error("Worker %d failed to boot (%s); retrying", record.pid, how)
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
        """Past --timeout: kill a worker that does not boot; SIGABRT (then SIGKILL) one stuck in a request."""
        timeout = self.settings.timeout
        if not timeout:
            return
        now = time.monotonic()
        for record in list(self.workers.values()):
            if record.boot_overdue(timeout, now) and not record.boot_deadline_missed:
                self.log.error(
                    "Worker %d did not boot within %gs (still loading the app); killing it",
                    record.pid,
                    timeout,
                )
                record.boot_deadline_missed = True
                self.kill_worker(record, signal.SIGKILL)
            elif record.aborted_at:
                if now - record.aborted_at > ABORT_GRACE:
                    self.log.error(
                        "Worker %d ignored SIGABRT (stuck outside Python code?) %s; killing it",
                        record.pid,
                        doing(record),
                    )
                    self.kill_worker(record, signal.SIGKILL)
                    record.aborted_at = float("inf")  # killed once is enough
            elif record.booted_once and record.worker.heartbeat.age() > timeout:
                # The worker logs its stack when SIGABRT reaches it (Worker.handle_abort).
                self.log.critical("WORKER TIMEOUT (pid:%d) after %gs %s", record.pid, timeout, doing(record))
                record.aborted_at = now
                self.kill_worker(record, signal.SIGABRT)

    # -- templates (--preload; see template.py) ---------------------------

    def template(self, generation: int) -> Template | None:
        """The running template of ``generation``, if any."""
        return next(
            (t for t in self.templates.values() if t.generation == generation and not t.stopped), None
        )

    def template_ready(self) -> bool:
        template = self.template(self.generation)
        return template is not None and template.poll_ready()

    def tend_templates(self) -> None:
        """--preload: the current generation has a template (a new one after HUP, or if it died)."""
        if not self.settings.preload_app or self.exit_code is not None:
            return
        if self.template(self.generation) is None and time.monotonic() >= self.spawn_after:
            template = Template.start(self)
            self.templates[template.pid] = template

    def retire_templates(self, keep: set[int]) -> None:
        """Stop the templates of every generation but ``keep`` (their workers stay until retired)."""
        for template in self.templates.values():
            if template.generation not in keep and not template.stopped:
                template.stop()

    def template_exited(self, template: Template, status: int) -> None:
        """A template left: as asked, after serving (a new one starts), or before importing the app."""
        del self.templates[template.pid]
        template.close()
        how = describe_exit(status)
        if template.ready or template.stopped or self.exit_code is not None:
            self.log.info("Template %d exited (%s)", template.pid, how)
            return
        code = os.waitstatus_to_exitcode(status)
        if self.reloading is not None and template.generation == self.generation:
            self.abandon_reload(f"the new template failed to import the app ({how})")
        elif not self.ever_ready:
            self.log.error("Template %d failed to import the app (%s); stopping", template.pid, how)
            self.exit_code = code if code in BOOT_FAILURES else EXIT_BOOT_FAILURE
            self.graceful = False
        else:
            self.log.error("Template %d failed to import the app (%s); retrying", template.pid, how)
            self.back_off()

    # -- a pool that sizes itself (--workers-max) --------------------------

    def size_pool(self) -> None:
        """Add a worker after sustained pressure, retire an extra one after sustained quiet.

        One step at a time, each after its own stretch of pressure or quiet, so
        the pool does not flap: up after SCALE_UP_AFTER seconds of pressure,
        down after --scale-down-after seconds of quiet, between --workers and
        --workers-max.
        """
        settings = self.settings
        if not settings.workers_max or self.reloading is not None or self.exit_code is not None:
            return
        now = time.monotonic()
        reason = self.pressure()
        if reason:
            self.quiet_since = 0.0
            self.pressure_since = self.pressure_since or now
            booting = any(record.state is State.BOOTING for record in self.current_workers())
            if (
                now - self.pressure_since >= SCALE_UP_AFTER
                and self.wanted < settings.workers_max
                and not booting
            ):
                self.log.info("Scaling up to %d workers: %s", self.wanted + 1, reason)
                self.set_wanted(self.wanted + 1)
                self.pressure_since = now
            return
        self.pressure_since = 0.0
        self.quiet_since = self.quiet_since or now
        if now - self.quiet_since >= settings.scale_down_after and self.wanted > settings.worker_count:
            self.log.info(
                "Scaling down to %d workers: quiet for %gs", self.wanted - 1, settings.scale_down_after
            )
            self.set_wanted(self.wanted - 1)
            self.retire_extra()
            self.quiet_since = now

    def pressure(self) -> str:
        """Why the pool needs another worker now, or '' when it does not."""
        waiting = sum(listener.waiting() or 0 for listener in self.listeners)
        if waiting:
            return f"{waiting} connections waiting in the listen queue"
        ready = [record for record in self.current_workers() if record.state is State.READY]
        if ready and all(record.worker.heartbeat.busy for record in ready):
            return f"all {len(ready)} workers busy"
        return ""

    # -- reload and readiness --------------------------------------------

    def check_reload(self) -> None:
        """Retire the workers of other generations once every new one has booted.

        In a chain reload, each new worker that is ready retires one old
        worker at once, so the next new one can take its slot.
        """
        if self.reloading is None:
            return
        new = self.current_workers()
        ready = [record for record in new if record.state is State.READY]
        old = sorted(self.other_generations(live_only=True), key=lambda record: record.worker.number)
        if self.settings.reload_mode == "chain" and old and len(ready) + len(old) > self.wanted:
            newest = max(ready, key=lambda record: record.worker.number)
            self.log.info(
                "Reload (chain): worker %d is ready; retiring old worker %d (%d of %d replaced)",
                newest.pid,
                old[0].pid,
                len(ready),
                self.wanted,
            )
            self.retire(old[0])
        if len(new) >= self.wanted and len(ready) == len(new):
            for record in self.other_generations(live_only=True):
                self.retire(record)
            self.reloading = None
            self.retire_templates({self.generation})
            self.log.info("Reload complete: %d new workers serving", len(new))
            systemd.notify("READY=1")

    def abandon_reload(self, why: str) -> None:
        """The new code or config cannot boot: keep the old workers serving."""
        reload = self.reloading
        assert reload is not None
        self.log.error("Reload failed, keeping the old workers: %s", why)
        for record in self.current_workers():
            self.retire(record)
        self.tls = reload.old_tls
        self.settings, self.wanted, self.generation = (
            reload.old_settings,
            reload.old_wanted,
            reload.old_generation,
        )
        self.reloading = None
        self.retire_templates({self.generation})
        logs.configure(self.settings)
        systemd.notify("READY=1")

    def check_ready(self) -> None:
        if self.announced_ready:
            return
        current = self.current_workers()
        if len(current) >= self.wanted and all(record.state is State.READY for record in current):
            self.announced_ready = True
            run_hook(self.settings, "when_ready", self)
            message = f"MAINPID={self.pid}\nREADY=1" if self.origin.upgraded else "READY=1"
            systemd.notify(message)

    # -- upgrade in place ------------------------------------------------

    def exec_new_master(self) -> int:
        """In a forked child: become a new master that inherits our sockets."""
        run_hook(self.settings, "pre_exec", self)
        fds = []
        for listener in self.listeners:
            listener.sock.set_inheritable(True)
            fds.append(str(listener.sock.fileno()))
        env = {**os.environ, UPGRADE_FDS: ",".join(fds)}
        if self.origin.cwd:
            os.chdir(self.origin.cwd)
        os.execve(sys.executable, [sys.executable, "-m", "forkserve", *self.origin.argv], env)
        return 1  # not reached: execve replaces the process

    def new_master_exited(self, status: int) -> None:
        self.log.error(
            "New master %d exited (%s); this master carries on", self.new_master, describe_exit(status)
        )
        self.new_master = 0
        if self.pidfile:
            self.move_pidfile(self.settings.pidfile)
        if self.control:
            self.control.reclaim()

    # -- pid file --------------------------------------------------------

    def write_pidfile(self) -> None:
        if not self.pidfile:
            return
        temporary = f"{self.pidfile}.{self.pid}.tmp"
        with open(temporary, "w") as file:
            file.write(f"{self.pid}\n")
        os.replace(temporary, self.pidfile)

    def move_pidfile(self, path: str) -> None:
        try:
            os.replace(self.pidfile, path)
        except OSError as exc:
            self.log.warning("Cannot move pid file %s to %s: %s", self.pidfile, path, exc.strerror)
            return
        self.pidfile = path

    def remove_pidfile(self) -> None:
        if not self.pidfile:
            return
        try:
            with open(self.pidfile) as file:
                mine = file.read().strip() == str(self.pid)
            if mine:  # a new master may own the path by now
                os.unlink(self.pidfile)
        except OSError:
            pass

    # -- stopping --------------------------------------------------------

    def stop(self) -> int:
        """Stop every worker (gracefully or quickly), close the sockets, return the exit code."""
        systemd.notify("STOPPING=1")
        self.heartbeats.begin_stopping()  # however the stop came: --health-path answers 503
        self.retire_templates(set())
        signum = signal.SIGTERM if self.graceful else signal.SIGQUIT
        grace = self.settings.graceful_timeout if self.graceful else QUICK_STOP_GRACE
        for record in self.workers.values():
            self.kill_worker(record, signum)
        # The workers keep their copies until they have taken the backlog (Worker.close_listeners).
        for listener in self.listeners:
            listener.close(remove_file=not self.new_master)
        deadline = time.monotonic() + grace
        while self.workers and time.monotonic() < deadline:
            for received in self.wait_for_signals(0.1):
                if self.graceful and received in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                    self.log.info("Second stop signal: stopping quickly")
                    self.graceful = False
                    deadline = min(deadline, time.monotonic() + QUICK_STOP_GRACE)
                    for record in self.workers.values():
                        self.kill_worker(record, signal.SIGQUIT)
            self.reap()
        for record in self.workers.values():
            self.log.warning("Worker %d did not stop in time; killing it", record.pid)
            self.kill_worker(record, signal.SIGKILL)
        while self.workers:
            pid, _status = os.waitpid(-1, 0)
            if pid in self.workers:
                self.workers.pop(pid)
        self.endpoints.close()
        if self.control:
            self.control.remove()  # only if the path is still ours (not a new master's)
        self.remove_pidfile()
        run_hook(self.settings, "on_exit", self)
        self.log.info("Shutting down: master %d", self.pid)
        # Python restores the default handlers while it shuts down, so a late
        # stop signal (an impatient operator, systemd) would turn this clean
        # exit into death by signal.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_IGN)
        assert self.exit_code is not None
        return self.exit_code
