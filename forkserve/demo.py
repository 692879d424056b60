"""The built-in demo app, served when no APP is named on the command line."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>forkserve</title></head>
<body><h1>forkserve is running</h1>
<p>This is the built-in demo app, answered by worker pid {pid}.
Name your own app to serve it: <code>forkserve myproject.wsgi:application</code></p>
<p>You asked for <code>{method} {path}</code>.</p></body></html>
"""


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    from html import escape

    body = PAGE.format(
        pid=os.getpid(),
        method=escape(environ["REQUEST_METHOD"]),
        path=escape(environ["PATH_INFO"]),
    ).encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
