"""An app that prints, for --capture-output: what it writes to stdout and stderr."""

from __future__ import annotations

import sys

print("printing app imported", flush=True)


def app(environ, start_response):
    marker = environ.get("QUERY_STRING", "")
    print(f"app stdout {marker}", flush=True)
    print(f"app stderr {marker}", file=sys.stderr, flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"printed\n"]
