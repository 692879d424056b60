# forkserve configuration: a Python file, read at start and again on SIGHUP.
#
# Names are Gunicorn's, so a gunicorn.conf.py that uses only these settings
# runs unchanged with `forkserve -c gunicorn.conf.py`. A name forkserve does
# not know is an error naming the nearest setting. Names starting with "_"
# and UPPER_CASE constants are yours. Precedence, later wins:
#   defaults < this file < $FORKSERVE_CMD_ARGS < the command line.
# `forkserve -c forkserve.conf.py --print-config` shows the result and where
# each value came from; `--check-config` also loads the app, then exits.

import multiprocessing

# What to serve: the WSGI callable, and where it is imported from.
app = "myproject.wsgi:application"
chdir = "/srv/myproject"

# Where to listen. Behind nginx on the same host, a unix socket is the usual
# choice (see conf/nginx.conf); the TCP address is handy for health checks.
bind = ["unix:/run/forkserve/forkserve.sock", "127.0.0.1:8000"]
umask = "007"  # the socket file is rw for the owner and group (nginx's group)

# Processes. For CPU-bound Django views, about one worker per core; more
# workers help when requests wait on a database or other services.
workers = multiprocessing.cpu_count()
timeout = 30  # a request running longer is answered 504 and its worker replaced
graceful_timeout = 30  # SIGTERM/SIGHUP: time for in-flight requests to finish
max_requests = 10000  # recycle workers now and then (slow leaks in app code)
max_requests_jitter = 1000  # ... but not all at once

# Keep-alive: shorter than nginx's upstream keepalive_timeout (see nginx.conf),
# so that it is always nginx that closes an idle connection, never a request
# in flight.
keepalive = 75

# Trust X-Forwarded-* / Forwarded only from the proxy in front.
forwarded_allow_ips = ["127.0.0.1", "::1"]

# Logs: the error log to stderr (journald keeps it), the access log to a file
# that logrotate rotates (see conf/forkserve.logrotate; SIGUSR1 reopens it).
loglevel = "info"
errorlog = "-"
accesslog = "/var/log/forkserve/access.log"

pidfile = "/run/forkserve/forkserve.pid"


# Hooks take Gunicorn's names and signatures; a hook that raises is logged
# and ignored.
def post_fork(server, worker):
    server.log.info("worker %d forked", worker.pid)


def worker_abort(worker):
    worker.log.warning("worker %d timed out; see the request line above", worker.pid)
