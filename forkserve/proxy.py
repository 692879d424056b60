"""Believing a proxy: X-Forwarded-*, Forwarded (RFC 7239) and the PROXY protocol.

Headers a proxy adds are only believed when the connection comes from an
address in ``forwarded_allow_ips`` (or over a unix socket, whose file
permissions already decide who may connect). From anyone else they reach
the app untouched but change nothing.

With several proxies in a chain, the client is the rightmost address in
the list that is not itself a trusted proxy: every trusted hop appended
what it saw, while anything left of the first untrusted hop was written
by the client and may be forged. A hop that names no address (RFC 7239
§6: ``unknown``, an obfuscated ``_name``, or nothing at all) is not a
trusted proxy either: the walk stops there and REMOTE_ADDR stays the
peer's. Proto and host are taken from the hop where the walk stopped when
the lists line up, else from the nearest proxy (the last value).
When a ``Forwarded`` header is present, the X-Forwarded-* headers are
ignored.

``parse_proxy_protocol()`` reads a PROXY protocol v1 or v2 header from the
start of a connection's bytes, without I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from collections.abc import Sequence
from typing import Any

from .http.errors import BadRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Gunicorn's secure_scheme_headers default: a header from a trusted proxy, and the value meaning HTTPS.
SECURE_SCHEME_HEADERS = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}
# The environ keys of the headers a proxy adds.
WATCHED = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
)


class ProxyTrust:
    """Which peers may tell us who the client really is, and with which headers.

    ``secure_headers`` is Gunicorn's secure_scheme_headers (a header and the
    value that means HTTPS); ``forwarders`` are Gunicorn's forwarder_headers,
    names with "_" (SCRIPT_NAME, PATH_INFO, REMOTE_USER ...) that a trusted
    proxy may set in the environ directly.
    """

    def __init__(
        self,
        allowed: Sequence[str],
        secure_headers: dict[str, str] = SECURE_SCHEME_HEADERS,
        forwarders: Sequence[str] = (),
    ) -> None:
        # X-Forwarded-Proto is read hop by hop with X-Forwarded-For (apply_forwarded),
        # and only when secure_scheme_headers names it, as Gunicorn reads it only then.
        self.proto = any(name.upper() == "X-FORWARDED-PROTO" for name in secure_headers)
        self.secure = {
            "HTTP_" + name.upper().replace("-", "_"): value.lower()
            for name, value in secure_headers.items()
            if name.upper() != "X-FORWARDED-PROTO"
        }
        self.watched = frozenset(WATCHED) | frozenset(self.secure)
        self.forwarders = frozenset(name.upper() for name in forwarders)
        self.everyone = "*" in allowed
        self.networks: list[Network] = [ipaddress.ip_network(a, strict=False) for a in allowed if a != "*"]
        # Verdicts by address: a server sees the same few peers over and over,
        # and parsing an address costs microseconds on every new connection.
        self.verdicts: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        verdict = self.verdicts.get(address)
        if verdict is None:
            verdict = self.decide(address)
            if len(self.verdicts) >= 1024:
                self.verdicts.clear()
            self.verdicts[address] = verdict
        return verdict

    def decide(self, address: str) -> bool:
        if not address:  # a unix socket peer
            return True
        if self.everyone:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",")] if value else []


def _client_index(addresses: list[str], trust: ProxyTrust) -> int:
    """Index of the rightmost address that is not a trusted proxy (0 if all are).

    An empty address (an unknown or obfuscated hop) is never trusted: nothing
    says which proxy appended what lies left of it. It must not reach
    ``trusts()``, where "" means a unix-socket peer.
    """
    for index in range(len(addresses) - 1, -1, -1):
        address = addresses[index]
        if not address or not trust.trusts(address):
            return index
    return 0


def _pick(values: list[str], index: int, length: int) -> str | None:
    if not values:
        return None
    return values[index] if len(values) == length else values[-1]


def apply_forwarded(environ: dict[str, Any], trust: ProxyTrust) -> None:
    """Rewrite REMOTE_ADDR, wsgi.url_scheme and the host from a trusted proxy's headers."""
    if trust.watched.isdisjoint(environ):
        return  # the common case on a direct connection: nothing to do
    if "HTTP_FORWARDED" in environ:
        hops = parse_forwarded(environ["HTTP_FORWARDED"])
        addresses = [hop.get("for", "") for hop in hops]
        protos = [hop.get("proto", "") for hop in hops]
        hosts = [hop.get("host", "") for hop in hops]
    else:
        addresses = _split(environ.get("HTTP_X_FORWARDED_FOR"))
        protos = _split(environ.get("HTTP_X_FORWARDED_PROTO")) if trust.proto else []
        hosts = _split(environ.get("HTTP_X_FORWARDED_HOST"))
    nodes = [_split_node(address) for address in addresses]
    count = len(nodes) or 1
    index = _client_index([host for host, _ in nodes], trust) if nodes else 0
    if nodes:
        host, port = nodes[index]
        if host:
            environ["REMOTE_ADDR"] = host
            environ["REMOTE_PORT"] = port
    proto = (_pick(protos, index, count) or "").lower()
    if proto in ("http", "https"):
        environ["wsgi.url_scheme"] = proto
    host_value = _pick(hosts, index, count)
    if host_value:
        environ["HTTP_HOST"] = host_value
    port_value = environ.get("HTTP_X_FORWARDED_PORT", "").strip()
    if port_value.isdigit() and "HTTP_FORWARDED" not in environ:
        environ["SERVER_PORT"] = port_value
    for key, secure_value in trust.secure.items():
        if key in environ:
            environ["wsgi.url_scheme"] = "https" if environ[key].strip().lower() == secure_value else "http"


