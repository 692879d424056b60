"""End-to-end: forkserve serving plain WSGI apps over real sockets."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import requests
from conftest import ResponseReader, wait_until


def test_serves_demo_app_without_an_app_name(serve):
    server = serve("--workers", "2", workers=2)
    response = requests.get(server.url + "/some/path", timeout=10)
    assert response.status_code == 200
    assert "forkserve is running" in response.text
    assert "GET /some/path" in response.text
    assert response.headers["Server"] == "forkserve"
    assert "Date" in response.headers
    assert "built-in demo app" in server.log()


def test_port_zero_reports_the_real_port(serve):
    server = serve("basic:app")
    host, port = server.address
    assert host == "127.0.0.1"
    assert port != 0
    assert requests.get(server.url + "/hello", timeout=10).text == "Hello, world!"


def test_startup_log_names_version_app_pid_and_workers(serve):
    server = serve("basic:app", "--workers", "3", workers=3)
    log = server.log()
    assert "Starting forkserve" in log
    assert "Serving app: basic:app" in log
    assert f"(pid {server.pid})" in log
    assert log.count("Booting worker with pid") == 3
    assert len(server.workers()) == 3


def test_request_body_roundtrip(serve):
    server = serve("basic:app")
    payload = os.urandom(300_000)
    response = requests.post(server.url + "/echo", data=payload, timeout=10)
    assert response.content == payload
    assert response.headers["X-Length"] == str(len(payload))


def test_chunked_upload_is_decoded(serve):
    server = serve("basic:app")
    parts = [os.urandom(1000) for _ in range(20)]
    response = requests.post(server.url + "/sha256", data=iter(parts), timeout=10)
    assert response.text == hashlib.sha256(b"".join(parts)).hexdigest()


def test_keep_alive_and_pipelining_on_one_connection(serve):
    server = serve("basic:app")
    sock = server.connect()
    reader = ResponseReader(sock)
    sock.sendall(
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert reader.read()[2] == b"Hello, world!"
    assert reader.read()[2] == b"hello"
    status, headers, body = reader.read()
    assert status == 200 and body.isdigit()
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, body = reader.read()
    assert headers["connection"] == "close"
    assert reader.closed()


def test_http10_is_close_delimited_unless_keep_alive(serve):
    server = serve("basic:app")
    sock = server.connect()
    sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
    reader = ResponseReader(sock)
    _status, headers, body = reader.read()
    assert "transfer-encoding" not in headers
    assert body == b"".join(f"part {i}\n".encode() for i in range(5))

    sock = server.connect()
    sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    reader = ResponseReader(sock)
    _status, headers, body = reader.read()
    assert headers["connection"] == "keep-alive" and body == b"Hello, world!"
    sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
    assert reader.read()[2] == b"Hello, world!"
    assert reader.closed()


def test_streamed_body_is_chunked_on_http11(serve):
    server = serve("basic:app")
    response = requests.get(server.url + "/stream", timeout=10)
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.text == "".join(f"part {i}\n" for i in range(5))


def test_write_callable_and_iterable_both_reach_the_client(serve):
    server = serve("basic:app")
    assert requests.get(server.url + "/write", timeout=10).text == "written and returned"


def test_iterable_close_is_always_called(serve, tmp_path):
    server = serve("basic:app")
    marker = tmp_path / "closed"
    response = requests.get(server.url + "/closing", headers={"X-Marker": str(marker)}, timeout=10)
    assert response.text == "closing body"
    assert wait_until(marker.exists, 5)


def test_app_exception_gives_500_and_a_logged_traceback(serve):
    server = serve("basic:app")
    response = requests.get(server.url + "/error", timeout=10)
    assert response.status_code == 500
    assert "Traceback" not in response.text and "broken" not in response.text
    assert server.wait_for_log("RuntimeError: this app is broken on purpose")
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200


def test_exception_after_headers_closes_the_connection(serve):
    server = serve("basic:app")
    sock = server.connect()
    sock.sendall(b"GET /error-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
    data = ResponseReader(sock).rest()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")  # never a clean end of a broken body
    assert server.wait_for_log("broken mid-body on purpose")


def test_exc_info_replaces_an_unsent_response(serve):
    server = serve("basic:app")
    response = requests.get(server.url + "/exc-info", timeout=10)
    assert response.status_code == 503
    assert response.text == "replaced"


def test_invalid_app_header_gives_500_not_a_split_response(serve):
    server = serve("basic:app")
    sock = server.connect()
    sock.sendall(b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
    data = ResponseReader(sock).rest()
    assert data.startswith(b"HTTP/1.1 500")
    assert b"injected" not in data


def test_file_wrapper_sends_a_real_file(serve, tmp_path):
    server = serve("basic:app")
    path = tmp_path / "blob.bin"
    content = os.urandom(1_500_000)
    path.write_bytes(content)
    response = requests.get(server.url + "/file", headers={"X-File": str(path)}, timeout=10)
    assert response.headers["Content-Length"] == str(len(content))
    assert response.content == content


def test_head_and_204_have_no_body(serve):
    server = serve("basic:app")
    sock = server.connect()
    reader = ResponseReader(sock)
    sock.sendall(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /no-content HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = reader.read(head_only=True)
    assert status == 200 and body == b""
    status, headers, body = reader.read()
    assert status == 204 and "content-length" not in headers and "transfer-encoding" not in headers
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.read()[2] == b"Hello, world!"  # nothing stray was left on the wire


def test_short_body_closes_the_connection(serve):
    server = serve("basic:app")
    sock = server.connect()
    sock.sendall(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
    data = ResponseReader(sock).rest()  # returns because the server closes
    assert data.endswith(b"only ten b")
    assert server.wait_for_log("app sent 10 of 100 body bytes")


def test_unread_body_is_drained_not_parsed_as_a_request(serve):
    server = serve("basic:app")
    sock = server.connect()
    reader = ResponseReader(sock)
    smuggled = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
    sock.sendall(
        b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled)
        + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert reader.read()[2] == b"ignored"
    assert reader.read()[2] == b"Hello, world!"


def test_expect_continue_is_answered_when_the_app_reads(serve):
    server = serve("basic:app")
    sock = server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    reader = ResponseReader(sock)
    status, _, _ = reader.read()
    assert status == 100
    sock.sendall(b"ping")
    assert reader.read()[2] == b"ping"


def test_sigterm_stops_the_whole_tree(serve):
    server = serve("basic:app", "--workers", "3", workers=3)
    workers = server.workers()
    assert len(workers) == 3
    assert server.stop(signal.SIGTERM) == 0
    assert wait_until(lambda: not server.survivors(), 10)
    assert "Shutting down" in server.log()


def test_sigint_stops_the_whole_tree(serve):
    server = serve("basic:app", "--workers", "2", workers=2)
    assert server.stop(signal.SIGINT) == 0
    assert wait_until(lambda: not server.survivors(), 10)


def test_workers_leave_when_the_master_is_killed(serve):
    server = serve("basic:app", "--workers", "2", workers=2)
    workers = server.workers()
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(10)
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers), 10)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dead_worker_is_replaced(serve):
    server = serve("basic:app", "--workers", "2", workers=2)
    before = set(server.workers())
    victim = next(iter(before))
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(server.workers()) == 2 and victim not in server.workers(), 10)
    assert server.wait_for_log(rf"Worker {victim} died \(signal SIGKILL\)")
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200


def test_process_titles(serve):
    server = serve("basic:app", "--workers", "1")
    master_title = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert master_title.startswith(b"forkserve: master [basic:app]")
    worker = server.workers()[0]
    assert Path(f"/proc/{worker}/cmdline").read_bytes().startswith(b"forkserve: worker [basic:app]")
