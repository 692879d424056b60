"""Request body readers: how many bytes belong to this request, and no more.

Each reader takes bytes out of the parser's buffer and leaves whatever
follows the body there, so a pipelined request is never built from body
bytes. ``read()`` returns None when it needs more input.

Like the head, chunked framing is checked line by line as lines complete,
in a fixed order, so a malformed body gets the same answer however its
bytes were split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from . import grammar
from .errors import BadRequest, HeaderFieldsTooLarge, PayloadTooLarge

if TYPE_CHECKING:
    from .parser import Limits

# RFC 9110 §6.5.1: fields whose meaning is needed before the content, and so
# never valid in a trailer section. A request carrying one is refused (400,
# as with Gunicorn) rather than having it dropped in silence: a client or
# proxy that sends one disagrees with us about the message, and a proxy in
# front that merges trailers into the header section would pass it on.
FORBIDDEN_TRAILERS = frozenset(
    {
        # message framing and connection handling (RFC 9112 §6, RFC 9110 §7.6)
        "CONTENT-LENGTH", "TRANSFER-ENCODING", "TRAILER", "CONNECTION", "KEEP-ALIVE",
        "PROXY-CONNECTION", "UPGRADE", "TE",
        # routing (RFC 9110 §7; RFC 7239)
        "HOST", "MAX-FORWARDS", "FORWARDED",
        # request modifiers: controls and conditionals (RFC 9110 §10.1, §13.1, §14.2; RFC 9111 §5)
        "EXPECT", "CACHE-CONTROL", "PRAGMA", "RANGE", "IF-MATCH", "IF-NONE-MATCH",
        "IF-MODIFIED-SINCE", "IF-UNMODIFIED-SINCE", "IF-RANGE",
        # authentication (RFC 9110 §11; RFC 6265)
        "AUTHORIZATION", "PROXY-AUTHORIZATION", "WWW-AUTHENTICATE", "PROXY-AUTHENTICATE",
        "COOKIE", "SET-COOKIE",
        # response control data (RFC 9110 §10.2; RFC 9111 §5)
        "AGE", "DATE", "EXPIRES", "LOCATION", "RETRY-AFTER", "VARY",
        # how to process the content (RFC 9110 §8)
        "CONTENT-ENCODING", "CONTENT-TYPE", "CONTENT-RANGE",
    }
)  # fmt: skip

# The largest chunk a signed 64-bit integer holds: a proxy that parses a
# larger size would overflow and see a different chunk than we do.
MAX_CHUNK_SIZE = (1 << 63) - 1


class Body(Protocol):
    complete: bool

    def read(self, buffer: bytearray, size: int) -> bytes | None: ...


class EmptyBody:
    complete = True

    def read(self, buffer: bytearray, size: int) -> bytes | None:
        return b""


class LengthBody:
    """A body framed by Content-Length."""

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.complete = length == 0

    def read(self, buffer: bytearray, size: int) -> bytes | None:
        if self.complete:
            return b""
        if not buffer:
            return None
        n = self.remaining if size < 0 else min(size, self.remaining)
        data = bytes(buffer[:n])
        del buffer[: len(data)]
        self.remaining -= len(data)
        self.complete = self.remaining == 0
        return data


class ChunkedBody:
    """A chunked body (RFC 9112 §7.1), decoded; trailers are checked and dropped.

    Trailers never reach the app's environ nor the framing: a trailer field
    could otherwise pose as a header that a proxy in front already vetted.
    A field RFC 9110 §6.5.1 forbids in trailers (``FORBIDDEN_TRAILERS``)
    refuses the request.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.complete = False
        self.chunk_left = 0  # data bytes left in the current chunk
        self.need_crlf = False  # the CRLF that ends a chunk's data
        self.in_trailers = False
        self.trailer_bytes = 0
        self.total = 0

    def read(self, buffer: bytearray, size: int) -> bytes | None:
        out = []
        want = size
        while not self.complete and want != 0:
            if self.chunk_left:
                if not buffer:
                    break
                n = self.chunk_left if want < 0 else min(want, self.chunk_left)
                piece = bytes(buffer[:n])
                del buffer[: len(piece)]
                self.chunk_left -= len(piece)
                want = want - len(piece) if want > 0 else want
                out.append(piece)
                self.need_crlf = self.chunk_left == 0
            elif self.need_crlf:
                if not self._read_data_end(buffer):
                    break
            elif self.in_trailers:
                if not self._read_trailer_line(buffer):
                    break
            elif not self._read_size_line(buffer):
                break
        if out:
            return b"".join(out)
        return b"" if self.complete else None

    def _read_data_end(self, buffer: bytearray) -> bool:
        """Exactly CRLF after each chunk's data; anything else is a framing attack."""
        if buffer.startswith(b"\r\n"):
            del buffer[:2]
            self.need_crlf = False
            return True
        if buffer and (len(buffer) > 1 or buffer[0] != 0x0D):
            raise BadRequest("chunk data not followed by CRLF")
        return False

    def _read_size_line(self, buffer: bytearray) -> bool:
        limit = self.limits.chunk_ext
        nl = buffer.find(b"\n", 0, limit + 2)
        if nl < 0:
            if len(buffer) >= limit + 2:
                raise BadRequest("chunk size line too long")
            return False
        if nl == 0 or buffer[nl - 1] != 0x0D:
            raise BadRequest("bare LF in chunk size line")
        match = grammar.CHUNK_SIZE_LINE.fullmatch(buffer, 0, nl - 1)
        if match is None:
            raise BadRequest("invalid chunk size line")
        size = int(match[1], 16)
        del buffer[: nl + 1]
        if size > MAX_CHUNK_SIZE:
            raise BadRequest("chunk size too large")
        self.total += size
        if self.limits.max_body and self.total > self.limits.max_body:
            raise PayloadTooLarge("chunked body larger than the limit")
        if size == 0:
            self.in_trailers = True
        self.chunk_left = size
        return True

    def _read_trailer_line(self, buffer: bytearray) -> bool:
        """One trailer line, checked and dropped; the empty line ends the body."""
        if buffer.startswith(b"\r\n"):
            del buffer[:2]
            self.complete = True
            return True
        allowed = self.limits.trailer_size - self.trailer_bytes
        nl = buffer.find(b"\n", 0, max(allowed, 0))
        if nl < 0:
            if buffer and len(buffer) >= allowed and buffer != b"\r":
                raise HeaderFieldsTooLarge("trailer section too large")
            return False
        if nl == 0 or buffer[nl - 1] != 0x0D:
            raise BadRequest("bare LF in trailers")
        line = buffer[: nl - 1].decode("latin-1")
        match = grammar.FIELD_LINE.fullmatch(line)
        if match is None:
            raise BadRequest("invalid trailer field")
        if match[1].upper() in FORBIDDEN_TRAILERS:
            raise BadRequest(f"{match[1]} is not allowed as a trailer field")
        del buffer[: nl + 1]
        self.trailer_bytes += nl + 1
        return True
