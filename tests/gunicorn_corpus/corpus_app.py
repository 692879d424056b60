"""The WSGI app every corpus case serves.

It answers any path with JSON describing what the server told it, so a test
can see the effect of settings that change the environ (proxy trust, scheme,
raw_env) and which process answered. ``/sleep/<seconds>`` sleeps first, to
observe a worker timeout.
"""

from __future__ import annotations

import json
import os
import time

ENV_KEYS = ("CORPUS_MARK", "DJANGO_SETTINGS_MODULE", "CORPUS_FROM_CMDLINE")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/sleep/"):
        time.sleep(float(path.rsplit("/", 1)[1]))
    body = json.dumps(
        {
            "REMOTE_ADDR": environ.get("REMOTE_ADDR"),
            "wsgi.url_scheme": environ.get("wsgi.url_scheme"),
            "SCRIPT_NAME": environ.get("SCRIPT_NAME", ""),
            "PATH_INFO": path,
            "pid": os.getpid(),
            "env": {key: os.environ.get(key) for key in ENV_KEYS},
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


application = app


def create_app():
    """A factory, for the ``'module:create_app()'`` form of the app argument."""
    return app
