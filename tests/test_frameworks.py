"""Flask, Bottle and wsgiref.validate apps served by forkserve.

``tests/apps/flask_app.py`` and ``tests/apps/bottle_app.py`` are ordinary
apps written the way their frameworks document. ``tests/apps/validated.py``
wraps each test app in ``wsgiref.validate.validator``, which checks every
call against PEP 3333 from both sides: a violation by forkserve or by the
app raises AssertionError inside the request (a 500 plus a traceback in
the log) and questionable usage prints a WSGIWarning. So each validated
run asserts the answers *and* a log free of both.

Each app gets one module-scoped server (one worker, so requests are served
strictly in turn); tests that need a fresh server use ``serve``.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ResponseReader, Server, http_exchange, running, wait_until

BLOB_SIZE = 700_000


class Files:
    """A directory of files the apps serve ($FORKSERVE_TEST_FILES)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob = os.urandom(BLOB_SIZE)
        (root / "blob.bin").write_bytes(self.blob)
        (root / "hello.txt").write_bytes(b"hello from a file\n")

    @property
    def env(self) -> dict[str, str]:
        return {"FORKSERVE_TEST_FILES": str(self.root)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return Files(tmp_path_factory.mktemp("served-files"))


def module_server(tmp_path_factory: pytest.TempPathFactory, files: Files, app: str) -> Iterator[Server]:
    with running([app], tmp_path_factory.mktemp(app.replace(":", "-")), env=files.env) as server:
        yield server


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory, files) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, files, "flask_app:app")


@pytest.fixture(scope="module")
def bottle_server(tmp_path_factory, files) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, files, "bottle_app:app")


def raw_date_headers(server: Server, path: bytes) -> list[bytes]:
    """The Date header lines of one response, exactly as sent on the wire."""
    data = http_exchange(server.connect(), b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path)
    head = data.partition(b"\r\n\r\n")[0]
    return [line for line in head.split(b"\r\n")[1:] if line.lower().startswith(b"date:")]


def assert_clean_log(server: Server, tracebacks: int = 0) -> None:
    """No validator complaint and no error in the log, beyond ``tracebacks`` the app logged itself."""
    log = server.log()
    for sign in ("AssertionError", "WSGIWarning", "Exception ignored", "[ERROR]", "[WARNING]"):
        assert sign not in log, log
    assert log.count("Traceback (most recent call last)") == tracebacks, log


# -- Flask ------------------------------------------------------------------


def test_flask_json_and_query_args(flask_server):
    response = requests.get(flask_server.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"framework": "flask", "pid": flask_server.workers()[0]}

    response = requests.get(flask_server.url + "/args?a=1&a=2&b=x%20y&c=%E2%82%AC", timeout=10)
    assert response.json() == {"a": ["1", "2"], "b": ["x y"], "c": ["€"]}


def test_flask_json_post(flask_server):
    payload = {"name": "Zoë", "tags": ["a", "b"], "n": 3.5, "nested": {"ok": True}}
    response = requests.post(flask_server.url + "/json", json=payload, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"received": payload, "content_type": "application/json"}


def test_flask_form_post(flask_server):
    assert "<form" in requests.get(flask_server.url + "/form", timeout=10).text
    response = requests.post(
        flask_server.url + "/form", data={"name": "bolts & nuts", "qty": "4"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"name": "bolts & nuts", "qty": 4, "total": 12}
    # A missing field is Flask's 400, not a server error.
    assert requests.post(flask_server.url + "/form", data={"qty": "1"}, timeout=10).status_code == 400


def test_flask_reads_fixed_length_and_chunked_bodies(flask_server):
    body = os.urandom(1_000_000)
    response = requests.post(flask_server.url + "/sha256", data=body, timeout=30)
    assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}

    # No Content-Length: Werkzeug relies on wsgi.input_terminated to read to the end.
    parts = [os.urandom(3000) for _ in range(40)]
    response = requests.post(flask_server.url + "/sha256", data=iter(parts), timeout=30)
    whole = b"".join(parts)
    assert response.json() == {"sha256": hashlib.sha256(whole).hexdigest(), "size": len(whole)}


