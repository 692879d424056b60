# Patterns: hook-under-if, hook-alias, hook-imported-from-module, hook-lambda,
#   obsolete-hook-names, helper-functions, imported-modules.
# Hooks chosen at import time, bound by alias or imported from the project, and a few
# lambdas under names Gunicorn dropped long ago (after_fork, before_fork, before_exec).
import os

import corpus_hooks
from corpus_hooks import child_exit  # noqa: F401 - imported to be picked up as a hook

workers = 2
bind = "127.0.0.1:8001"
accesslog = "-"


def _log_worker(server, worker):
    server.log.info("hooks_conditional_alias: worker %s forked", worker.pid)


def describe(worker):
    return f"worker {worker.pid}"


post_fork = _log_worker
when_ready = corpus_hooks.when_ready
pre_request = corpus_hooks.pre_request

if os.environ.get("CORPUS_PROFILE") == "1":

    def post_worker_init(worker):
        worker.log.info("profiling %s", describe(worker))

else:

    def post_worker_init(worker):
        worker.log.info("not profiling %s", describe(worker))


if os.environ.get("CORPUS_DIR"):

    def on_exit(server):
        server.log.info("hooks_conditional_alias: bye")


pre_fork = lambda server, worker: None  # noqa: E731
after_fork = lambda server, worker: server.log.info("after_fork %s", worker.pid)  # noqa: E731
before_fork = lambda server, worker: True  # noqa: E731
before_exec = lambda server: server.log.info("before_exec")  # noqa: E731
