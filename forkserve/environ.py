"""build_environ(): one parsed request -> the WSGI environ dict (PEP 3333).

A pure function of its inputs. The constant part of the environ (server
address, peer address, ``wsgi.*`` flags) is built once per connection by
``base_environ()`` and copied for each request.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from .http.memo import remember
from .http.parser import Request

# Headers whose names hold "_", set aside by build_environ for the caller
# (header_map, forwarder_headers) and never left in the environ it hands on.
UNDERSCORED = "forkserve.underscored"


def base_environ(
    *,
    server: tuple[str, str],
    peer: tuple[str, str],
    url_scheme: str,
    multithread: bool,
    file_wrapper: Any,
    errors: IO[str] | None = None,
    script_name: str = "",
) -> dict[str, Any]:
    """The keys that stay the same for every request on one connection."""
    return {
        "SERVER_NAME": server[0],
        "SERVER_PORT": server[1],
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": peer[1],
        "SCRIPT_NAME": script_name,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": errors or sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": file_wrapper,
        "wsgi.input_terminated": True,
    }


def build_environ(base: dict[str, Any], request: Request, body: Any) -> dict[str, Any]:
    """The environ of one request: ``base`` plus the request's own keys.

    Header names containing "_" are dropped: as HTTP_* keys they would be
    indistinguishable from the same name spelled with "-", letting a client
    forge a header a proxy in front set or stripped. Such headers, rare,
    are listed under ``UNDERSCORED`` for the server to judge and remove.
    """
    environ = base.copy()
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = request.path
    environ["QUERY_STRING"] = request.query
    environ["RAW_URI"] = request.target
    environ["SERVER_PROTOCOL"] = request.version
    environ["wsgi.input"] = body
    script_name = base["SCRIPT_NAME"]
    if script_name and request.path.startswith(script_name):
        environ["PATH_INFO"] = request.path[len(script_name) :]
    keys = _KEYS
    for name, value in request.headers:
        key = keys.get(name)
        if key is None:
            key = _environ_key(name)
        if not key:  # a name with "_" (see above)
            environ.setdefault(UNDERSCORED, []).append((name, value))
            continue
        if key in environ and key.startswith("HTTP_"):
            # RFC 9110 §5.3 lets repeated fields join with commas; cookies use "; ".
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    if request.host is not None:
        environ["HTTP_HOST"] = request.host

    return environ


# Request header name (upper case) -> environ key, "" for a name that is
# dropped; remembered because clients send the same few names every time.
_KEYS: dict[str, str] = {}


def _environ_key(name: str) -> str:
    if "_" in name:
        key = ""
    elif name in ("CONTENT-TYPE", "CONTENT-LENGTH"):
        key = name.replace("-", "_")  # PEP 3333: these two have no HTTP_ prefix
    else:
        key = "HTTP_" + name.replace("-", "_")
    return remember(_KEYS, name, key, len(name))
