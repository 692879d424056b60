"""Unit tests of the sans-IO request parser: every rule, no sockets.

Each refusal is checked twice: with the input fed in one piece and fed
byte by byte, since the answer must not depend on how the bytes arrived.
"""

from __future__ import annotations

import pytest

from forkserve.http.body import FORBIDDEN_TRAILERS as PARSER_FORBIDS
from forkserve.http.errors import HTTPError, ProtocolUsageError
from forkserve.http.parser import Limits, Request, RequestParser, State

SMALL = Limits(request_line=64, fields=4, field_size=48, head_size=256, chunk_ext=24, trailer_size=40)


def parse(data: bytes, limits: Limits | None = None) -> Request:
    parser = RequestParser(limits)
    parser.feed(data)
    request = parser.next_request()
    assert request is not None, "head should be complete"
    return request


def read_all(parser: RequestParser) -> bytes:
    out = b""
    while (data := parser.read_body()) is not None and data:
        out += data
    return out


def parse_with_body(data: bytes, limits: Limits | None = None) -> tuple[Request, bytes, bytes]:
    """(request, decoded body, bytes left in the buffer); the body must be complete."""
    parser = RequestParser(limits)
    parser.feed(data)
    request = parser.next_request()
    assert request is not None
    body = read_all(parser)
    assert parser.body_complete, "body should be complete"
    return request, body, bytes(parser.buffer)


def run(parser: RequestParser, data: bytes, bytewise: bool) -> list[Request]:
    """Feed data and consume heads and bodies until the parser wants more."""
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    requests = []
    for piece in pieces:
        parser.feed(piece)
        while True:
            if parser.state is State.HEAD:
                request = parser.next_request()
                if request is None:
                    break
                requests.append(request)
            elif parser.state is State.BODY:
                if parser.read_body() is None:
                    break
            else:
                parser.start_next()
    return requests


def refusal(data: bytes, limits: Limits | None = None) -> HTTPError:
    """The error for ``data``, the same whole and byte by byte."""
    errors = []
    for bytewise in (False, True):
        with pytest.raises(HTTPError) as info:
            run(RequestParser(limits), data, bytewise)
        errors.append(info.value)
    assert errors[0].status == errors[1].status, (errors[0].reason, errors[1].reason)
    return errors[0]


def status(data: bytes, limits: Limits | None = None) -> int:
    return refusal(data, limits).status


def every_split(data: bytes) -> list[list[bytes]]:
    """The bytes whole, byte by byte, and cut in two at every position."""
    return [[data], [data[i : i + 1] for i in range(len(data))]] + [
        [data[:i], data[i:]] for i in range(1, len(data))
    ]


def statuses_in_every_split(data: bytes) -> set[int]:
    """The refusal's status however ``data`` is split (one element when they agree)."""
    found = set()
    for pieces in every_split(data):
        parser = RequestParser()
        with pytest.raises(HTTPError) as info:
            for piece in pieces:
                run(parser, piece, bytewise=False)
        found.add(info.value.status)
    return found


def parsed_in_every_split(data: bytes) -> list[Request]:
    """The requests parsed from ``data``, checked to be the same however it is split."""
    results = []
    for pieces in every_split(data):
        parser = RequestParser()
        requests = []
        for piece in pieces:
            requests += run(parser, piece, bytewise=False)
        results.append(requests)
    assert all(result == results[0] for result in results)
    return results[0]


GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n"


# -- valid requests ----------------------------------------------------------


