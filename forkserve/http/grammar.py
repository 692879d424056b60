"""The byte-level grammar of HTTP/1.1 requests, one pattern per rule.

Each pattern names the RFC 9110 / RFC 9112 rule it encodes. They are strict
on purpose: every leniency a server shows here is a place where it can
disagree with a proxy in front of it about where a request ends.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: token = 1*tchar
TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
TOKEN = re.compile(rb"[" + TCHAR + rb"]+")

# RFC 9110 §5.5: field-value = *field-content; no leading/trailing OWS,
# VCHAR and obs-text, with SP/HTAB only between visible characters.
# A header line is "name:" OWS value OWS, and RFC 9112 §5.1 forbids any
# whitespace between the name and the colon.
HEADER_LINE = re.compile(
    rb"([" + TCHAR + rb"]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\x21-\x7e\x80-\xff \t]*[\x21-\x7e\x80-\xff])?)?)"
    rb"[ \t]*"
)

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version,
# with exactly one space between parts. The target may hold any visible
# ASCII and obs-text, but no whitespace or control characters.
REQUEST_LINE = re.compile(rb"([" + TCHAR + rb"]+) ([\x21-\x7e\x80-\xff]+) (HTTP/[0-9]\.[0-9])")
SUPPORTED_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")

# RFC 9112 §6.3: Content-Length = 1*DIGIT; no sign, space or hex.
CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")

# RFC 9112 §7.1: chunk-size = 1*HEXDIG, then chunk-ext = *( BWS ";" BWS
# name [ BWS "=" BWS ( token / quoted-string ) ] ). Sixteen hex digits
# already exceed any sane body; more would be an overflow attempt.
CHUNK_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"((?:[ \t]*;[ \t]*[" + TCHAR + rb"]+"
    rb"(?:[ \t]*=[ \t]*(?:["
    + TCHAR
    + rb"]+|\"(?:[^\"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t \x21-\x7e\x80-\xff])*\"))?)*)"
)
