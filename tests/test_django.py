"""A real Django project (tests/djangoproject) served by forkserve.

The project is a stock ``startproject`` + ``startapp`` with a SQLite
database, default middleware (sessions, CSRF, clickjacking, ...) and
``DEBUG = False``. Its settings read the database path from
$FORKSERVE_TEST_DB and the download directory from $FORKSERVE_TEST_FILES.

The database is migrated once per session into a template file; every
server gets its own copy. Most tests share one module-scoped server with
two workers; the ``--preload`` and validator runs start their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import TESTS, ResponseReader, Server, http_exchange, running, wait_until

PROJECT = TESTS / "djangoproject"
SEED_ITEMS = {"Teapot": "18.50", "Kettle": "42.00", "Mug": "6.25"}
BLOB_SIZE = 1_500_000  # large enough to need several sendfile() rounds on loopback


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file with every migration applied (incl. the seed rows)."""
    db = tmp_path_factory.mktemp("django-template") / "template.sqlite3"
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "1"],
        cwd=PROJECT,
        env={**os.environ, "FORKSERVE_TEST_DB": str(db)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Applying shop.0002_seed_items... OK" in result.stdout
    return db


class Site:
    """One Django deployment's files: its own database and download directory."""

    def __init__(self, root: Path, template: Path) -> None:
        self.root = root
        self.db = root / "db.sqlite3"
        shutil.copyfile(template, self.db)
        self.files = root / "downloads"
        self.files.mkdir()
        self.blob = os.urandom(BLOB_SIZE)
        (self.files / "blob.bin").write_bytes(self.blob)

    @property
    def env(self) -> dict[str, str]:
        return {"FORKSERVE_TEST_DB": str(self.db), "FORKSERVE_TEST_FILES": str(self.files)}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Site:
    return Site(tmp_path_factory.mktemp("django-site"), migrated_template)


@pytest.fixture(scope="module")
def django_server(site: Site) -> Iterator[Server]:
    args = ["mysite.wsgi:application", "--chdir", str(PROJECT), "--workers", "2"]
    with running(args, site.root, site.root / "server.log", site.env, workers=2) as server:
        yield server


def csrf_form(session: requests.Session, url: str) -> str:
    """GET a form page and return its hidden CSRF token (the cookie lands in the session)."""
    page = session.get(url, timeout=10)
    assert page.status_code == 200
    assert "csrftoken" in session.cookies
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def post_new_item(url: str, fields: dict[str, str], with_token: bool = True) -> requests.Response:
    """GET the item form, then POST it (with its CSRF token unless told not to); no redirects followed."""
    with requests.Session() as session:
        token = csrf_form(session, url + "/items/new/")
        data = {"csrfmiddlewaretoken": token, **fields} if with_token else fields
        return session.post(url + "/items/new/", data=data, allow_redirects=False, timeout=10)


def item_names(server: Server) -> list[str]:
    response = requests.get(server.url + "/items.json", timeout=10)
    assert response.status_code == 200
    return [item["name"] for item in response.json()["items"]]


def assert_clean_log(server: Server) -> None:
    log = server.log()
    for sign in ("Traceback", "AssertionError", "WSGIWarning", "Exception ignored", "[ERROR]"):
        assert sign not in log, log


# -- the shared two-worker server ------------------------------------------


def test_template_page_lists_the_seeded_rows(django_server):
    response = requests.get(django_server.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<title>Shop inventory</title>" in response.text
    for name, price in SEED_ITEMS.items():
        assert f"{name}: {price}" in response.text
    # The default middleware stack ran.
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Server"] == "forkserve"
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_json_view_reads_the_database(django_server):
    response = requests.get(django_server.url + "/items.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    rows = {item["name"]: item["price"] for item in data["items"]}
    assert SEED_ITEMS.items() <= rows.items()
    assert data["pid"] in django_server.workers()


def test_csrf_protected_form_round_trip(django_server):
    response = post_new_item(django_server.url, {"name": "Sugar bowl", "price": "9.99"})
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert re.fullmatch(r"/items/\d+/", location)

    detail = requests.get(django_server.url + location, timeout=10)
    assert detail.status_code == 200
    assert '<h1 id="name">Sugar bowl</h1>' in detail.text
    assert '<p id="price">9.99</p>' in detail.text
    # A fresh connection (possibly the other worker) sees the committed row.
    assert "Sugar bowl" in item_names(django_server)


def test_post_without_the_csrf_token_is_refused(django_server):
    url = django_server.url + "/items/new/"
    no_cookie = requests.post(url, data={"name": "Smuggled", "price": "1.00"}, timeout=10)
    assert no_cookie.status_code == 403
    assert "CSRF verification failed" in no_cookie.text

    # A valid cookie, but the form's token is missing.
    no_field = post_new_item(django_server.url, {"name": "Smuggled", "price": "1.00"}, with_token=False)
    assert no_field.status_code == 403
    assert "Smuggled" not in item_names(django_server)


def test_invalid_form_is_shown_again_with_400(django_server):
    response = post_new_item(django_server.url, {"name": "Bad price", "price": "cheap"})
    assert response.status_code == 400
    assert "Enter a number." in response.text
    assert "Bad price" not in item_names(django_server)


def test_multipart_upload_arrives_intact(django_server):
    # Past FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MB): Django streams it to a temporary file.
    big = os.urandom(3_000_000)
    response = requests.post(
        django_server.url + "/upload/",
        files={"file": ("big.bin", big, "application/octet-stream")},
        data={"note": "grüße"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "big.bin",
        "size": len(big),
        "sha256": hashlib.sha256(big).hexdigest(),
        "note": "grüße",
        "on_disk": True,
    }

    small = b"a,b\n1,2\n"
    response = requests.post(django_server.url + "/upload/", files={"file": ("t.csv", small)}, timeout=10)
    assert response.json()["sha256"] == hashlib.sha256(small).hexdigest()
    assert response.json()["on_disk"] is False


def test_upload_without_a_file_is_a_form_error(django_server):
    response = requests.post(django_server.url + "/upload/", data={"note": "nothing"}, timeout=10)
    assert response.status_code == 400
    assert "file" in response.json()["errors"]


def test_streaming_response_is_sent_chunked(django_server):
    response = requests.get(django_server.url + "/stream/?count=7", timeout=10)
    assert response.status_code == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.text == "".join(f"line {i} of 7\n" for i in range(7))


def test_streaming_response_wire_framing(django_server):
    """Each piece the view yields is one chunk, and the body ends with the last-chunk."""
    data = http_exchange(
        django_server.connect(), b"GET /stream/?count=4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head + b"\r\n"
    chunks = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]
    assert chunks == [f"line {i} of 4\n".encode() for i in range(4)]
    assert body == b"\r\n"  # no trailers, nothing after the last-chunk


def test_file_response_sends_the_whole_file(django_server, site):
    response = requests.get(django_server.url + "/download/blob.bin", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(BLOB_SIZE)
    assert response.headers["Content-Disposition"] == 'attachment; filename="blob.bin"'
    assert "Transfer-Encoding" not in response.headers
    assert response.content == site.blob

    # The response's close() reached the file: no worker keeps it open.
    blob = str(site.files / "blob.bin")

    def open_anywhere() -> bool:
        for pid in django_server.workers():
            fd_dir = Path(f"/proc/{pid}/fd")
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(fd_dir / fd) == blob:
                        return True
                except OSError:
                    continue
        return False

    assert wait_until(lambda: not open_anywhere(), timeout=5)


def test_file_response_head_and_keep_alive(django_server):
    """HEAD gets the length but no body, so the next response on the connection is intact."""
    sock = django_server.connect()
    reader = ResponseReader(sock)
    sock.sendall(
        b"HEAD /download/blob.bin HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /download/blob.bin HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /items.json HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    status, headers, body = reader.read(head_only=True)
    assert status == 200 and headers["content-length"] == str(BLOB_SIZE) and body == b""
    status, headers, body = reader.read()
    assert status == 200 and len(body) == BLOB_SIZE
    status, headers, body = reader.read()
    assert status == 200
    assert {"Teapot", "Kettle", "Mug"} <= {item["name"] for item in json.loads(body)["items"]}
    sock.close()


def test_not_found_pages(django_server):
    for path in ("/no/such/page", "/items/999999/", "/download/missing.bin", "/download/..%2Fdb.sqlite3"):
        response = requests.get(django_server.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "Not Found" in response.text


def test_view_exception_is_djangos_500_page_and_the_worker_lives_on(django_server):
    workers = set(django_server.workers())
    response = requests.get(django_server.url + "/broken/", timeout=10)
    assert response.status_code == 500
    assert "Server Error (500)" in response.text
    assert "fails on purpose" not in response.text  # DEBUG is off: no details leak
    assert requests.get(django_server.url + "/items.json", timeout=10).status_code == 200
    assert set(django_server.workers()) == workers


def test_missing_slash_redirects(django_server):
    response = requests.get(django_server.url + "/items/new?x=1", allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"] == "/items/new/?x=1"


def test_upload_after_100_continue(django_server):
    """curl's way of sending a large body: headers first, the body only after "100 Continue"."""
    body = os.urandom(50_000)
    boundary = b"forkserve-boundary"
    payload = (
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="c.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%s\r\n--%s--\r\n" % (boundary, body, boundary)
    )
    sock = django_server.connect()
    sock.sendall(
        b"POST /upload/ HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
        b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n"
        % (boundary, len(payload))
    )
    reader = ResponseReader(sock)
    status, _, _ = reader.read(head_only=True)
    assert status == 100
    sock.sendall(payload)
    status, _, answer = reader.read()
    assert status == 200
    assert json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
    sock.close()


def test_http10_client_gets_a_close_delimited_stream(django_server):
    data = http_exchange(django_server.connect(), b"GET /stream/?count=3 HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert body == b"line 0 of 3\nline 1 of 3\nline 2 of 3\n"


def test_percent_encoded_utf8_path_reaches_the_view(django_server):
    # PEP 3333: PATH_INFO carries the decoded bytes as latin-1; Django turns them back into UTF-8.
    response = requests.get(django_server.url + "/greet/caf%C3%A9%20cr%C3%A8me/", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"name": "café crème", "path": "/greet/café crème/", "method": "GET"}


def test_admin_redirects_to_its_login_page(django_server):
    response = requests.get(django_server.url + "/admin/", allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/login/?next=/admin/"
    login = requests.get(django_server.url + response.headers["Location"], timeout=10)
    assert login.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in login.text


def test_without_preload_each_worker_sets_django_up(django_server):
    info = requests.get(django_server.url + "/process/", timeout=10).json()
    assert info["ready_pid"] == info["pid"] != django_server.pid


def test_shared_server_log_has_no_errors(django_server):
    """Runs last in this module: nothing above made a worker log an error."""
    assert requests.get(django_server.url + "/", timeout=10).status_code == 200
    assert_clean_log(django_server)


# -- servers of their own --------------------------------------------------


def test_preload_sets_django_up_once_in_the_template(serve, tmp_path, migrated_template):
    site = Site(tmp_path, migrated_template)
    args = [
        "mysite.wsgi:application",
        "--preload",
        "--workers",
        "2",
        "--pythonpath",
        str(PROJECT),
        "--env",
        f"FORKSERVE_TEST_DB={site.db}",
    ]
    server = serve(*args, workers=2)
    info = requests.get(server.url + "/process/", timeout=10).json()
    # django.setup() ran once, before the fork, in the template process: not in the
    # master (which never imports the app) and not in the worker.
    template = info["ready_pid"]
    assert template not in (server.pid, info["pid"])
    assert Path(f"/proc/{template}/cmdline").read_bytes().startswith(b"forkserve: template [")
    assert info["pid"] in server.workers()
    assert info["pid"] != server.pid
    assert set(SEED_ITEMS) <= set(item_names(server))

    created = post_new_item(server.url, {"name": "Preloaded", "price": "1.50"})
    assert created.status_code == 302
    assert "Preloaded" in requests.get(server.url + created.headers["Location"], timeout=10).text
    assert "Preloaded" in item_names(server)
    assert_clean_log(server)


def test_django_passes_the_wsgi_validator(serve, tmp_path, migrated_template):
    """Django behind wsgiref.validate: any PEP 3333 slip on either side is a 500 and a traceback."""
    site = Site(tmp_path, migrated_template)
    server = serve("validated:django_app()", env=site.env)
    url = server.url
    page = requests.get(url + "/", timeout=10)
    assert page.status_code == 200 and "Teapot: 18.50" in page.text
    assert set(SEED_ITEMS) <= set(item_names(server))

    created = post_new_item(url, {"name": "Validated", "price": "3.00"})
    assert created.status_code == 302
    detail = requests.get(url + created.headers["Location"], timeout=10)
    assert '<h1 id="name">Validated</h1>' in detail.text
    assert requests.post(url + "/items/new/", data={"name": "x"}, timeout=10).status_code == 403

    data = os.urandom(200_000)
    uploaded = requests.post(url + "/upload/", files={"file": ("d.bin", data)}, timeout=10)
    assert uploaded.status_code == 200
    assert uploaded.json()["sha256"] == hashlib.sha256(data).hexdigest()

    streamed = requests.get(url + "/stream/?count=3", timeout=10)
    assert streamed.text == "line 0 of 3\nline 1 of 3\nline 2 of 3\n"

    download = requests.get(url + "/download/blob.bin", timeout=30)
    assert download.status_code == 200 and download.content == site.blob
    head = requests.head(url + "/download/blob.bin", timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(BLOB_SIZE)

    assert requests.get(url + "/greet/%C3%BC/", timeout=10).json()["name"] == "ü"
    assert requests.get(url + "/missing/", timeout=10).status_code == 404
    assert requests.get(url + "/admin/", allow_redirects=False, timeout=10).status_code == 302

    # One worker serves requests in turn, so this answer means every earlier
    # response was closed (where the validator checks close() was called).
    assert requests.get(url + "/process/", timeout=10).status_code == 200
    assert_clean_log(server)
