"""An app for the pool-sizing tests: each request sleeps (0.3 s, or ?SECONDS) and answers its worker's pid."""

import os
import time


def app(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or 0.3))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
