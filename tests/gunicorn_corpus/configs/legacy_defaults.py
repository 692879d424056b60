# Patterns: every-default-spelled-out, obsolete-names, worker-class-reassigned,
#   user-group-none, pidfile-none, hook-lambda, obsolete-hook-names, booleans-false.
# An old-style config that lists (almost) everything with its default, a few names Gunicorn
# no longer knows (debug, logfile), and the worker class set twice.
backlog = 2048
bind = "unix:/tmp/corpus-legacy.sock"
daemon = False
debug = False
keepalive = 5
logfile = "log/gunicorn.log"
loglevel = "info"
pidfile = None
workers = 1
umask = 0
user = None
group = None
proc_name = None
spew = False
timeout = 30
tmp_upload_dir = None
worker_class = ""
worker_class = "sync"
worker_connections = 1000
accesslog = "-"

after_fork = lambda server, worker: server.log.info("Worker spawned (pid: %s)" % worker.pid)  # noqa: E731, UP031
before_exec = lambda server: server.log.info("Forked child, reexecuting")  # noqa: E731
when_ready = lambda server: server.log.info("corpus legacy started")  # noqa: E731
