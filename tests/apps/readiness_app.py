"""An app for the readiness tests: it logs every call, sleeps on demand, and leaves orphans behind."""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    print(f"app called {path}", file=sys.stderr, flush=True)
    body = b"Hello, world!"
    if path == "/sleep":
        time.sleep(float(parse_qs(environ["QUERY_STRING"]).get("seconds", ["1"])[0]))
        body = b"slept"
    elif path == "/orphan":
        body = b"%d" % orphan(float(parse_qs(environ["QUERY_STRING"]).get("seconds", ["1"])[0]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def orphan(seconds: float) -> int:
    """A double fork: the grandchild outlives its parent, is handed to PID 1, and exits after ``seconds``.

    Returns the grandchild's pid (as this process's PID namespace numbers it).
    """
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(write)
            time.sleep(seconds)
            os._exit(0)
        os.write(write, b"%d" % grandchild)
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)  # the parent is ours to reap; the grandchild is now an orphan
    with os.fdopen(read, "rb") as pipe:
        return int(pipe.read())
