"""Fuzz target: what a proxy tells us (Forwarded, X-Forwarded-*, the PROXY protocol).

Invariants (a violation is a crash):
* ``parse_forwarded`` and ``apply_forwarded`` (under several trust settings,
  called as a connection calls it: only for a trusted peer) never raise;
* REMOTE_ADDR ends as the peer's own address, or as an address (an IP, with
  an optional IPv6 zone) that appears in the header it was taken from;
  wsgi.url_scheme stays http or https;
* ``parse_proxy_protocol`` raises nothing but ``BadRequest``; once it gives
  an answer for a prefix, every longer input gives the same answer; and a
  connection's outcome (driven as ``Connection.take_proxy_header`` drives it)
  does not depend on how the bytes were split.

Options byte: bits 0-1 the check (0: Forwarded, 1: X-Forwarded-*,
2: PROXY protocol, 3: parse_forwarded on UTF-8 text), bits 2-3 the trust
setting or PROXY mode, bits 4-5 the peer, bit 7 byte by byte. Fields of an
X-Forwarded-* input are separated by NUL bytes.
Run: ``python tests/fuzz/run.py proxy``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from harness import FuzzInput, fuzz_main, instrumented, read_input

with instrumented(__name__ == "__main__"):
    from forkserve.http.errors import BadRequest
    from forkserve.proxy import (
        ProxyTrust,
        apply_forwarded,
        parse_forwarded,
        parse_proxy_protocol,
        starts_proxy_header,
    )

TRUSTS = (
    ProxyTrust(["127.0.0.1", "::1"]),
    ProxyTrust(["*"]),
    ProxyTrust(["10.0.0.0/8", "fd00::/8", "192.168.1.1"]),
    ProxyTrust(["127.0.0.1"], secure_headers={"X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}),
)
PEERS = ("127.0.0.1", "", "10.1.2.3", "::1")  # "" is a unix socket peer
MODES = ("auto", "v1", "v2", "auto")
X_FIELDS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_SSL",
)
# The REMOTE_ADDR check: the value must be an IP address (the peer's, or one
# written in the header); text that is no address once got through (a regression
# test in tests/test_fuzz.py keeps it out).
REMOTE_ADDR_MUST_BE_AN_IP = True


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_forwarded(fuzz: FuzzInput, x_forwarded: bool) -> None:
    text = fuzz.payload.decode("latin-1")  # as PEP 3333 environ values are
    trust = TRUSTS[(fuzz.options >> 2) & 3]
    peer = PEERS[(fuzz.options >> 4) & 3]
    environ: dict[str, Any] = {"REMOTE_ADDR": peer, "REMOTE_PORT": "4000", "wsgi.url_scheme": "http"}
    if x_forwarded:
        environ.update(zip(X_FIELDS, text.split("\0"), strict=False))
        source = environ["HTTP_X_FORWARDED_FOR"]
    else:
        head, _, x_for = text.partition("\0")
        environ["HTTP_FORWARDED"] = source = head
        if x_for:
            environ["HTTP_X_FORWARDED_FOR"] = x_for  # must be ignored beside Forwarded
        hops = parse_forwarded(head)
        assert isinstance(hops, list) and all(isinstance(hop, dict) for hop in hops)
    if not trust.trusts(peer):
        return  # a connection applies the headers only for a trusted peer
    apply_forwarded(environ, trust)
    remote = environ["REMOTE_ADDR"]
    if remote != peer:
        if remote not in source:
            raise AssertionError(f"REMOTE_ADDR {remote!r} is neither the peer's nor in {source!r}")
        if REMOTE_ADDR_MUST_BE_AN_IP and not is_address(remote):
            raise AssertionError(f"REMOTE_ADDR {remote!r} (from {source!r}) is not an address")
    if environ["wsgi.url_scheme"] not in ("http", "https"):
        raise AssertionError(f"wsgi.url_scheme {environ['wsgi.url_scheme']!r}")


def parse_or_refuse(data: bytes) -> object:
    try:
        return parse_proxy_protocol(data)
    except BadRequest as error:
        return ("refused", error.status)


def connection_outcome(pieces: list[bytes], mode: str) -> object:
    """The PROXY header phase of a connection (``Connection.take_proxy_header``)."""
    header = bytearray()
    for index, piece in enumerate(pieces):
        header += piece
        starts = starts_proxy_header(header, mode)
        if starts is None:
            continue
        rest = b"".join(pieces[index + 1 :])
        if not starts:
            return ("plain", bytes(header) + rest)
        result = parse_or_refuse(bytes(header))
        if result is None:
            continue
        if isinstance(result, tuple) and result[0] == "refused":
            return result
        assert isinstance(result, tuple)
        consumed, client = result
        return ("proxy", client, bytes(header[consumed:]) + rest)
    return ("waiting",)


def check_proxy_protocol(fuzz: FuzzInput) -> None:
    data = fuzz.payload
    whole = parse_or_refuse(data)
    if isinstance(whole, tuple) and whole[0] != "refused":
        consumed, client = whole
        assert isinstance(consumed, int) and 0 < consumed <= len(data), whole
        if client is not None and not (is_address(client[0]) and client[1].isdigit()):
            raise AssertionError(f"PROXY header gives client {client!r}")
    # Every prefix at a cut point either waits (None) or already gives the final answer.
    for end in sorted({len(piece) for piece in _prefixes(fuzz)}):
        early = parse_or_refuse(data[:end])
        if early is not None and early != whole:
            raise AssertionError(f"prefix of {end} bytes answers {early!r}, the whole {whole!r}")
    mode = MODES[(fuzz.options >> 2) & 3]
    at_once = connection_outcome([data], mode)
    in_pieces = connection_outcome(fuzz.pieces(), mode)
    if at_once != in_pieces:
        raise AssertionError(f"outcome depends on the split: {at_once!r} / {in_pieces!r}")


def _prefixes(fuzz: FuzzInput) -> list[bytes]:
    pieces = fuzz.pieces()
    return [b"".join(pieces[: i + 1]) for i in range(len(pieces))][:64]


def check(data: bytes) -> None:
    fuzz = read_input(data)
    kind = fuzz.options & 3
    if kind == 0:
        check_forwarded(fuzz, x_forwarded=False)
    elif kind == 1:
        check_forwarded(fuzz, x_forwarded=True)
    elif kind == 2:
        check_proxy_protocol(fuzz)
    else:
        hops = parse_forwarded(fuzz.payload.decode("utf-8", "replace"))
        assert all(isinstance(k, str) and isinstance(v, str) for hop in hops for k, v in hop.items())


TestOneInput = check

if __name__ == "__main__":
    fuzz_main("proxy", check)
