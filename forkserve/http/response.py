"""Response heads: validating what the app sent and framing the body.

``ResponseHead`` turns a WSGI status line and header list into bytes, and
decides how the body is framed: by ``Content-Length`` when it is known,
chunked on HTTP/1.1 otherwise, and by closing the connection on HTTP/1.0.
Anything that would put a malformed message on the wire raises
``InvalidResponse`` so the server can answer 500 instead.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from . import grammar
from .errors import InvalidResponse
from .memo import remember

# PEP 3333 forbids hop-by-hop headers from apps: the server owns framing and
# connection management. "Connection: close" is tolerated as a request to
# close, since many apps send it.
HOP_BY_HOP = frozenset({"keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"})
# RFC 9112 §4: status-code SP [ reason-phrase ], the phrase being HTAB, SP,
# VCHAR and obs-text. PEP 3333 requires the space even with no phrase.
STATUS_LINE = re.compile(r"[1-5][0-9]{2} [\t \x21-\x7e\x80-\xff]*")
# RFC 9110 §5.5: no CR, LF, NUL or other control character in a value; a
# value that held them would split the response into two.
FIELD_VALUE = re.compile(r"[\t \x21-\x7e\x80-\xff]*")
NO_BODY_STATUSES = frozenset({204, 304})
# Fixed English names: strftime's %a and %b follow the locale, which an app may set.
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Fields the server adds itself unless the app set them: a second Date or
# Server line would make the response carry two values for one field.
SERVER_FIELDS = frozenset({"date", "server"})


class Framing:
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"
    NONE = "none"  # HEAD, 204, 304


@dataclass(slots=True)
class ResponseHead:
    """The head of one response and how its body is framed."""

    status: int
    data: bytes
    framing: str
    content_length: int | None
    keep_alive: bool


def status_code(status: str) -> int:
    """The numeric code of a WSGI status string, checked for the wire.

    A 1xx status is refused: a WSGI app gives the final response, and a
    client told "101" or "100" would go on waiting for one.
    """
    if not isinstance(status, str) or STATUS_LINE.fullmatch(status) is None:
        raise InvalidResponse(f"invalid status line {status!r}")
    code = int(status[:3])
    if code < 200:
        raise InvalidResponse(f"informational status {status!r} as a final response")
    return code


# Checked statuses and header lines, pre-encoded (see memo.py). An app
# answers with the same few of each, so most responses are assembled from
# these without a regular expression or an encode().
_STATUSES: dict[str, tuple[int, bytes]] = {}  # "200 OK" -> (200, b" 200 OK\r\n")
_FIELDS: dict[tuple[str, str], tuple[str, bytes]] = {}  # (name, value) -> (role, b"name: value\r\n")
# The role of a field: "" for the app's own fields, sent as they are; else the
# lower-case name of a field the server looks at (see build_head).
_ROLES = frozenset({"content-length", "connection", *SERVER_FIELDS})


def build_head(
    status: str,
    headers: list[tuple[str, str]],
    *,
    version: str,
    method: str,
    keep_alive: bool,
    body_length: int | None,
    extra: bytes,
) -> ResponseHead:
    """Serialise a response head.

    ``body_length`` is the body's size when the server knows it (a
    one-element list, a file), used when the app did not say.
    ``extra`` is pre-encoded server headers (Date, Server) ending in CRLF.
    """
    code, status_line = _checked_status(status)
    parts: list[bytes] = [version.encode("ascii"), status_line, b""]  # b"": extra, once final
    declared = None
    for field in headers:
        role, line = _checked_field(field)
        if not role:
            parts.append(line)
        elif role == "content-length":
            declared = _content_length(field[1], declared)
        elif role == "connection":
            if "close" in (token.strip(" \t") for token in field[1].lower().split(",")):
                keep_alive = False
        else:  # Date or Server: the app's replaces the server's own
            extra = _without_field(extra, role)
            parts.append(line)
    parts[2] = extra

    if method == "HEAD" or code in NO_BODY_STATUSES:
        framing, length = Framing.NONE, declared
        if declared is not None and code != 204:
            parts.append(b"Content-Length: %d\r\n" % declared)
    elif declared is not None or body_length is not None:
        framing = Framing.LENGTH
        length = declared if declared is not None else body_length
        parts.append(b"Content-Length: %d\r\n" % length)  # type: ignore[str-format]
    elif version == "HTTP/1.1":
        framing, length = Framing.CHUNKED, None
        parts.append(b"Transfer-Encoding: chunked\r\n")
    else:
        framing, length, keep_alive = Framing.CLOSE, None, False

    if keep_alive:
        if version == "HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")
    else:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return ResponseHead(code, b"".join(parts), framing, length, keep_alive)


def _checked_status(status: str) -> tuple[int, bytes]:
    """(code, b" status\r\n") for a status that passes ``status_code()``."""
    try:
        known = _STATUSES.get(status)
    except TypeError:  # unhashable, so not a str: status_code() says so
        known = None
    if known is not None:
        return known
    code = status_code(status)
    return remember(_STATUSES, status, (code, b" %s\r\n" % status.encode("latin-1")), len(status))


def _checked_field(field: tuple[str, str]) -> tuple[str, bytes]:
    """(role, encoded line) of one app header that passes ``_check_header()``."""
    try:
        known = _FIELDS.get(field)
    except TypeError:  # e.g. a list: the check below names what is wrong
        known = None
    if known is not None:
        return known
    name, value = field
    lname = _check_header(name, value)
    role = lname if lname in _ROLES else ""
    line = f"{name}: {value}\r\n".encode("latin-1")
    return remember(_FIELDS, (name, value), (role, line), len(line))


def _without_field(extra: bytes, lname: str) -> bytes:
    """The server's own header lines minus one field the app set itself."""
    prefix = lname.encode("ascii") + b":"
    lines = extra.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(prefix))


def _check_header(name: str, value: str) -> str:
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidResponse(f"header {name!r}: {value!r} is not a pair of str")
    if grammar.TOKEN.fullmatch(name) is None:
        raise InvalidResponse(f"invalid header name {name!r}")
    if FIELD_VALUE.fullmatch(value) is None:
        raise InvalidResponse(f"invalid value for header {name!r}")
    lname = name.lower()
    if lname in HOP_BY_HOP:
        raise InvalidResponse(f"hop-by-hop header {name!r} set by the app")
    return lname


def _content_length(value: str, previous: int | None) -> int:
    if not value.isdigit() or not value.isascii():
        raise InvalidResponse(f"invalid Content-Length {value!r}")
    length = int(value)
    if previous is not None and previous != length:
        raise InvalidResponse("conflicting Content-Length headers")
    return length


def simple_response(status: int, phrase: str, body: bytes, extra: bytes = b"") -> bytes:
    """A complete closing response, for errors the server answers itself."""
    return (
        b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (status, phrase.encode("ascii"), extra, len(body), body)
    )


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def http_date(seconds: float) -> str:
    """``seconds`` since the epoch as an IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT"."""
    t = time.gmtime(seconds)
    return (
        f"{DAYS[t.tm_wday]}, {t.tm_mday:02d} {MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
