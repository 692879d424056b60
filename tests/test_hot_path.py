"""The shortcuts of the per-request path give the answers the full checks give.

The parser checks a complete head's field lines in one regular expression,
and the parser, ``build_environ()`` and ``build_head()`` remember checked
values in bounded tables (``forkserve.http.memo``). These tests hold each
shortcut to the slow path it replaces: same acceptance, same refusals, and
tables that never outgrow their bound.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserve.environ import base_environ, build_environ
from forkserve.http import grammar, memo, parser, response
from forkserve.http.errors import HTTPError, InvalidResponse
from forkserve.http.parser import RequestParser
from forkserve.http.response import build_head
from forkserve.streams import InputStream

# Pieces that make field lines valid or break them in every known way.
PIECES = st.sampled_from([*'aZ9-_:; \t\r\n\x00\x7f\xe9!"(', "\r\n"])


def text(min_size: int) -> st.SearchStrategy[str]:
    return st.lists(PIECES, min_size=min_size, max_size=12).map("".join)


def head_result(head: bytes) -> object:
    """The request, or the refusal's (status, reason), of one complete head."""
    request_parser = RequestParser()
    request_parser.feed(head)
    try:
        return request_parser.next_request()
    except HTTPError as error:
        return (error.status, error.reason)


def walk_result(head: bytes) -> object:
    """The same head fed byte by byte: every line goes through the line walk first."""
    request_parser = RequestParser()
    try:
        for i in range(len(head)):
            request_parser.feed(head[i : i + 1])
            if (request := request_parser.next_request()) is not None:
                return request
    except HTTPError as error:
        return (error.status, error.reason)
    return None


# -- the header block checked at once ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(text(0), min_size=1, max_size=5))
def test_field_block_check_agrees_with_each_line(lines):
    block = "\r\n".join(lines)
    one_by_one = all(grammar.FIELD_LINE.fullmatch(line) for line in block.split("\r\n"))
    assert (grammar.FIELD_LINES.fullmatch(block) is not None) == one_by_one


@settings(max_examples=300, deadline=None)
@given(st.lists(text(1), min_size=0, max_size=4))
def test_a_head_refused_by_the_fast_path_gets_the_same_reason_as_in_pieces(lines):
    head = ("GET / HTTP/1.1\r\nHost: x\r\n" + "".join(line + "\r\n" for line in lines)).encode("latin-1")
    if b"\r\n\r\n" in head:
        return  # an empty line would end the head early: not this test's subject
    head += b"\r\n"
    whole = head_result(head)
    assert whole == walk_result(head)
    assert whole != (400, "malformed request head")  # the walk always names the fault


def test_many_valid_fields_parse_in_order():
    names = [f"X-{i}" for i in range(50)]
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"%s: v%d \t\r\n" % (n.encode(), i) for i, n in enumerate(names)
    )
    request = head_result(head + b"\r\n")
    assert isinstance(request, parser.Request)
    assert request.headers[1:] == tuple((n.upper(), f"v{i}") for i, n in enumerate(names))


# -- the bounded tables ---------------------------------------------------------


def test_memo_table_stays_bounded_and_skips_long_text():
    table: dict[str, int] = {}
    for i in range(memo.LIMIT * 3):
        assert memo.remember(table, f"k{i}", i, 2) == i
        assert len(table) <= memo.LIMIT
    memo.remember(table, "long", 1, memo.MAX_TEXT + 1)
    assert "long" not in table


def test_many_hosts_keep_the_host_table_bounded():
    for i in range(memo.LIMIT + 10):
        request = head_result(b"GET / HTTP/1.1\r\nHost: h%d.example\r\n\r\n" % i)
        assert isinstance(request, parser.Request)
    assert len(parser._VALID_HOSTS) <= memo.LIMIT
    assert head_result(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == (400, "invalid Host header")
    assert "a b" not in parser._VALID_HOSTS


def head(headers: list, status: str = "200 OK") -> response.ResponseHead:
    return build_head(
        status, headers, version="HTTP/1.1", method="GET", keep_alive=True, body_length=None, extra=b""
    )


def test_a_refused_header_is_refused_every_time():
    for _ in range(3):
        with pytest.raises(InvalidResponse):
            head([("X-Bad", "a\r\nX-Injected: 1")])
        with pytest.raises(InvalidResponse):
            head([("200 OK", "v")], status="200\r\nX: 1")
    assert ("X-Bad", "a\r\nX-Injected: 1") not in response._FIELDS


def test_remembered_fields_give_the_same_head_as_the_first_time():
    fields = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("Set-Cookie", "a=1")]
    first = head(fields)
    assert head(list(fields)).data == first.data
    # Pairs given as lists (unhashable) take the full check and give the same bytes.
    assert head([list(field) for field in fields]).data == first.data
    assert first.content_length == 5 and first.data.count(b"Content-Length") == 1


def test_many_distinct_fields_keep_the_field_table_bounded():
    for i in range(memo.LIMIT + 10):
        head([("X-Request-Id", str(i))])
    assert len(response._FIELDS) <= memo.LIMIT
    head([("X-Long", "v" * (memo.MAX_TEXT + 1))])
    assert ("X-Long", "v" * (memo.MAX_TEXT + 1)) not in response._FIELDS


def test_environ_keys_from_remembered_names():
    request = head_result(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n"
        b"X-A: 1\r\nX-A: 2\r\nCookie: a=1\r\nCookie: b=2\r\nX_Forged: 1\r\n\r\n"
    )
    assert isinstance(request, parser.Request)
    base = base_environ(
        server=("h", "80"), peer=("127.0.0.1", "1"), url_scheme="http", multithread=False, file_wrapper=None
    )
    for _ in range(2):  # the second time every key comes from the table
        environ = build_environ(base, request, InputStream(lambda size: b""))
        assert environ["CONTENT_TYPE"] == "text/plain" and environ["CONTENT_LENGTH"] == "0"
        assert environ["HTTP_X_A"] == "1,2" and environ["HTTP_COOKIE"] == "a=1; b=2"
        assert "HTTP_X_FORGED" not in environ and "HTTP_CONTENT_TYPE" not in environ
