# Patterns: reload-true, loglevel-uppercase, gthread-threads, misspelt-names, max-requests-jitter,
#   log-files-relative-dir.
# A developer's config: reload on, DEBUG in capitals, the pid file and level under
# names Gunicorn does not read (pid_file, log_level).
import multiprocessing
import os

os.makedirs("log", exist_ok=True)

bind = "0.0.0.0:8000"
reload = True
workers = min(multiprocessing.cpu_count(), 2)
threads = 4
worker_class = "gthread"
accesslog = "./log/gunicorn.access.log"
errorlog = "./log/gunicorn.error.log"
loglevel = "DEBUG"
log_level = "info"
pid_file = "./run/gunicorn.pid"
max_requests = 1000
max_requests_jitter = 2
