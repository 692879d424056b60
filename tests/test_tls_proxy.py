"""TLS in forkserve itself, the PROXY protocol, and the request hooks, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl

import pytest
import requests
from certs import make_certs
from conftest import run_forkserve, wait_until


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_args(certs, *extra: str) -> list[str]:
    return ["--certfile", str(certs.cert), "--keyfile", str(certs.key), *extra]


def test_https_serves_environ_files_and_bodies(serve, certs, tmp_path):
    server = serve("basic:app", *tls_args(certs))
    url = server.url.replace("http://", "https://")
    assert server.url.startswith("http://127.0.0.1:")  # the log names the socket; TLS is in front of HTTP
    environ = requests.get(url + "/environ", verify=str(certs.ca), timeout=10).json()
    assert environ["wsgi.url_scheme"] == "https"
    payload = os.urandom(3_000_000)
    echoed = requests.post(url + "/sha256", data=payload, verify=str(certs.ca), timeout=30).text
    assert echoed == hashlib.sha256(payload).hexdigest()
    blob = tmp_path / "blob"
    blob.write_bytes(payload)
    download = requests.get(url + "/file", headers={"X-File": str(blob)}, verify=str(certs.ca), timeout=30)
    assert download.content == payload  # sendfile cannot encrypt: the TLS path reads and sends
    session = requests.Session()
    assert [session.get(url + "/hello", verify=str(certs.ca), timeout=10).text for _ in range(3)] == [
        "Hello, world!"
    ] * 3


def _maps_openssl(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any("libssl" in line for line in maps)


def test_openssl_is_loaded_only_when_tls_is_on(serve, certs):
    """Loading OpenSSL costs every process of the pool megabytes: a server without TLS
    (behind nginx, say) never loads it; one with TLS loads it in every process."""
    plain = serve("basic:app", "--workers", "2", workers=2)
    assert requests.get(plain.url + "/", timeout=10).status_code == 200
    assert not any(_maps_openssl(pid) for pid in [plain.pid, *plain.workers()])
    tls = serve("basic:app", "--workers", "2", *tls_args(certs), workers=2)
    assert all(_maps_openssl(pid) for pid in [tls.pid, *tls.workers()])


def test_plain_http_to_a_tls_port_costs_only_that_connection(serve, certs):
    server = serve("basic:app", *tls_args(certs))
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/hello", timeout=10)
    url = server.url.replace("http://", "https://")
    assert requests.get(url + "/hello", verify=str(certs.ca), timeout=10).ok


def test_client_certificates_required(serve, certs):
    server = serve("basic:app", *tls_args(certs, "--ca-certs", str(certs.ca), "--cert-reqs", "required"))
    url = server.url.replace("http://", "https://")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url + "/hello", verify=str(certs.ca), timeout=10)
    ok = requests.get(
        url + "/hello", verify=str(certs.ca), cert=(str(certs.client_cert), str(certs.client_key)), timeout=10
    )
    assert ok.text == "Hello, world!"


def test_minimum_tls_version(serve, certs):
    server = serve("basic:app", *tls_args(certs, "--tls-min-version", "1.3"))
    host, port = server.address
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError), socket.create_connection((host, port), timeout=10) as raw:
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    context = ssl.create_default_context(cafile=str(certs.ca))
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == "TLSv1.3"


def test_bad_certificate_path_is_a_one_line_config_error(tmp_path):
    result = run_forkserve("basic:app", "--certfile", str(tmp_path / "missing.pem"), "--bind", "127.0.0.1:0")
    assert result.returncode == 2
    assert "certfile" in result.stderr and "No such file" in result.stderr


def proxied_get(server, header: bytes, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(server.address, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(header + b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_proxy_protocol_from_a_trusted_peer(serve):
    server = serve("basic:app", "--proxy-protocol")
    data = proxied_get(server, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n")
    environ = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert environ["REMOTE_ADDR"] == "203.0.113.9" and environ["REMOTE_PORT"] == "40000"
    # As in Gunicorn the header is optional: a connection without one is plain HTTP.
    plain = proxied_get(server, b"")
    assert plain.startswith(b"HTTP/1.1 200 ") and b'"REMOTE_ADDR": "127.0.0.1"' in plain


def test_proxy_protocol_v1_only_refuses_a_v2_header(serve):
    server = serve("basic:app", "--proxy-protocol", "v1")
    v2_local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])
    assert proxied_get(server, v2_local).startswith(b"HTTP/1.1 400 ")
    assert proxied_get(server, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n").startswith(b"HTTP/1.1 200 ")


def test_proxy_protocol_header_from_an_untrusted_peer_is_not_believed(serve):
    server = serve("basic:app", "--proxy-protocol", "--proxy-allow-from", "127.0.0.1")
    data = proxied_get(server, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n", source="127.0.0.5")
    assert data.startswith(b"HTTP/1.1 400 ")
    plain = proxied_get(server, b"", source="127.0.0.5")  # untrusted peers speak plain HTTP
    assert plain.startswith(b"HTTP/1.1 200 ") and b'"REMOTE_ADDR": "127.0.0.5"' in plain


def test_pre_and_post_request_hooks(serve, tmp_path):
    marks = tmp_path / "marks"
    config = tmp_path / "hooks.conf.py"
    config.write_text(
        f"MARKS = {str(marks)!r}\n"
        "def pre_request(worker, req):\n"
        "    with open(MARKS, 'a') as f:\n"
        "        f.write(f'pre {req.method} {req.path}\\n')\n"
        "def post_request(worker, req, environ, resp):\n"
        "    with open(MARKS, 'a') as f:\n"
        "        f.write(f'post {req.path} {resp.status}\\n')\n"
    )
    server = serve("basic:app", "-c", str(config))
    requests.get(server.url + "/hello", timeout=10)
    # post_request runs after the response left, so the client may be faster than the hook.
    assert wait_until(lambda: marks.read_text().splitlines() == ["pre GET /hello", "post /hello 200 OK"], 10)
