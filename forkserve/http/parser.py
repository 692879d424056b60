"""RequestParser: bytes in any pieces, requests and body bytes out.

The parser owns one connection's inbound byte stream. It never reads a
socket: the caller ``feed()``s whatever arrived and asks for the next
request or the next body bytes. ``None`` always means "feed me more".

States, per request on a connection (a table rather than scattered flags)::

    HEAD ──request head complete──▶ BODY ──body complete──▶ DONE
      ▲                                                     │
      └────────────────── start_next() ─────────────────────┘

Any protocol violation raises an ``HTTPError`` subclass carrying the status
to answer with; after that the connection must be closed, because the
parser no longer knows where the next request would start.

Framing decisions follow RFC 9112 §6: ``Transfer-Encoding`` together with
``Content-Length`` is refused rather than resolved, as is anything but a
single final ``chunked`` coding. A bare LF as line terminator is refused
everywhere (RFC 9112 §2.2 allows either choice; refusing means we never
split a message differently from a proxy that does not accept it).
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
    NotImplementedCoding,
    PayloadTooLarge,
    ProtocolUsageError,
    URITooLong,
    VersionNotSupported,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one request may make the parser hold.

    The defaults are Gunicorn's where Gunicorn has the setting, so a
    deployment that fits one fits the other; each is safe for the open
    internet.
    """

    request_line: int = 4094  # longer targets get 414, as in Gunicorn
    fields: int = 100  # header count; past it, 431
    field_size: int = 8190  # one header line; past it, 431
    head_size: int = 65536  # whole head incl. all lines; bounds memory per connection
    max_body: int = 0  # 0 = no limit; else larger bodies get 413 before they are read
    chunk_ext: int = 1024  # chunk-size line incl. extensions
    trailer_size: int = 8190  # all trailer lines of a chunked body together


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head, as a value."""

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


class RequestParser:
    """Parses successive requests from one connection's bytes."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.buffer = bytearray()
        self.state = State.HEAD
        self.body: Body = EmptyBody()

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        self.buffer += data

    def next_request(self) -> Request | None:
        """The next request head, or None while its bytes are incomplete."""
        if self.state is not State.HEAD:
            raise ProtocolUsageError(f"next_request() in state {self.state.value}")
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._check_incomplete_head()
            return None
        if end + 4 > self.limits.head_size:
            raise HeaderFieldsTooLarge("request head too large")
        head = bytes(buf[:end])
        del buf[: end + 4]
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

    def start_next(self) -> None:
        """Move on to the next request on this connection; the body must be done."""
        if self.state is not State.DONE:
            raise ProtocolUsageError("start_next() before the body was read")
        self.state = State.HEAD

    # -- the request head ------------------------------------------------

    def _check_incomplete_head(self) -> None:
        buf = self.buffer
        if b"\n\n" in buf or b"\n\r\n" in buf:
            raise BadRequest("bare LF line terminator")
        first_line_end = buf.find(b"\r\n")
        if first_line_end < 0 and len(buf) > self.limits.request_line:
            raise URITooLong("request line too long")
        if len(buf) > self.limits.head_size:
            raise HeaderFieldsTooLarge("request head too large")

    def _parse_head(self, head: bytes) -> Request:
        lines = head.split(b"\r\n")
        while lines[0] == b"":  # RFC 9112 §2.2: ignore CRLFs before a request-line
            del lines[0]
            if not lines:
                raise BadRequest("empty request")
        method, target, version = self._parse_request_line(lines[0])
        headers = self._parse_fields(lines[1:])
        return self._make_request(method, target, version, headers)

    def _parse_request_line(self, line: bytes) -> tuple[str, bytes, bytes]:
        if len(line) > self.limits.request_line:
            raise URITooLong("request line too long")
        match = grammar.REQUEST_LINE.fullmatch(line)
        if match is None:
            raise BadRequest("malformed request line")
        method, target, version = match.groups()
        if version not in grammar.SUPPORTED_VERSIONS:
            raise VersionNotSupported("unsupported HTTP version")
        return method.decode("ascii"), target, version

    def _parse_fields(self, lines: list[bytes]) -> list[tuple[str, str]]:
        limits = self.limits
        if len(lines) > limits.fields:
            raise HeaderFieldsTooLarge("too many header fields")
        fields = []
        match_line = grammar.HEADER_LINE.fullmatch
        for line in lines:
            if len(line) > limits.field_size:
                raise HeaderFieldsTooLarge("header field too large")
            match = match_line(line)
            if match is None:
                raise BadRequest(_describe_bad_field(line))
            name, value = match.groups()
            fields.append((name.decode("ascii").upper(), value.decode("latin-1")))
        return fields

    def _make_request(
        self, method: str, raw_target: bytes, raw_version: bytes, fields: list[tuple[str, str]]
    ) -> Request:
        version = raw_version.decode("ascii")
        http11 = version == "HTTP/1.1"
        hosts = [value for name, value in fields if name == "HOST"]
        lengths = [value for name, value in fields if name == "CONTENT-LENGTH"]
        codings = [value for name, value in fields if name == "TRANSFER-ENCODING"]
        connection = ",".join(value for name, value in fields if name == "CONNECTION").lower()
        expect = [value.lower() for name, value in fields if name == "EXPECT"]

        if http11 and len(hosts) != 1:
            raise BadRequest("HTTP/1.1 request needs exactly one Host header")
        if len(hosts) > 1:
            raise BadRequest("more than one Host header")
        target, path, query, target_host = _parse_target(method, raw_target)
        host = target_host if target_host is not None else (hosts[0] if hosts else None)

        chunked, content_length = self._framing(version, lengths, codings)
        tokens = {token.strip() for token in connection.split(",")} if connection else set()
        keep_alive = ("close" not in tokens) if http11 else ("keep-alive" in tokens)
        return Request(
            method=method,
            target=target,
            path=path,
            query=query,
            version=version,
            headers=tuple(fields),
            host=host,
            keep_alive=keep_alive,
            content_length=content_length,
            chunked=chunked,
            expect_continue=http11 and "100-continue" in expect,
        )

    def _framing(self, version: str, lengths: list[str], codings: list[str]) -> tuple[bool, int | None]:
        """RFC 9112 §6.1-6.3, refusing every ambiguous combination."""
        if codings:
            if lengths:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            if version != "HTTP/1.1":
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            parts = [part.strip().lower() for value in codings for part in value.split(",")]
            if parts != ["chunked"]:
                if parts[-1:] == ["chunked"] or "chunked" in parts:
                    raise BadRequest("chunked must be the only transfer coding")
                raise NotImplementedCoding("unsupported transfer coding")
            return True, None
        if not lengths:
            return False, 0
        if len(lengths) > 1:
            raise BadRequest("more than one Content-Length")
        if grammar.CONTENT_LENGTH.fullmatch(lengths[0].encode("latin-1")) is None:
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
        return EmptyBody()


