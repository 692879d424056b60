# Patterns: gevent-monkey-at-import, worker-class-gevent, worker-connections, proc-name,
#   workers-cpu-count, imported-modules.
# Monkey-patches at the top of the config, as many gevent deployments do.
import multiprocessing
import os

import gevent.monkey

gevent.monkey.patch_all()

workers = min(multiprocessing.cpu_count(), 2)
backlog = 2048
worker_class = "gevent"
worker_connections = 1000
proc_name = "corpus.gevent"
bind = "0.0.0.0:%s" % os.environ.get("PORT", 5200)  # noqa: UP031
accesslog = "-"
