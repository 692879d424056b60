# Patterns: gevent-monkey-at-import, worker-class-dotted-path, bind-list-fstring-env,
#   keepalive-zero, timeout-large.
# `from gevent import monkey; monkey.patch_all()` on one line, and the worker named by its
# full class path.
from gevent import monkey; monkey.patch_all()  # noqa: E702, I001  # fmt: skip

import os  # noqa: E402

bind = [f"{os.environ.get('HTTP_ADDR', '0.0.0.0')}:{os.environ.get('HTTP_PORT', '8000')}"]
workers = 1
worker_class = "gunicorn.workers.ggevent.GeventWorker"
worker_connections = 20
keepalive = 0
timeout = 3600
accesslog = "-"