def test_simple_get():
    request = parse(b"GET /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
    assert request.method == "GET"
    assert request.target == "/a%20b/c?x=1&y=%20"
    assert request.path == "/a b/c"
    assert request.query == "x=1&y=%20"
    assert request.version == "HTTP/1.1"
    assert request.headers == (("HOST", "example.com"), ("ACCEPT", "*/*"))
    assert request.host == "example.com"
    assert request.keep_alive
    assert request.content_length == 0 and not request.chunked and not request.expect_continue


def test_field_values_lose_surrounding_whitespace_but_keep_inner():
    request = parse(GET + b"X-A: \t one  two \t\r\nX-B:\r\nX-C:   \r\n\r\n")
    assert request.headers[1:] == (("X-A", "one  two"), ("X-B", ""), ("X-C", ""))


def test_obs_text_is_allowed_in_values_and_kept_as_latin1():
    assert parse(GET + b"X-Name: caf\xe9\r\n\r\n").headers[1] == ("X-NAME", "caf\xe9")


def test_percent_decoded_path_is_latin1_bytes():
    assert parse(b"GET /%C3%A9%2F?q HTTP/1.1\r\nHost: x\r\n\r\n").path == "/\xc3\xa9/"


def test_percent_encoded_utf8_target_parses_the_same_in_every_split():
    (request,) = parsed_in_every_split(b"GET /caf%C3%A9?q=%C3%A9 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request.target == "/caf%C3%A9?q=%C3%A9"
    assert request.path == "/caf\xc3\xa9" and request.query == "q=%C3%A9"


def test_fragment_is_not_part_of_path_or_query():
    request = parse(b"GET /p?q=1#frag HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (request.path, request.query) == ("/p", "q=1")


def test_http10_defaults_to_close_and_needs_no_host():
    request = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert request.version == "HTTP/1.0" and not request.keep_alive and request.host is None
    assert parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive


def test_connection_close_tokens():
    assert not parse(GET + b"Connection: upgrade, Close\r\n\r\n").keep_alive
    assert parse(GET + b"Connection: closed\r\n\r\n").keep_alive


def test_expect_continue_only_on_http11():
    assert parse(GET + b"Expect: 100-Continue\r\n\r\n").expect_continue
    assert not parse(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue


def test_leading_empty_lines_are_ignored():
    assert parse(b"\r\n\r\n\r\n" + GET + b"\r\n").method == "GET"
    parser = RequestParser()
    requests = run(parser, b"\r\n\r\n" + GET + b"\r\n\r\n", bytewise=True)
    assert [r.method for r in requests] == ["GET"] and not parser.buffer


def test_absolute_form_authority_wins_over_host():
    request = parse(b"GET HTTP://Other.example:8080/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert (request.host, request.path, request.query) == ("Other.example:8080", "/p", "q")
    assert parse(b"GET https://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n").path == "/"
    assert parse(b"GET http://a.example?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").query == "x=1"


def test_asterisk_form_for_options():
    request = parse(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request.target == "*" and request.path == "*"


def test_ipv6_and_empty_host_values():
    assert parse(b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n").host == "[::1]:8000"
    assert parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").host == ""


def test_content_length_body_and_pipelined_rest():
    request, body, rest = parse_with_body(
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhelloGET /next HTTP/1.1\r\n"
    )
    assert request.content_length == 5
    assert body == b"hello"
    assert rest == b"GET /next HTTP/1.1\r\n"


def test_pipelined_requests_in_one_feed():
    parser = RequestParser()
    parser.feed(
        GET + b"\r\n" + b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + GET + b"\r\n"
    )
    first = parser.next_request()
    assert first is not None and first.path == "/" and parser.body_complete
    parser.start_next()
    second = parser.next_request()
    assert second is not None and second.path == "/2"
    assert read_all(parser) == b"abc"
    parser.start_next()
    third = parser.next_request()
    assert third is not None and third.path == "/"
    parser.start_next()
    assert parser.next_request() is None and not parser.buffer


def test_read_body_respects_size():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    parser.next_request()
    assert parser.body_left() == 10
    assert parser.read_body(4) == b"0123"
    assert parser.body_left() == 6
    assert parser.read_body(100) == b"456789"
    assert parser.read_body(1) == b""
    assert parser.body_complete


def test_chunked_body_with_extensions_and_trailers():
    request, body, rest = parse_with_body(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;name=value;flag\r\nhello\r\n"
        b'6 ; q = "quoted \\" ;"\r\n world\r\n'
        b"000A\r\n0123456789\r\n"
        b"0\r\nX-Trailer: yes\r\nServer-Timing: db;dur=53\r\n\r\n"
        b"NEXT"
    )
    assert request.chunked and request.content_length is None
    assert body == b"hello world0123456789"
    assert rest == b"NEXT"
    assert all(name != "X-TRAILER" for name, _ in request.headers)


def test_chunked_body_fed_byte_by_byte():
    parser = RequestParser()
    data = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;e=1\r\nd\r\n0\r\n\r\n"
    )
    body = b""
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        if parser.state is State.HEAD:
            parser.next_request()
        elif parser.state is State.BODY:
            body += parser.read_body() or b""
    assert parser.body_complete and body == b"abcd"
    assert parser.body_left() == 0


def test_transfer_encoding_with_tab_ows_is_chunked():
    request = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\t\r\n\r\n")
    assert request.chunked


def test_underscore_header_is_not_a_framing_header():
    # "Transfer_Encoding" is an ordinary (dropped-from-environ) field, not a framing one.
    request, body, _ = parse_with_body(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc"
    )
    assert not request.chunked and body == b"abc"


# -- request line ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"GET  / HTTP/1.1",  # two spaces
        b"GET /  HTTP/1.1",
        b" GET / HTTP/1.1",  # leading space
        b"GET / HTTP/1.1 ",  # trailing space
        b"GET\t/ HTTP/1.1",  # tab as separator
        b"GET / http/1.1",  # version is case-sensitive
        b"GET / HTTP/1.10",
        b"GET / HTTP/11",
        b"GET / HTTP/1",
        b"GET /",  # HTTP/0.9 style
        b"GET",
        b"G(T / HTTP/1.1",  # method must be a token
        b"G\x00T / HTTP/1.1",
        b"GET /a\x00b HTTP/1.1",  # control character in target
        b"GET /a\x7fb HTTP/1.1",
        b"GET /a\rb HTTP/1.1",  # bare CR
        b"GET a/b HTTP/1.1",  # no recognised form
        b"GET ftp://x/ HTTP/1.1",
        b"GET http://user@x/ HTTP/1.1",  # userinfo is refused
        b"GET http://a b/ HTTP/1.1",
        b"GET http:/x HTTP/1.1",
        b"GET http:///x HTTP/1.1",  # empty host
        b"GET * HTTP/1.1",  # asterisk only for OPTIONS
        b"CONNECT example.com:443 HTTP/1.1",
    ],
)
def test_malformed_request_line_is_400(line):
    assert status(line + b"\r\nHost: x\r\n\r\n") == 400


@pytest.mark.parametrize(
    "target",
    [
        b"/api/\xe9esource/456",  # a latin-1 byte
        b"/\xc3\xa0k",  # raw UTF-8
        b"/\xc3\xa0 k",  # raw UTF-8, then a space
        b"/\x80",
        b"/\xff",
        b"/a?q=\xe9",  # in the query
        b"/a#\xe9",  # in a fragment
        b"http://x/\xe9",  # in an absolute-form target
        b"http://\xe9/",  # in its authority
    ],
)
def test_target_outside_visible_ascii_is_400_in_every_split(target):
    """RFC 9112 §3.2, RFC 3986 §2: a request-target is visible ASCII; other bytes go percent-encoded."""
    data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert statuses_in_every_split(data) == {400}
    if b" k" not in target:
        assert "target" in refusal(data).reason


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/3.0"])
def test_unsupported_version_is_505(version):
    assert status(b"GET / " + version + b"\r\nHost: x\r\n\r\n") == 505


def test_request_line_limit_is_414_and_inclusive():
    limit = Limits().request_line
    ok = b"GET /" + b"a" * (limit - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(ok) == limit
    assert parse(ok + b"\r\nHost: x\r\n\r\n").method == "GET"
    too_long = ok.replace(b"/a", b"/aa", 1)
    assert status(too_long + b"\r\nHost: x\r\n\r\n") == 414


def test_long_request_line_is_refused_before_it_ends():
    parser = RequestParser()
    parser.feed(b"GET /" + b"a" * 5000)  # no CRLF yet: waiting would only buffer more
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 414


# -- header fields -----------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        b"X-A : b",  # whitespace between name and colon
        b"X-A\t: b",
        b"X A: b",  # names are tokens
        b"X(A): b",
        b"X\x00A: b",
        b"\xe9: b",
        b": b",  # empty name
        b"no-colon",
        b"X-A: a\x00b",  # NUL, other controls, DEL
        b"X-A: a\x01b",
        b"X-A: a\x1bb",
        b"X-A: a\x7fb",
        b"X-A: a\x0bb",
        b"X-A: a\rb",  # bare CR inside a value
        b" X-A: b",  # obs-fold (continuation line) ...
        b"\tX-A: b",
    ],
)
def test_malformed_field_is_400(field):
    assert status(GET + field + b"\r\n\r\n") == 400


def test_obs_fold_of_a_previous_field_is_400():
    error = refusal(GET + b"X-A: one\r\n two\r\n\r\n")
    assert error.status == 400 and "folding" in error.reason


def test_field_size_limit_is_431_and_inclusive():
    limit = Limits().field_size
    ok = b"X-A: " + b"v" * (limit - 5)
    assert len(ok) == limit
    assert parse(GET + ok + b"\r\n\r\n").headers[-1][0] == "X-A"
    assert status(GET + ok + b"v\r\n\r\n") == 431


def test_field_count_limit_is_431_and_inclusive():
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(Limits().fields - 1))  # plus Host
    assert len(parse(GET + fields + b"\r\n").headers) == Limits().fields
    assert status(GET + fields + b"X-Last: v\r\n\r\n") == 431


def test_head_size_limit_is_431():
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
    assert status(GET + fields + b"\r\n") == 431


def test_small_limits_apply():
    assert status(b"GET /" + b"a" * 70 + b" HTTP/1.1\r\n\r\n", SMALL) == 414
    assert status(GET + b"X: " + b"v" * 50 + b"\r\n\r\n", SMALL) == 431
    assert status(GET + b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", SMALL) == 431
    small_head = Limits(head_size=100)
    assert status(GET + b"".join(b"X: %s\r\n" % (b"v" * 20) for _ in range(3)) + b"\r\n", small_head) == 431


def test_request_line_limit_larger_than_head_still_gives_414():
    limits = Limits(request_line=100_000, head_size=1000)
    assert status(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", limits) == 414


def test_bad_line_is_refused_before_the_head_ends():
    parser = RequestParser()
    parser.feed(GET + b"Bad Name: x\r\nX-More: still coming")
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 400


def test_unfinished_head_stays_below_head_size():
    parser = RequestParser(SMALL)
    data = GET + b"".join(b"X-%d: v\r\n" % i for i in range(2))
    parser.feed(data)
    assert parser.next_request() is None
    assert len(parser.buffer) < SMALL.head_size


# -- Host --------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",  # two Hosts, even equal
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",  # also on HTTP/1.0
        b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\n\r\n",  # absolute-form still needs Host on 1.1
    ],
)
def test_host_rules(head):
    assert status(head) == 400


# -- message framing: the smuggling-shaped inputs -----------------------------


def post(*fields: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST / " + version + b"\r\nHost: x\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


@pytest.mark.parametrize(
    "fields",
    [
        (b"Content-Length: 5", b"Transfer-Encoding: chunked"),  # CL.TE
        (b"Transfer-Encoding: chunked", b"Content-Length: 5"),  # TE.CL
        (b"Transfer-Encoding: chunked", b"Content-Length: 0"),
        (b"Content-Length: 5", b"Content-Length: 6"),
        (b"Content-Length: 5", b"Content-Length: 5"),  # even equal
        (b"Content-Length: 5, 5",),
        (b"Content-Length: +5",),
        (b"Content-Length: -5",),
        (b"Content-Length: 0x5",),
        (b"Content-Length: 5 5",),
        (b"Content-Length: 5a",),
        (b"Content-Length:",),
        (b"Content-Length: \xb2",),  # a latin-1 superscript digit
        (b"Content-Length: 1234567890123456789",),  # past any sane size
        (b"Transfer-Encoding: gzip",),  # final coding is not chunked
        (b"Transfer-Encoding: chunked, gzip",),
        (b"Transfer-Encoding: chunked, chunked",),
        (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
        (b"Transfer-Encoding: identity",),
        (b"Transfer-Encoding: xchunked",),
        (b"Transfer-Encoding: chunked;q=1",),
        (b'Transfer-Encoding: "chunked"',),
        (b"Transfer-Encoding:",),
        (b"Transfer-Encoding: ,chunked",),
        (b"Transfer-Encoding: chunked,",),
        (b"Transfer-Encoding: \x0bchunked",),
        (b"Transfer-Encoding : chunked",),
        (b"Transfer-Encoding:\r\n chunked",),  # folded onto the next line
        (b"X-Pad: x\r\nTransfer-Encoding: chunked\r\n\tContent-Length: 5",),
    ],
)
def test_ambiguous_framing_is_400(fields):
    assert status(post(*fields) + b"0\r\n\r\n") == 400


def test_transfer_encoding_on_http10_is_400():
    assert status(post(b"Transfer-Encoding: chunked", version=b"HTTP/1.0") + b"0\r\n\r\n") == 400


def test_unknown_coding_before_chunked_is_501():
    assert status(post(b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n") == 501
    assert status(post(b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked") + b"0\r\n\r\n") == 501


def test_max_body_is_413_before_any_body_byte():
    parser = RequestParser(Limits(max_body=10))
    parser.feed(post(b"Content-Length: 11"))  # no body bytes sent at all
    with pytest.raises(HTTPError) as info:
        parser.next_request()
    assert info.value.status == 413
    assert parse(post(b"Content-Length: 10"), Limits(max_body=10)).content_length == 10


def test_max_body_applies_to_chunked_bodies():
    limits = Limits(max_body=10)
    assert status(post(b"Transfer-Encoding: chunked") + b"a\r\n0123456789\r\n1\r\n", limits) == 413
    _, body, _ = parse_with_body(
        post(b"Transfer-Encoding: chunked") + b"a\r\n0123456789\r\n0\r\n\r\n", limits
    )
    assert body == b"0123456789"


def test_body_bytes_are_never_a_request():
    smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    data = post(b"Content-Length: %d" % len(smuggled)) + smuggled
    parser = RequestParser()
    parser.feed(data)
    assert parser.next_request() is not None
    with pytest.raises(ProtocolUsageError):
        parser.next_request()  # the body is not done: no next head yet
    assert read_all(parser) == smuggled
    parser.start_next()
    assert parser.next_request() is None and not parser.buffer


# -- chunked framing ---------------------------------------------------------


CHUNKED = post(b"Transfer-Encoding: chunked")


@pytest.mark.parametrize(
    "body",
    [
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\t\r\nhello\r\n0\r\n\r\n",
        b"5g\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",  # empty size
        b"5;\r\nhello\r\n0\r\n\r\n",  # empty extension
        b"5;a=\r\nhello\r\n0\r\n\r\n",
        b'5;a="open\r\nhello\r\n0\r\n\r\n',
        b"5;a=b c\r\nhello\r\n0\r\n\r\n",
        b"5;a\x00\r\nhello\r\n0\r\n\r\n",
        b"5\rx\r\nhello\r\n0\r\n\r\n",
        b"1" * 17 + b"\r\n",  # more hex digits than 64 bits hold
        b"ffffffffffffffff\r\n",  # fits 64 bits but not a signed one
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
        b"5\r\nhello world\r\n0\r\n\r\n",  # more data than the size says
        b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
        b"5\r\nhello\r\n0\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",  # bare LF ending the trailers
        b"5\r\nhello\r\n0\r\nX: y\n\r\n",
        b"5\r\nhello\r\n0\r\nBad Trailer: y\r\n\r\n",
        b"5\r\nhello\r\n0\r\n folded: y\r\n\r\n",
    ],
)
def test_malformed_chunked_body_is_400(body):
    assert status(CHUNKED + body) == 400


# RFC 9110 §6.5.1: fields a trailer must never carry, grouped as the RFC groups them.
FORBIDDEN_TRAILERS = [
    # message framing and connection handling
    "Content-Length", "Transfer-Encoding", "Trailer", "Connection", "Keep-Alive", "Proxy-Connection",
    "Upgrade", "TE",
    # routing
    "Host", "Max-Forwards", "Forwarded",
    # request modifiers: controls and conditionals
    "Expect", "Cache-Control", "Pragma", "Range", "If-Match", "If-None-Match", "If-Modified-Since",
    "If-Unmodified-Since", "If-Range",
    # authentication
    "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate", "Cookie",
    "Set-Cookie",
    # response control data
    "Age", "Date", "Expires", "Location", "Retry-After", "Vary",
    # how to process the content
    "Content-Encoding", "Content-Type", "Content-Range",
]  # fmt: skip


def test_forbidden_trailer_list_is_the_parsers():
    assert {name.upper() for name in FORBIDDEN_TRAILERS} == PARSER_FORBIDS


@pytest.mark.parametrize("name", FORBIDDEN_TRAILERS)
def test_forbidden_trailer_field_is_400_in_every_split(name):
    trailer = name.encode() + b": 5"
    for spelling in (trailer, trailer.upper(), trailer.lower()):
        data = CHUNKED + b"5\r\nhello\r\n0\r\nX-Ok: 1\r\n" + spelling + b"\r\n\r\n" + GET + b"\r\n"
        assert statuses_in_every_split(data) == {400}
    assert "trailer" in refusal(CHUNKED + b"0\r\n" + trailer + b"\r\n\r\n").reason


def test_allowed_trailers_change_neither_the_headers_nor_the_framing():
    """Trailers are checked and dropped: the next request starts right after them."""
    data = (
        CHUNKED
        + b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nServer-Timing: total;dur=1\r\n\r\n"
        + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    first, second = parsed_in_every_split(data)
    assert first.headers == (("HOST", "x"), ("TRANSFER-ENCODING", "chunked"))
    assert (second.path, second.headers) == ("/next", (("HOST", "x"),))
    _, body, rest = parse_with_body(data)
    assert body == b"hello" and rest.startswith(b"GET /next")


def test_chunk_extension_limit():
    limits = Limits(chunk_ext=16)
    ok = b"5;" + b"e" * 14
    _, body, _ = parse_with_body(CHUNKED + ok + b"\r\nhello\r\n0\r\n\r\n", limits)
    assert body == b"hello"
    assert status(CHUNKED + ok + b"e\r\nhello\r\n0\r\n\r\n", limits) == 400
    parser = RequestParser(limits)  # refused before the line ends
    parser.feed(CHUNKED + b"5;" + b"e" * 40)
    parser.next_request()
    with pytest.raises(HTTPError):
        parser.read_body()


def test_trailer_size_limit_is_431():
    limits = Limits(trailer_size=20)
    ok = b"X: " + b"v" * 15 + b"\r\n"  # 20 bytes with its CRLF
    _, body, _ = parse_with_body(CHUNKED + b"1\r\na\r\n0\r\n" + ok + b"\r\n", limits)
    assert body == b"a"
    assert status(CHUNKED + b"1\r\na\r\n0\r\n" + ok + b"Y: 1\r\n\r\n", limits) == 431
    assert status(CHUNKED + b"1\r\na\r\n0\r\n" + b"X: " + b"v" * 40, limits) == 431


def test_chunked_size_bound_is_inclusive():
    parser = RequestParser()
    parser.feed(CHUNKED + b"7fffffffffffffff\r\nabc")
    parser.next_request()
    assert parser.read_body() == b"abc"
    assert parser.body_left() is None


# -- bare LF, refused everywhere ----------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\nContent-Length: 5\r\n\r\nhello",
    ],
)
def test_bare_lf_in_the_head_is_400(data):
    error = refusal(data)
    assert error.status == 400


def test_bare_lf_end_of_head_is_refused_without_waiting():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\nHost: x\n\n")  # a bare-LF client thinks it is done
    with pytest.raises(HTTPError):
        parser.next_request()


# -- API misuse --------------------------------------------------------------


def test_api_misuse_raises_protocol_usage_error():
    parser = RequestParser()
    with pytest.raises(ProtocolUsageError):
        parser.read_body()
    with pytest.raises(ProtocolUsageError):
        parser.start_next()
    parser.feed(post(b"Content-Length: 3"))
    parser.next_request()
    with pytest.raises(ProtocolUsageError):
        parser.start_next()
    with pytest.raises(ProtocolUsageError):
        parser.next_request()
    assert parser.read_body() is None  # nothing buffered yet


def test_refusal_reasons_are_short_and_specific():
    assert (
        "Transfer-Encoding and Content-Length"
        in refusal(post(b"Content-Length: 1", b"Transfer-Encoding: chunked")).reason
    )
    assert "colon" in refusal(GET + b"X-A : b\r\n\r\n").reason
    assert "Host" in refusal(b"GET / HTTP/1.1\r\n\r\n").reason
