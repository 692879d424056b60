"""The character-level grammar of HTTP/1.1 messages, one pattern per rule.

Each pattern names the RFC 9110 / RFC 9112 rule it encodes. They are strict
on purpose: every leniency a server shows here is a place where it can
disagree with a proxy in front of it about where a request ends.

Request heads are matched as latin-1 text (one byte, one character), so
``\\x80-\\xff`` below means obs-text and every pattern is safe to use on a
decoded head. Chunk-size lines are matched as bytes, straight from the
receive buffer. No pattern uses ``\\d`` or ``\\s``: in text mode those would
also match non-ASCII digits and spaces.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: token = 1*tchar
TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(f"[{TCHAR}]+")

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version,
# exactly one space between parts. RFC 9112 §3.2 and RFC 3986 §2 allow only
# visible ASCII in the target (anything else goes percent-encoded), so no
# whitespace, control character or obs-text: a raw UTF-8 or latin-1 byte
# there gets 400, as with Gunicorn. Any HTTP/x.y matches here so that an
# unsupported version gets 505 rather than 400.
REQUEST_LINE = re.compile(f"([{TCHAR}]+) ([\\x21-\\x7e]+) (HTTP/[0-9]\\.[0-9])")
SUPPORTED_VERSIONS = ("HTTP/1.1", "HTTP/1.0")

# RFC 9112 §5.1: field-line = field-name ":" OWS field-value OWS, with no
# whitespace between name and colon. The value may hold SP/HTAB, VCHAR and
# obs-text but no other control character (so no NUL, CR, LF or DEL); the
# parser strips the OWS around it. A line starting with whitespace (obs-fold)
# cannot match, since a name must come first.
_FIELD_LINE = f"([{TCHAR}]+):([\\t \\x21-\\x7e\\x80-\\xff]*)"
FIELD_LINE = re.compile(_FIELD_LINE)
# One or more field lines joined by CRLF: a whole header block checked in one
# call. Each line can match in only one way (a name has no ":", a value no
# CR), so a failing block is refused in linear time.
FIELD_LINES = re.compile(f"{_FIELD_LINE}(?:\r\n{_FIELD_LINE})*")

# RFC 9112 §6.3: Content-Length = 1*DIGIT; no sign, space, hex or list.
# Eighteen digits keep the value far from any proxy's integer overflow.
CONTENT_LENGTH = re.compile("[0-9]{1,18}")

# RFC 9110 §7.2 / RFC 3986 §3.2.2: Host = uri-host [ ":" port ], where
# uri-host is an IP-literal in brackets or a reg-name (possibly empty).
# There is no userinfo: an "@" is refused rather than guessed around.
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
_IP_LITERAL = r"\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+)\]"
HOST = re.compile(f"(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?")

# RFC 9112 §3.2.2: absolute-form = absolute-URI; only http and https make
# sense for a server. Group 1 is the authority, group 2 the rest (path and
# query), which must start with "/" or "?" when present.
ABSOLUTE_TARGET = re.compile(r"(?i:https?)://([^/?#]*)([/?#].*)?")

# RFC 9112 §7.1: chunk-size = 1*HEXDIG, then chunk-ext = *( BWS ";" BWS
# name [ BWS "=" BWS ( token / quoted-string ) ] ). Sixteen hex digits are
# the most a 64-bit integer holds; the body reader also bounds the value.
CHUNK_SIZE_LINE = re.compile(
    b"([0-9A-Fa-f]{1,16})"
    b"((?:[ \\t]*;[ \\t]*[" + TCHAR.encode() + b"]+"
    b"(?:[ \\t]*=[ \\t]*(?:[" + TCHAR.encode() + b"]+"
    b'|"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*"))?)*)'
)
