"""Hooks a corpus config imports from a module of the project, as real configs do."""

from __future__ import annotations

import os


def when_ready(server):
    server.log.info("corpus_hooks: ready with %s", os.environ.get("CORPUS_DIR", "?"))


def child_exit(server, worker):
    server.log.info("corpus_hooks: child %s exited", worker.pid)


def pre_request(worker, req):
    worker.log.debug("corpus_hooks: %s %s", req.method, req.path)


def post_request(worker, req, environ, resp):
    worker.log.debug("corpus_hooks: answered %s", req.path)


def apply_defaults(namespace):
    """Fills a config's globals with the project's defaults (``defaults(globals())``)."""
    namespace.setdefault("workers", 2)
    namespace.setdefault("timeout", 45)
    namespace.setdefault("keepalive", 4)
    namespace.setdefault("accesslog", "-")
