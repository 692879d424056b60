# Patterns: bind-list-tcp-and-unix, bind-port-only, bind-unix-relative, umask-octal-string,
#   raw-env-list, hooks-prometheus-style.
# Listens on a TCP port and a unix socket next to the app; umask written as a string.
import os

workers = 2
raw_env = ["PROMETHEUS_MULTIPROC_DIR=./prometheus_tmp", "CORPUS_MARK=unix-and-tcp"]
bind = [":8081", "unix:corpus-app.socket"]
umask = "0o007"
accesslog = "-"


def when_ready(server):
    os.makedirs("prometheus_tmp", exist_ok=True)


def child_exit(server, worker):
    marker = os.path.join("prometheus_tmp", f"dead-{worker.pid}")
    with open(marker, "w"):
        pass
