"""Proxy headers and the PROXY protocol, as pure functions (end-to-end in test_nginx.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from forkserve.http.errors import BadRequest
from forkserve.proxy import V2_SIGNATURE, ProxyTrust, apply_forwarded, parse_forwarded, parse_proxy_protocol

LOOPBACK = ProxyTrust(["127.0.0.1", "::1"])


def environ(**headers: str) -> dict[str, str]:
    return {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5000", "wsgi.url_scheme": "http", **headers}


def test_trust_by_address_range_star_and_unix():
    trust = ProxyTrust(["10.0.0.0/8", "::1"])
    assert trust.trusts("10.1.2.3")
    assert trust.trusts("::ffff:10.1.2.3")  # IPv4-mapped
    assert not trust.trusts("11.0.0.1")
    assert trust.trusts("")  # unix socket peer
    assert not trust.trusts("not-an-ip")
    assert ProxyTrust(["*"]).trusts("203.0.113.9")


def test_remembered_verdicts_stay_right_and_bounded():
    trust = ProxyTrust(["10.0.0.0/8"])
    for _ in range(2):  # the second round answers from the table
        assert trust.trusts("10.9.9.9") and not trust.trusts("192.0.2.1")
    for n in range(5000):  # a client sending endless addresses
        assert not trust.trusts(f"192.0.{n // 256 % 256}.{n % 256}x")
    assert len(trust.verdicts) <= 1024
    assert trust.trusts("10.9.9.9") and not trust.trusts("192.0.2.1")


def test_x_forwarded_headers_from_a_trusted_proxy():
    env = environ(
        HTTP_X_FORWARDED_FOR="203.0.113.7",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_HOST="example.com",
        HTTP_X_FORWARDED_PORT="443",
    )
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "example.com"
    assert env["SERVER_PORT"] == "443"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"  # the header itself stays


def test_rightmost_untrusted_address_is_the_client():
    trust = ProxyTrust(["127.0.0.1", "10.0.0.0/8"])
    env = environ(
        HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.4, 10.0.0.2", HTTP_X_FORWARDED_PROTO="http, https, https"
    )
    apply_forwarded(env, trust)
    assert env["REMOTE_ADDR"] == "198.51.100.4"  # 1.1.1.1 was written by the client: forgeable
    assert env["wsgi.url_scheme"] == "https"


def test_unknown_proto_is_ignored():
    env = environ(HTTP_X_FORWARDED_PROTO="gopher")
    apply_forwarded(env, LOOPBACK)
    assert env["wsgi.url_scheme"] == "http"


def test_rfc7239_forwarded_wins_over_x_forwarded():
    forwarded = 'for=192.0.2.60;proto=https;host="app.example";by=203.0.113.43, for="[2001:db8::1]:4711"'
    env = environ(HTTP_FORWARDED=forwarded, HTTP_X_FORWARDED_FOR="6.6.6.6")
    apply_forwarded(env, ProxyTrust(["127.0.0.1", "2001:db8::/32"]))
    assert env["REMOTE_ADDR"] == "192.0.2.60" and env["REMOTE_PORT"] == ""
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "app.example"


def test_forwarded_stops_at_the_first_untrusted_hop():
    forwarded = 'for=192.0.2.60;proto=https;host="app.example", for="[2001:db8::1]:4711"'
    env = environ(HTTP_FORWARDED=forwarded)
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "2001:db8::1" and env["REMOTE_PORT"] == "4711"
    assert env["wsgi.url_scheme"] == "http"  # that hop said nothing about its protocol


def test_parse_forwarded_handles_quotes_with_separators():
    hops = parse_forwarded('for="_hidden";host="a,b;c", for=unknown')
    assert hops == [{"for": "_hidden", "host": "a,b;c"}, {"for": "unknown"}]


def test_obfuscated_or_unknown_client_leaves_remote_addr():
    env = environ(HTTP_FORWARDED="for=unknown")
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_FORWARDED": "for=6.6.6.6, for=unknown"},
        {"HTTP_FORWARDED": "for=6.6.6.6, for=UNKNOWN"},
        {"HTTP_FORWARDED": 'for=6.6.6.6, for="unknown:4711"'},
        {"HTTP_FORWARDED": "for=6.6.6.6, for=_hidden"},
        {"HTTP_FORWARDED": 'for=6.6.6.6, for="_hidden:_port"'},
        {"HTTP_FORWARDED": "for=6.6.6.6, proto=https"},  # a hop that names no client at all
        {"HTTP_FORWARDED": "for=6.6.6.6, for=unknown, for=127.0.0.1"},  # behind a trusted hop too
        {"HTTP_X_FORWARDED_FOR": "6.6.6.6, unknown"},
        {"HTTP_X_FORWARDED_FOR": "6.6.6.6, _hidden"},
        {"HTTP_X_FORWARDED_FOR": "6.6.6.6, "},
        {"HTTP_X_FORWARDED_FOR": "6.6.6.6, unknown, 127.0.0.1"},
    ],
)
def test_unknown_or_obfuscated_hop_stops_the_walk(headers):
    """RFC 7239 §6: such a hop is not a trusted proxy, so what lies left of it may be forged."""
    env = environ(**headers)
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "5000"


def test_proto_and_host_never_come_from_left_of_an_unknown_hop():
    forwarded = 'for=6.6.6.6;proto=https;host=evil.example, for=unknown;proto=http;host="app.example"'
    env = environ(HTTP_FORWARDED=forwarded)
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http" and env["HTTP_HOST"] == "app.example"  # the unknown hop's own
    env = environ(
        HTTP_X_FORWARDED_FOR="6.6.6.6, _hidden",
        HTTP_X_FORWARDED_PROTO="https, http",
        HTTP_X_FORWARDED_HOST="evil.example, app.example",
    )
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http" and env["HTTP_HOST"] == "app.example"


def test_obfuscated_port_is_not_reported():
    env = environ(HTTP_FORWARDED='for="198.51.100.4:_p1"')
    apply_forwarded(env, LOOPBACK)
    assert env["REMOTE_ADDR"] == "198.51.100.4" and env["REMOTE_PORT"] == ""


def test_proxy_protocol_v1():
    data = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n"
    consumed, client = parse_proxy_protocol(data)
    assert data[consumed:].startswith(b"GET /")
    assert client == ("192.0.2.1", "56324")
    assert parse_proxy_protocol(b"PROXY UNKNOWN\r\n") == (15, None)
    assert parse_proxy_protocol(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n")[1] == ("2001:db8::1", "1")


@pytest.mark.parametrize("size", range(1, 30))
def test_proxy_protocol_v1_in_pieces(size):
    data = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"
    assert parse_proxy_protocol(data[:size]) is None or size >= len(data)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n",
        b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 999.0.2.1 198.51.100.1 1 2\r\n",
        b"PROXY " + b"x" * 120,
    ],
)
def test_proxy_protocol_v1_rejects(data):
    with pytest.raises(BadRequest):
        parse_proxy_protocol(data)


def test_proxy_protocol_v2_ipv4_ipv6_and_local():
    body4 = socket.inet_pton(socket.AF_INET, "203.0.113.5") + socket.inet_pton(socket.AF_INET, "10.0.0.1")
    body4 += struct.pack("!HH", 4000, 443)
    header4 = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body4)) + body4
    consumed, client = parse_proxy_protocol(header4 + b"GET")
    assert consumed == len(header4) and client == ("203.0.113.5", "4000")
    assert parse_proxy_protocol(header4[:20]) is None  # need more

    body6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "::1")
    body6 += struct.pack("!HH", 5000, 443)
    header6 = V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(body6)) + body6
    assert parse_proxy_protocol(header6)[1] == ("2001:db8::7", "5000")

    local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    assert parse_proxy_protocol(local) == (16, None)

    with pytest.raises(BadRequest):
        parse_proxy_protocol(V2_SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 0))


def test_x_forwarded_proto_counts_only_when_secure_scheme_headers_name_it():
    env = environ(HTTP_X_FORWARDED_PROTO="https", HTTP_X_SCHEME="https")
    apply_forwarded(env, ProxyTrust(["127.0.0.1"], {"X-SCHEME": "https"}))
    assert env["wsgi.url_scheme"] == "https"  # from X-Scheme
    env = environ(HTTP_X_FORWARDED_PROTO="https")
    apply_forwarded(env, ProxyTrust(["127.0.0.1"], {"X-SCHEME": "https"}))
    assert env["wsgi.url_scheme"] == "http"  # the proxy may not strip X-Forwarded-Proto: not believed
    env = environ(HTTP_X_FORWARDED_PROTO="https")
    apply_forwarded(env, LOOPBACK)  # Gunicorn's default names it
    assert env["wsgi.url_scheme"] == "https"
