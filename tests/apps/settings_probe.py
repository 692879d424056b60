"""An app and helpers for the Gunicorn settings tests.

- ``app``: answers every path with the request's environ as JSON (string,
  number and boolean values), or ``/osenv/NAME`` with os.environ[NAME];
- ``factory``: a PasteDeploy app factory whose app answers with the
  global_conf and local conf it was built with;
- ``mark_worker_init``: a hook to import into a config file; it appends a
  line to the file named by $PROBE_MARKS.
"""

from __future__ import annotations

import json
import os


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/osenv/"):
        body = os.environ.get(path[len("/osenv/") :], "<unset>").encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    shown = {k: v for k, v in environ.items() if isinstance(v, (str, int, bool))}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(shown).encode()]


def factory(global_conf, **local):
    body = json.dumps({"global": dict(global_conf), "local": local}).encode()

    def paste_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return paste_app


def mark_worker_init(worker):
    with open(os.environ["PROBE_MARKS"], "a") as f:
        f.write(f"post_worker_init {os.getpid()}\n")
