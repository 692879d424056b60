# Patterns: timeout-as-string, graceful-timeout-string, worker-class-sync, bind-zero-host.
# A short worker timeout written as a string (as env-driven configs end up with).
bind = "0:8000"
workers = 2
worker_class = "sync"
timeout = "3"
graceful_timeout = "2"
accesslog = "-"