def apply_forwarder_headers(
    environ: dict[str, Any], headers: list[tuple[str, str]], trust: ProxyTrust
) -> None:
    """A trusted proxy's SCRIPT_NAME, PATH_INFO, REMOTE_USER ... headers set those environ keys."""
    for name, value in headers:
        if name not in trust.forwarders and "*" not in trust.forwarders:
            continue
        if name == "SCRIPT_NAME":
            path = environ["PATH_INFO"]
            script = value.rstrip("/")
            environ["SCRIPT_NAME"] = script
            if script and path.startswith(script):
                environ["PATH_INFO"] = path[len(script) :]
        else:
            environ[name] = value


def _split_node(node: str) -> tuple[str, str]:
    """'1.2.3.4:80', '[::1]:80', '"[::1]"' or 'unknown' -> (address, port).

    RFC 7239 §6: an ``unknown`` or obfuscated (``_name``) node, with or
    without a port, and an empty one give ("", ""): an untrusted hop that
    leaves REMOTE_ADDR alone. So does anything that is not an IP address
    (the fuzzer found ``hello world`` and ``<script>`` becoming REMOTE_ADDR).
    An obfuscated or malformed port is reported as no port.
    """
    node = node.strip().strip('"')
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest.lstrip(":")
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    if not _is_address(host):
        return "", ""
    return host, port if port.isdigit() else ""


@functools.lru_cache(maxsize=1024)  # a server sees the same few proxies' clients over and over
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)  # judges a scope id too: "fe80::1%eth0" yes, "::%" no
    except ValueError:
        return False
    return True


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 Forwarded: a list of hops, each {'for': ..., 'proto': ..., 'host': ...}."""
    hops = []
    for element in _split_quoted(value, ","):
        hop = {}
        for pair in _split_quoted(element, ";"):
            name, sep, raw = pair.partition("=")
            if sep:
                hop[name.strip().lower()] = raw.strip().strip('"')
        hops.append(hop)
    return hops


def _split_quoted(value: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


# -- the PROXY protocol (v1 text, v2 binary) --------------------------------

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line the protocol allows, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_HEADER = struct.Struct("!12sBBH")


def starts_proxy_header(data: bytes | bytearray, mode: str) -> bool | None:
    """Do a connection's first bytes begin a PROXY header of a version ``mode`` accepts?

    None while too few bytes have come to tell. As in Gunicorn, the header
    is optional: a connection that starts otherwise is plain HTTP.
    """
    undecided = False
    for prefix in (V2_SIGNATURE,) * (mode in ("auto", "v2")) + (V1_PREFIX,) * (mode in ("auto", "v1")):
        if data[: len(prefix)] == prefix[: len(data)]:
            if len(data) >= len(prefix):
                return True
            undecided = True
    return None if undecided else False


def parse_proxy_protocol(data: bytes) -> tuple[int, tuple[str, str] | None] | None:
    """(bytes consumed, (client address, port) or None for LOCAL/UNKNOWN), or None for "need more".

    Raises BadRequest when the bytes are not a PROXY protocol header.
    """
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < len(V2_SIGNATURE):
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if len(data) < len(V1_PREFIX):
        return None if V1_PREFIX.startswith(data) else _refuse()
    if not data.startswith(V1_PREFIX):
        _refuse()
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            _refuse()
        return None
    return end + 2, _parse_v1(data[:end])


def _refuse() -> Any:
    raise BadRequest("expected a PROXY protocol header")


def _parse_v1(line: bytes) -> tuple[str, str] | None:
    parts = line.decode("ascii", "replace").split(" ")
    if parts[1:2] == ["UNKNOWN"]:
        return None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        _refuse()
    _, family, source, _destination, source_port, _destination_port = parts
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        _refuse()
    if (family == "TCP4") != (address.version == 4) or not source_port.isdigit():
        _refuse()
    return str(address), source_port


def _parse_v2(data: bytes) -> tuple[int, tuple[str, str] | None] | None:
    if len(data) < V2_HEADER.size:
        return None
    _, version_command, family, length = V2_HEADER.unpack_from(data)
    if version_command >> 4 != 2:
        _refuse()
    total = V2_HEADER.size + length
    if len(data) < total:
        return None
    body = data[V2_HEADER.size : total]
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection (health check)
        return total, None
    if command != 1:
        _refuse()
    address_family = family >> 4
    if address_family == 1 and length >= 12:  # AF_INET
        return total, (socket.inet_ntop(socket.AF_INET, body[:4]), str(struct.unpack("!H", body[8:10])[0]))
    if address_family == 2 and length >= 36:  # AF_INET6
        return total, (socket.inet_ntop(socket.AF_INET6, body[:16]), str(struct.unpack("!H", body[32:34])[0]))
    return total, None  # AF_UNIX or unspecified: no address to report
