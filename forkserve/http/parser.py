"""RequestParser: bytes in any pieces, requests and body bytes out.

The parser owns one connection's inbound byte stream. It never reads a
socket: the caller ``feed()``s whatever arrived and asks for the next
request or the next body bytes. ``None`` always means "feed me more".

States, per request on a connection::

    state   call                   result                        next state
    HEAD    next_request()         None: head incomplete         HEAD
    HEAD    next_request()         Request, body to come         BODY
    HEAD    next_request()         Request, no body              DONE
    BODY    read_body(n)           bytes / None (feed me)        BODY
    BODY    read_body(n)           the last body bytes           DONE
    DONE    read_body(n)           b""                           DONE
    DONE    start_next()           -                             HEAD
    any     (protocol violation)   raises an HTTPError           (dead)

After an ``HTTPError`` the connection must be closed: the parser no longer
knows where the next request would start, and guessing is how requests get
smuggled.

Framing decisions follow RFC 9112 §6: ``Transfer-Encoding`` together with
``Content-Length`` is refused rather than resolved, as is anything but a
final ``chunked`` coding, and every field that decides framing must be
unambiguous. A bare LF as line terminator is refused everywhere, in the
head, in chunk-size lines and in trailers (RFC 9112 §2.2 allows either
choice; refusing means we never split a message differently from a proxy
that does not accept it).

Heads that arrive in pieces are checked line by line as the lines complete,
so an overlong or malformed head is refused as soon as that is certain,
without buffering more. A complete head takes a fast path; when the fast
path finds a fault, the same line-by-line walk names it, so the answer never
depends on how the bytes were split.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote_to_bytes

from . import grammar
from .body import Body, ChunkedBody, EmptyBody, LengthBody
from .errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    NotImplementedCoding,
    PayloadTooLarge,
    ProtocolUsageError,
    URITooLong,
    VersionNotSupported,
)
from .memo import remember


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may make the parser hold.

    Line sizes count the bytes of a line without its CRLF; ``head_size``
    counts the whole head including every CRLF. The defaults are
    Gunicorn's where Gunicorn has the setting, so a deployment that fits
    one fits the other; each is safe for the open internet.
    """

    request_line: int = 4094  # longer request lines get 414
    fields: int = 100  # header count; past it, 431
    field_size: int = 8190  # one header line; past it, 431
    head_size: int = 65536  # whole head; bounds memory per connection (431)
    max_body: int = 0  # 0 = no limit; else larger bodies get 413 before they are read
    chunk_ext: int = 1024  # one chunk-size line incl. extensions (400)
    trailer_size: int = 8190  # all trailer lines of a chunked body together (431)


@dataclass(slots=True)
class Request:
    """One parsed request head, as a value: nothing changes it once parsed.

    Not ``frozen``: a frozen dataclass sets each field through
    ``object.__setattr__``, which costs about a microsecond per request.
    """

    method: str
    target: str  # as sent, latin-1 decoded (RAW_URI)
    path: str  # percent-decoded, latin-1 (PEP 3333 PATH_INFO)
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[str, str], ...]  # (UPPER-CASE NAME, value) in order
    host: str | None  # from absolute-form target or the Host header
    keep_alive: bool
    content_length: int | None  # None when chunked
    chunked: bool
    expect_continue: bool


class State(Enum):
    HEAD = "head"
    BODY = "body"
    DONE = "done"


