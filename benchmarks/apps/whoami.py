"""WSGI app answering with the pid of the worker process that served it.

The benchmark counts answers per pid to see how evenly a server spreads
connections over its workers.
"""

import os
from collections.abc import Callable, Iterable


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = str(os.getpid()).encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