def test_flask_multipart_upload(flask_server):
    data = os.urandom(600_000)
    response = requests.post(
        flask_server.url + "/upload", files={"file": ("photo.jpg", data, "image/jpeg")}, timeout=30
    )
    assert response.status_code == 200
    assert response.json() == {
        "filename": "photo.jpg",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_flask_stream_with_context(flask_server):
    response = requests.get(flask_server.url + "/stream?count=6", timeout=10)
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.text == "".join(f"/stream chunk {i}\n" for i in range(6))


def test_flask_generator_is_closed_when_the_client_leaves(flask_server, tmp_path):
    marker = tmp_path / "cleaned"
    sock = flask_server.connect()
    sock.sendall(b"GET /forever HTTP/1.1\r\nHost: t\r\nX-Marker: %s\r\n\r\n" % str(marker).encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    sock.close()
    assert wait_until(marker.exists, 10)
    assert marker.read_text() == "cleaned up"
    assert requests.get(flask_server.url + "/", timeout=10).status_code == 200


def test_flask_sees_repeated_headers_joined_and_underscored_names_dropped(flask_server):
    sock = flask_server.connect()
    sock.sendall(
        b"GET /headers HTTP/1.1\r\nHost: t\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"X-Tag: one\r\nX-Tag: two\r\nX-User: real\r\nX_User: forged\r\nConnection: close\r\n\r\n"
    )
    status, _, body = ResponseReader(sock).read()
    sock.close()
    assert status == 200
    data = json.loads(body)
    assert data["cookies"] == {"a": "1", "b": "2"}
    assert [tag.strip() for tag in data["headers"]["X-Tag"].split(",")] == ["one", "two"]
    assert data["headers"]["X-User"] == "real"
    assert data["remote_addr"] == "127.0.0.1"


def test_flask_send_file(flask_server, files):
    response = requests.get(flask_server.url + "/files/blob.bin", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(BLOB_SIZE)
    assert response.content == files.blob

    # Werkzeug answers ranges itself; forkserve must pass the 206 through intact.
    ranged = requests.get(
        flask_server.url + "/files/blob.bin", headers={"Range": "bytes=1000-1999"}, timeout=10
    )
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 1000-1999/{BLOB_SIZE}"
    assert ranged.content == files.blob[1000:2000]


def test_flask_send_file_from_memory(flask_server):
    response = requests.get(flask_server.url + "/report.csv", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["Content-Disposition"] == "attachment; filename=report.csv"
    assert response.text == "".join(f"{i},{i * i}\n" for i in range(1000))
    assert response.headers["Content-Length"] == str(len(response.content))


def test_flask_conditional_get_keeps_the_connection_usable(flask_server):
    etag = requests.get(flask_server.url + "/files/hello.txt", timeout=10).headers["ETag"]
    sock = flask_server.connect()
    reader = ResponseReader(sock)
    sock.sendall(
        b"GET /files/hello.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: %s\r\n\r\n"
        b"GET /files/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" % etag.encode()
    )
    status, headers, body = reader.read()
    assert status == 304 and body == b""
    assert headers["etag"] == etag
    status, headers, body = reader.read()
    assert status == 200 and body == b"hello from a file\n"
    assert headers["content-length"] == "18"
    sock.close()


def test_flask_abort_and_error_handler(flask_server):
    response = requests.get(flask_server.url + "/no/such/thing", timeout=10)
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "path": "/no/such/thing"}
    assert requests.get(flask_server.url + "/files/absent.bin", timeout=10).json()["error"] == "not found"
    assert requests.get(flask_server.url + "/teapot", timeout=10).status_code == 418
    assert requests.post(flask_server.url + "/", timeout=10).status_code == 405


def test_flask_view_exception_is_a_500_with_a_logged_traceback(flask_server):
    response = requests.get(flask_server.url + "/boom", timeout=10)
    assert response.status_code == 500
    assert "Internal Server Error" in response.text
    assert "failed on purpose" not in response.text  # no details leak to the client
    assert flask_server.wait_for_log(r"Exception on /boom \[GET\]")
    log = flask_server.log()
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: flask view failed on purpose" in log
    # Flask handled it, so the worker lives on and keeps serving.
    assert requests.get(flask_server.url + "/", timeout=10).json()["pid"] == flask_server.workers()[0]


# -- Bottle -----------------------------------------------------------------


def test_bottle_routes_and_templates(bottle_server):
    response = requests.get(bottle_server.url + "/", timeout=10)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["framework"] == "bottle"
    response = requests.get(bottle_server.url + "/hello/%3Cb%3Ebob", timeout=10)
    assert response.text == "<p>Hello, &lt;b&gt;bob!</p>"


def test_bottle_query_parameters(bottle_server):
    response = requests.get(bottle_server.url + "/query?tag=a&tag=b&q=%C3%A9t%C3%A9", timeout=10)
    assert response.json() == {"tags": ["a", "b"], "q": "été", "raw": "tag=a&tag=b&q=%C3%A9t%C3%A9"}


def test_bottle_request_body_with_content_length(bottle_server):
    for body in (b"short body", os.urandom(400_000)):  # the second one goes to a temporary file
        response = requests.post(bottle_server.url + "/echo", data=body, timeout=30)
        assert response.status_code == 200
        assert response.content == body
        assert response.headers["X-Sha256"] == hashlib.sha256(body).hexdigest()


def test_bottle_form_and_upload(bottle_server):
    response = requests.post(
        bottle_server.url + "/form", data={"name": "Renée", "colour": "teal"}, timeout=10
    )
    assert response.json() == {"name": "Renée", "colour": "teal"}

    data = os.urandom(250_000)
    response = requests.post(
        bottle_server.url + "/upload", files={"file": ("report.pdf", data)}, data={"label": "Q3"}, timeout=30
    )
    assert response.json() == {
        "filename": "report.pdf",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "label": "Q3",
    }


def test_bottle_static_file(bottle_server, files):
    response = requests.get(bottle_server.url + "/static/blob.bin", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(BLOB_SIZE)
    assert response.content == files.blob

    ranged = requests.get(bottle_server.url + "/static/blob.bin", headers={"Range": "bytes=-100"}, timeout=10)
    assert ranged.status_code == 206
    assert ranged.content == files.blob[-100:]

    modified = response.headers["Last-Modified"]
    cached = requests.get(
        bottle_server.url + "/static/blob.bin", headers={"If-Modified-Since": modified}, timeout=10
    )
    assert cached.status_code == 304 and cached.content == b""

    assert requests.get(bottle_server.url + "/static/nope.bin", timeout=10).status_code == 404
    escaped = requests.get(bottle_server.url + "/static/..%2F..%2Fetc%2Fpasswd", timeout=10)
    assert escaped.status_code in (403, 404)
    assert b"root:" not in escaped.content


def test_bottle_status_codes(bottle_server):
    created = requests.get(bottle_server.url + "/created", allow_redirects=False, timeout=10)
    assert created.status_code == 201
    assert created.headers["Location"] == "/items/1"
    assert created.json() == {"created": True}
    forbidden = requests.get(bottle_server.url + "/forbidden", timeout=10)
    assert forbidden.status_code == 403 and "no entry" in forbidden.text
    assert requests.get(bottle_server.url + "/nowhere", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("server_fixture", "path"),
    [("flask_server", b"/files/hello.txt"), ("bottle_server", b"/static/hello.txt")],
)
def test_file_responses_carry_one_date_header(request, server_fixture, path):
    """FAILS: Werkzeug's send_file and Bottle's static_file set Date themselves and
    forkserve adds its own, so the response has two Date field lines (RFC 9110 §5.3, §6.6.1).
    """
    server = request.getfixturevalue(server_fixture)
    dates = raw_date_headers(server, path)
    assert len(dates) == 1, dates
    email.utils.parsedate_to_datetime(dates[0].split(b":", 1)[1].strip().decode())


def test_app_without_its_own_date_header_gets_one_from_forkserve(bottle_server):
    dates = raw_date_headers(bottle_server, b"/")
    assert len(dates) == 1
    assert email.utils.parsedate_to_datetime(dates[0].split(b":", 1)[1].strip().decode()).year >= 2024


# -- wsgiref.validate -------------------------------------------------------


@pytest.fixture
def validated(serve, files):
    """Start ``validated:NAME`` with one worker; returns the Server."""

    def start(name: str) -> Server:
        return serve(f"validated:{name}", env=files.env)

    return start


def finish_validated_run(server: Server, tracebacks: int = 0) -> None:
    # One worker serves in turn: this answer means every earlier iterable was closed
    # (the validator complains about unclosed ones when they are collected).
    assert requests.get(server.url + "/", timeout=10).status_code == 200
    assert_clean_log(server, tracebacks)


def test_basic_app_passes_the_validator(validated, files, tmp_path):
    server = validated("basic")
    url = server.url
    assert requests.get(url + "/hello", timeout=10).text == "Hello, world!"
    assert requests.head(url + "/hello", timeout=10).content == b""
    environ = requests.get(url + "/environ?x=1", timeout=10).json()
    assert environ["QUERY_STRING"] == "x=1" and environ["REQUEST_METHOD"] == "GET"
    assert requests.get(url + "/stream", timeout=10).text == "".join(f"part {i}\n" for i in range(5))
    assert requests.get(url + "/write", timeout=10).text == "written and returned"
    assert requests.get(url + "/no-content", timeout=10).status_code == 204
    assert requests.get(url + "/pid", timeout=10).text == str(server.workers()[0])
    assert requests.get(url + "/sleep?0", timeout=10).text == "slept"
    assert requests.get(url + "/nothing-here", timeout=10).status_code == 404

    body = os.urandom(200_000)
    assert requests.post(url + "/sha256", data=body, timeout=10).text == hashlib.sha256(body).hexdigest()
    chunked = [os.urandom(5000) for _ in range(10)]
    digest = hashlib.sha256(b"".join(chunked)).hexdigest()
    assert requests.post(url + "/sha256", data=iter(chunked), timeout=10).text == digest
    lines = requests.post(url + "/lines", data=b"one\ntwo\nthree\nfour\n", timeout=10).json()
    assert lines == ["one\n", "two", ["\n", "three\n", "four\n"]]
    assert requests.post(url + "/ignore", data=b"x" * 50_000, timeout=10).text == "ignored"

    marker = tmp_path / "closed-marker"
    assert (
        requests.get(url + "/closing", headers={"X-Marker": str(marker)}, timeout=10).text == "closing body"
    )
    assert wait_until(marker.exists, 5)
    download = requests.get(url + "/file", headers={"X-File": str(files.root / "blob.bin")}, timeout=30)
    assert download.content == files.blob
    finish_validated_run(server)


def test_small_test_apps_pass_the_validator(validated):
    """The supervision, loading, hostile-input and demo apps, behind the validator too."""
    server = validated("supervised")
    assert requests.get(server.url + "/", timeout=10).text == str(server.workers()[0])
    assert requests.get(server.url + "/sleep?0", timeout=10).text == "slept"
    finish_validated_run(server)
    server = validated("loading")
    assert requests.get(server.url + "/", timeout=10).text == "validated!"
    finish_validated_run(server)
    server = validated("demo")
    assert "forkserve is running" in requests.get(server.url + "/x", timeout=10).text
    finish_validated_run(server)
    server = validated("hostile")
    assert requests.get(server.url + "/pid", timeout=10).text == str(server.workers()[0])
    assert requests.post(server.url + "/ignore/1", data=b"x" * 1000, timeout=10).text == "ignored"
    assert requests.post(server.url + "/read-part/1?4", data=b"abcdefgh", timeout=10).text == "abcd"
    assert len(requests.get(server.url + "/big?200000", timeout=10).content) == 200_000
    assert requests.get(server.url + "/pid", timeout=10).ok  # one worker: every earlier body was closed
    assert_clean_log(server, 0)


def test_flask_app_passes_the_validator(validated, files):
    server = validated("flask")
    url = server.url
    assert requests.get(url + "/", timeout=10).json()["framework"] == "flask"
    assert requests.get(url + "/args?k=v&k=w", timeout=10).json() == {"k": ["v", "w"]}
    assert requests.post(url + "/json", json={"a": [1, 2]}, timeout=10).json()["received"] == {"a": [1, 2]}
    assert requests.post(url + "/form", data={"name": "n", "qty": "2"}, timeout=10).json()["total"] == 6

    body = os.urandom(300_000)
    assert requests.post(url + "/sha256", data=body, timeout=10).json()["size"] == len(body)
    assert requests.post(url + "/sha256", data=iter([body[:1000], body[1000:]]), timeout=10).json() == {
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": len(body),
    }
    upload = requests.post(url + "/upload", files={"file": ("f.bin", body)}, timeout=10).json()
    assert upload["sha256"] == hashlib.sha256(body).hexdigest()

    assert requests.get(url + "/report.csv", timeout=10).text.startswith("0,0\n1,1\n2,4\n")
    assert requests.get(url + "/stream?count=3", timeout=10).text == "".join(
        f"/stream chunk {i}\n" for i in range(3)
    )
    assert requests.get(url + "/files/blob.bin", timeout=30).content == files.blob
    ranged = requests.get(url + "/files/blob.bin", headers={"Range": "bytes=5-9"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == files.blob[5:10]
    assert requests.head(url + "/files/blob.bin", timeout=10).headers["Content-Length"] == str(BLOB_SIZE)
    assert requests.get(url + "/missing", timeout=10).status_code == 404
    assert requests.get(url + "/teapot", timeout=10).status_code == 418
    # Flask logs this one through wsgi.errors, which the validator checks too.
    assert requests.get(url + "/boom", timeout=10).status_code == 500
    assert server.wait_for_log("RuntimeError: flask view failed on purpose")
    finish_validated_run(server, tracebacks=1)


def test_bottle_app_passes_the_validator(validated, files):
    server = validated("bottle")
    url = server.url
    assert requests.get(url + "/", timeout=10).json()["framework"] == "bottle"
    assert requests.get(url + "/hello/ann", timeout=10).text == "<p>Hello, ann!</p>"
    assert requests.get(url + "/query?tag=x", timeout=10).json()["tags"] == ["x"]

    body = os.urandom(300_000)
    assert requests.post(url + "/echo", data=body, timeout=10).content == body
    assert requests.post(url + "/form", data={"name": "m", "colour": "red"}, timeout=10).json() == {
        "name": "m",
        "colour": "red",
    }
    upload = requests.post(url + "/upload", files={"file": ("u.bin", body)}, data={"label": "L"}, timeout=10)
    assert upload.json()["sha256"] == hashlib.sha256(body).hexdigest()

    static = requests.get(url + "/static/blob.bin", timeout=30)
    assert static.content == files.blob
    ranged = requests.get(url + "/static/blob.bin", headers={"Range": "bytes=0-99"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == files.blob[:100]
    cached = requests.get(
        url + "/static/blob.bin", headers={"If-Modified-Since": static.headers["Last-Modified"]}, timeout=10
    )
    assert cached.status_code == 304
    assert requests.get(url + "/created", timeout=10).status_code == 201
    assert requests.get(url + "/forbidden", timeout=10).status_code == 403
    assert requests.get(url + "/nowhere", timeout=10).status_code == 404
    finish_validated_run(server)


def test_validator_catches_a_broken_app_through_forkserve(validated):
    """The check above can fail: basic's /echo calls wsgi.input.read() without a size,
    which PEP 3333 does not allow, and the validator turns that into a logged 500."""
    server = validated("basic")
    response = requests.post(server.url + "/echo", data=b"abc", timeout=10)
    assert response.status_code == 500
    assert server.wait_for_log("AssertionError")
    assert "validate.py" in server.log()
    assert requests.get(server.url + "/hello", timeout=10).text == "Hello, world!"