def _parse_target(method: str, target: bytes) -> tuple[str, str, str, str | None]:
    """Split a request-target (RFC 9112 §3.2) into raw, path, query and host."""
    host = None
    if target.startswith(b"/"):
        path_part = target
    elif target == b"*":
        if method != "OPTIONS":
            raise BadRequest("asterisk-form is only for OPTIONS")
        path_part = b"*"
    elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        authority, path_part = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        if not authority or b"@" in authority:
            raise BadRequest("invalid authority in absolute-form target")
        if b"?" in authority:
            authority, query = authority.split(b"?", 1)
            path_part = b"/?" + query
        host = authority.decode("latin-1")
    elif method == "CONNECT":
        raise BadRequest("CONNECT is not supported by a WSGI server")
    else:
        raise BadRequest("malformed request target")
    path, _, query = path_part.partition(b"?")
    path, _, _fragment = path.partition(b"#")
    decoded = unquote_to_bytes(path).decode("latin-1")
    return target.decode("latin-1"), decoded, query.decode("latin-1"), host


def _describe_bad_field(line: bytes) -> str:
    if line[:1] in (b" ", b"\t"):
        return "obsolete line folding in header"
    name, sep, _ = line.partition(b":")
    if not sep:
        return "header line without a colon"
    if name != name.rstrip(b" \t"):
        return "whitespace before the colon in a header"
    if grammar.TOKEN.fullmatch(name) is None:
        return "invalid header name"
    return "invalid character in a header value"
