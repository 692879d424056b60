"""The two error families of the HTTP layer.

``HTTPError`` and its subclasses mean *the peer broke the protocol*: each
carries the status the server answers with, so no caller needs an
``isinstance`` ladder to choose one. ``ProtocolUsageError`` means *we* (or
the app) misused the API, and is a bug to log, never the client's fault.
"""

from __future__ import annotations


class HTTPError(Exception):
    """A request the server must refuse; the connection is closed after it."""

    status: int = 400
    phrase: str = "Bad Request"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(HTTPError):
    status, phrase = 400, "Bad Request"


class PayloadTooLarge(HTTPError):
    status, phrase = 413, "Content Too Large"


class URITooLong(HTTPError):
    status, phrase = 414, "URI Too Long"


class HeaderFieldsTooLarge(HTTPError):
    status, phrase = 431, "Request Header Fields Too Large"


class NotImplementedCoding(HTTPError):
    status, phrase = 501, "Not Implemented"


class VersionNotSupported(HTTPError):
    status, phrase = 505, "HTTP Version Not Supported"


class ProtocolUsageError(Exception):
    """The server or the app used this package out of order or with bad values."""


class InvalidResponse(ProtocolUsageError):
    """The app produced a status or header that cannot go on the wire."""
