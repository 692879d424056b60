# Patterns: bind-unix-url, umask-decimal-string, user-group-names, pre-fork-marker-file,
#   log-paths-under-env-dir.
# bind as a unix:// URL, user/group as names (the tests run as root), umask as a decimal string.
import os

bind = "unix:///tmp/corpus-nginx.socket"
workers = 1
timeout = 30
max_requests = 100
daemon = False
umask = "91"
user = "root"
group = "root"
loglevel = "info"


def pre_fork(server, worker):
    open(os.path.join(os.environ["CORPUS_DIR"], "app-initialized"), "w").close()
