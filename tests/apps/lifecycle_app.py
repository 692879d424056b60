"""An app for the lifecycle tests: routes that leave the app the way a request must not.

- ``/exit3``, ``/exit4``: ``sys.exit(3)`` / ``sys.exit(4)`` (the worker's own boot-failure codes);
- ``/systemexit``: a bare ``raise SystemExit``;
- ``/interrupt``: ``raise KeyboardInterrupt``;
- anything else: the worker's pid.
"""

from __future__ import annotations

import os
import sys


def _exit3():
    sys.exit(3)


def _exit4():
    sys.exit(4)


def _systemexit():
    raise SystemExit


def _interrupt():
    raise KeyboardInterrupt


ESCAPES = {
    "/exit3": _exit3,
    "/exit4": _exit4,
    "/systemexit": _systemexit,
    "/interrupt": _interrupt,
}


def app(environ, start_response):
    escape = ESCAPES.get(environ["PATH_INFO"])
    if escape is not None:
        escape()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
