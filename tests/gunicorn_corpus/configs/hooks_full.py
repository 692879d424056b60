# Patterns: server-hooks, hook-defined-twice, pidfile-relative, bind-fstring-port-env,
#   keepalive-graceful-backlog.
# Every lifecycle hook, logging through server.log / worker.log; when_ready written twice
# (the second definition wins).
import os

bind = f"0.0.0.0:{os.environ.get('PORT', 5000)}"
workers = 2
worker_class = "sync"
timeout = 120
keepalive = 2
graceful_timeout = 10
backlog = 512
pidfile = "corpus-hooks.pid"
accesslog = "-"


def on_starting(server):
    server.log.info("hooks_full: on_starting")


def when_ready(server):
    server.log.info("hooks_full: first when_ready")


def pre_fork(server, worker):
    pass


def post_fork(server, worker):
    server.log.info("hooks_full: worker spawned (pid: %s)", worker.pid)


def post_worker_init(worker):
    worker.log.info("hooks_full: worker %s initialised", worker.pid)


def pre_exec(server):
    server.log.info("hooks_full: forked child, re-executing")


def when_ready(server):  # noqa: F811 - real configs define it twice
    server.log.info("hooks_full: server is ready, spawning workers")


def worker_int(worker):
    worker.log.info("hooks_full: worker received INT or QUIT")


def worker_abort(worker):
    worker.log.info("hooks_full: worker received SIGABRT")


def worker_exit(server, worker):
    server.log.info("hooks_full: worker %s exiting", worker.pid)


def child_exit(server, worker):
    server.log.info("hooks_full: child %s gone", worker.pid)


def nworkers_changed(server, new_value, old_value):
    server.log.info("hooks_full: workers %s -> %s", old_value, new_value)


def on_exit(server):
    server.log.info("hooks_full: on_exit")