# Fields that decide framing, routing or connection handling; the rest are
# only passed on to the app.
_FRAMING_FIELDS = frozenset({"HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "CONNECTION", "EXPECT"})
_EMPTY_BODY = EmptyBody()
# Host values that passed grammar.HOST: a client sends the same one every time.
_VALID_HOSTS: dict[str, bool] = {}


class RequestParser:
    """Parses successive requests from one connection's bytes."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits = limits or Limits()
        # An overlong request line must be reported as such (414) before the
        # head as a whole is (431), however the bytes were split.
        self.line_limit = min(limits.request_line, limits.head_size - 2)
        self.buffer = bytearray()
        self.state = State.HEAD
        self.body: Body = _EMPTY_BODY
        self._reset_head_scan()

    def _reset_head_scan(self) -> None:
        self._scan = 0  # where the search for the end of the head resumes
        self._checked = 0  # bytes of the head already checked line by line
        self._lines = 0  # lines among them (the request line is line 1)

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        self.buffer += data

    def next_request(self) -> Request | None:
        """The next request head, or None while its bytes are incomplete."""
        if self.state is not State.HEAD:
            raise ProtocolUsageError(f"next_request() in state {self.state.value}")
        buf = self.buffer
        if not buf:
            return None  # the usual case right after a response: nothing sent yet
        if buf.startswith(b"\r\n"):
            self._skip_empty_lines()
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            self._scan = max(0, len(buf) - 3)
            self._check_partial_head()
            return None
        head = buf[:end].decode("latin-1")
        del buf[: end + 4]
        self._reset_head_scan()
        request = self._parse_head(head)
        self.body = self._make_body(request)
        self.state = State.DONE if self.body.complete else State.BODY
        return request

    def read_body(self, size: int = -1) -> bytes | None:
        """Up to ``size`` body bytes (all buffered when -1); b"" at the end.

        None means the body is not finished but no bytes are buffered.
        """
        if self.state is State.DONE:
            return b""
        if self.state is not State.BODY:
            raise ProtocolUsageError("read_body() before a request head")
        data = self.body.read(self.buffer, size)
        if self.body.complete:
            self.state = State.DONE
        return data

    @property
    def body_complete(self) -> bool:
        return self.state is State.DONE

    def body_left(self) -> int | None:
        """Body bytes still to come, or None while a chunked body is unfinished."""
        if self.state is not State.BODY:
            return 0
        return self.body.remaining if isinstance(self.body, LengthBody) else None

    def start_next(self) -> None:
        """Move on to the next request on this connection; the body must be done."""
        if self.state is not State.DONE:
            raise ProtocolUsageError("start_next() before the body was read")
        self.state = State.HEAD
        self.body = _EMPTY_BODY

    # -- the request head, in pieces ---------------------------------------

    def _skip_empty_lines(self) -> None:
        """RFC 9112 §2.2: ignore CRLFs before a request-line (sent by old clients)."""
        buf = self.buffer
        start = 0
        while buf.startswith(b"\r\n", start):
            start += 2
        del buf[:start]
        self._reset_head_scan()

    def _check_partial_head(self) -> None:
        """Check the complete lines of an unfinished head, and the size of the rest."""
        buf = self.buffer
        last = buf.rfind(b"\n", self._checked)
        if last >= 0:
            self._check_lines(buf[self._checked : last + 1].decode("latin-1"), self._checked)
            self._checked = last + 1
        # The line still arriving: refuse it once it is certain to be too long.
        partial = len(buf) - self._checked
        if self._lines == 0 and partial - 1 > self.line_limit:
            raise URITooLong("request line too long")
        if self._lines and partial - 1 > self.limits.field_size:
            raise HeaderFieldsTooLarge("header field too large")
        if len(buf) >= self.limits.head_size:
            raise HeaderFieldsTooLarge("request head too large")

    def _check_lines(self, text: str, offset: int) -> None:
        """Check complete lines (each ending in LF) that start at ``offset`` in the head."""
        start = 0
        while start < len(text):
            end = text.index("\n", start) + 1
            self._check_line(text[start : end - 1], offset + end)
            start = end

    def _check_line(self, raw: str, end: int) -> None:
        """One head line without its LF, ending at offset ``end``; raises its fault.

        The order of the checks is the order of the answers: the same input
        gets the same status whether it arrived whole or byte by byte.
        """
        limits = self.limits
        self._lines += 1
        first = self._lines == 1
        if first and len(raw) - 1 > self.line_limit:
            raise URITooLong("request line too long")
        if not first and len(raw) - 1 > limits.field_size:
            raise HeaderFieldsTooLarge("header field too large")
        if end > limits.head_size:
            raise HeaderFieldsTooLarge("request head too large")
        if not raw.endswith("\r"):
            raise BadRequest("bare LF line terminator")
        line = raw[:-1]
        if first:
            _split_request_line(line)
            return
        if self._lines - 1 > limits.fields:
            raise HeaderFieldsTooLarge("too many header fields")
        if grammar.FIELD_LINE.fullmatch(line) is None:
            raise BadRequest(_describe_bad_field(line))

    def _first_fault(self, head: str) -> HTTPError:
        """The error a complete head (without its final CRLF CRLF) deserves."""
        self._reset_head_scan()
        try:
            self._check_lines(head + "\r\n", 0)
            if len(head) + 4 > self.limits.head_size:
                raise HeaderFieldsTooLarge("request head too large")
        except HTTPError as error:
            return error
        finally:
            self._reset_head_scan()
        return BadRequest("malformed request head")  # unreachable: the walk agrees with the fast path

    # -- the request head, complete ----------------------------------------

    # The fast path is pure Python on purpose. httptools (llhttp, in C) parses
    # the same heads 3-4x faster (benchmarks/profile_hot_path.py --httptools:
    # about 1.0 against 3.8 µs for wrk's one-field head, 3.3 against 8.4 µs for
    # a ten-field browser head), but it accepts heads this parser refuses (no
    # Host or two, a malformed Host, two spaces in the request line, HTTP/2.0,
    # a 17-digit chunk size), and its errors carry no status. Giving the same
    # answers would mean running this grammar over its result as well, which
    # costs more than it saves; so it is not a dependency.
    def _parse_head(self, head: str) -> Request:
        """The fast path: accepts exactly what the line-by-line checks accept."""
        limits = self.limits
        lines = head.split("\r\n")
        request_line = lines[0]
        if (
            len(head) + 4 > limits.head_size
            or len(lines) - 1 > limits.fields
            or len(request_line) > self.line_limit
        ):
            raise self._first_fault(head)
        match = grammar.REQUEST_LINE.fullmatch(request_line)
        if match is None or match[3] not in grammar.SUPPORTED_VERSIONS:
            raise self._first_fault(head)
        field_lines = lines[1:]
        if field_lines and (
            grammar.FIELD_LINES.fullmatch(head, len(request_line) + 2) is None
            or (len(head) > limits.field_size and max(map(len, field_lines)) > limits.field_size)
        ):
            raise self._first_fault(head)
        # Every line is a valid field line now: splitting at the first ":" is safe.
        fields = []
        for line in field_lines:
            name, _, value = line.partition(":")
            fields.append((name.upper(), value.strip(" \t")))
        return self._make_request(match[1], match[2], match[3], fields)

    def _make_request(
        self, method: str, raw_target: str, version: str, fields: list[tuple[str, str]]
    ) -> Request:
        http11 = version == "HTTP/1.1"
        # Most heads hold one or two of these: collect them, and skip the rest.
        framing: dict[str, list[str]] = {}
        for name, value in fields:
            if name in _FRAMING_FIELDS:
                framing.setdefault(name, []).append(value)

        host = _check_host(framing.get("HOST", []), http11)
        target, path, query, target_host = _parse_target(method, raw_target)
        chunked, content_length = self._framing(
            version, framing.get("CONTENT-LENGTH", []), framing.get("TRANSFER-ENCODING", [])
        )
        # Positional: with eleven keyword arguments the call costs twice as much.
        return Request(
            method,
            target,
            path,
            query,
            version,
            tuple(fields),  # headers
            target_host if target_host is not None else host,  # host
            _keep_alive(framing.get("CONNECTION"), http11),  # keep_alive
            content_length,
            chunked,
            http11 and _expects_continue(framing.get("EXPECT")),  # expect_continue
        )

    def _framing(self, version: str, lengths: list[str], codings: list[str]) -> tuple[bool, int | None]:
        """RFC 9112 §6.1-6.3, refusing every ambiguous combination."""
        if codings:
            if lengths:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            if version != "HTTP/1.1":
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            _check_codings(codings)
            return True, None
        if not lengths:
            return False, 0
        if len(lengths) > 1:
            raise BadRequest("more than one Content-Length")
        if grammar.CONTENT_LENGTH.fullmatch(lengths[0]) is None:
            raise BadRequest("invalid Content-Length")
        length = int(lengths[0])
        if self.limits.max_body and length > self.limits.max_body:
            raise PayloadTooLarge("body larger than the limit")
        return False, length

    def _make_body(self, request: Request) -> Body:
        if request.chunked:
            return ChunkedBody(self.limits)
        if request.content_length:
            return LengthBody(request.content_length)
        return _EMPTY_BODY


def _split_request_line(line: str) -> tuple[str, str, str]:
    match = grammar.REQUEST_LINE.fullmatch(line)
    if match is None:
        parts = line.split(" ")
        if len(parts) == 3 and not parts[1].isascii():
            raise BadRequest("request target outside visible ASCII")
        raise BadRequest("malformed request line")
    if match[3] not in grammar.SUPPORTED_VERSIONS:
        raise VersionNotSupported("unsupported HTTP version")
    return match[1], match[2], match[3]


def _check_host(hosts: list[str], http11: bool) -> str | None:
    """RFC 9112 §3.2: HTTP/1.1 needs exactly one valid Host; none may be repeated."""
    if len(hosts) > 1:
        raise BadRequest("more than one Host header")
    if not hosts:
        if http11:
            raise BadRequest("HTTP/1.1 request without a Host header")
        return None
    host = hosts[0]
    if host not in _VALID_HOSTS:
        if grammar.HOST.fullmatch(host) is None:
            raise BadRequest("invalid Host header")
        remember(_VALID_HOSTS, host, True, len(host))
    return host


def _keep_alive(connection: list[str] | None, http11: bool) -> bool:
    """RFC 9112 §9.3: HTTP/1.1 stays open unless "close"; HTTP/1.0 closes unless "keep-alive"."""
    if connection is None:
        return http11
    if len(connection) == 1 and (only := connection[0].lower()) in ("close", "keep-alive"):
        return only == "keep-alive"  # the usual single token, without splitting it
    tokens = {token.strip(" \t") for value in connection for token in value.lower().split(",")}
    return ("close" not in tokens) if http11 else ("keep-alive" in tokens)


def _expects_continue(expect: list[str] | None) -> bool:
    """RFC 9110 §10.1.1: the client waits for 100 Continue before sending the body."""
    return expect is not None and any(value.lower() == "100-continue" for value in expect)


def _check_codings(codings: list[str]) -> None:
    """Transfer-Encoding must be exactly one final ``chunked`` (RFC 9112 §6.1, §6.3)."""
    parts = [part.strip(" \t").lower() for value in codings for part in value.split(",")]
    if not all(grammar.TOKEN.fullmatch(part) for part in parts):
        raise BadRequest("invalid Transfer-Encoding")
    if parts[-1] != "chunked":
        raise BadRequest("chunked is not the final transfer coding")
    if "chunked" in parts[:-1]:
        raise BadRequest("chunked applied more than once")
    if len(parts) > 1:
        raise NotImplementedCoding("unsupported transfer coding")


def _parse_target(method: str, target: str) -> tuple[str, str, str, str | None]:
    """Split a request-target (RFC 9112 §3.2) into raw, path, query and host."""
    if target.startswith("/") and "?" not in target and "#" not in target and "%" not in target:
        return target, target, "", None  # the common "/some/path": nothing to split or decode
    host = None
    if target.startswith("/"):
        path_part = target
    elif target == "*":
        if method != "OPTIONS":
            raise BadRequest("asterisk-form is only for OPTIONS")
        path_part = "*"
    elif method == "CONNECT":
        raise BadRequest("CONNECT is not supported by a WSGI server")
    else:
        # RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
        match = grammar.ABSOLUTE_TARGET.fullmatch(target)
        if match is None:
            raise BadRequest("malformed request target")
        host, rest = match[1], match[2] or "/"
        if not host or grammar.HOST.fullmatch(host) is None:  # RFC 9110 §4.2.1: no empty host
            raise BadRequest("invalid authority in absolute-form target")
        path_part = rest if rest.startswith("/") else "/" + rest
    path, _, query = path_part.partition("?")
    path = path.partition("#")[0]
    query = query.partition("#")[0]
    if "%" in path:
        path = unquote_to_bytes(path.encode("latin-1")).decode("latin-1")
    return target, path, query, host


def _describe_bad_field(line: str) -> str:
    if line[:1] in (" ", "\t"):
        return "obsolete line folding in header"
    name, sep, _ = line.partition(":")
    if not sep:
        return "header line without a colon"
    if name != name.rstrip(" \t"):
        return "whitespace before the colon in a header"
    if grammar.TOKEN.fullmatch(name) is None:
        return "invalid header name"
    return "invalid character in a header value"
