"""The command line: app loading, binds, flags and their errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import conftest
import pytest
import requests
from conftest import TESTS


def run_forkserve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run forkserve on port 0, expecting it to exit by itself (an error path)."""
    return conftest.run_forkserve(*args, "--bind", "127.0.0.1:0", timeout=timeout)


@pytest.mark.parametrize(
    ("spec", "body"),
    [
        ("loading", "default application"),
        ("loading:application", "default application"),
        ("loading:make_app()", "hello!"),
        ("loading:make_app('hi', punct='?')", "hi?"),
        ("basic", "Hello, world!"),  # falls back to `app`
    ],
)
def test_app_specs(serve, spec, body):
    server = serve(spec)
    assert requests.get(server.url + "/", timeout=10).text == body


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module:app", "no module named 'no_such_module'"),
        ("loading:missing", "has no attribute 'missing'"),
        ("loading:not_callable", "'not_callable' is int, not a WSGI callable"),
        ("raises_on_import:app", "this module cannot be imported, on purpose"),
        ("loading:failing_factory()", "factory refuses"),
        ("loading:make_app(__import__('os'))", "factory arguments must be literals"),
        ("loading:1+1", "is not a name or a call"),
    ],
)
def test_app_load_errors_exit_4_with_one_clear_line(spec, message):
    for extra in ([], ["--preload"]):
        result = run_forkserve(spec, "--workers", "2", *extra)
        assert result.returncode == 4, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_flag_names_the_nearest_one():
    result = run_forkserve("basic:app", "--wokers", "2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "forkserve: error: command line: unknown option --wokers (did you mean --workers?)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "many"], "workers: 'many' is not a whole number"),
        (["--log-level", "inf"], "did you mean info?"),
        (["--timeout", "-1"], "timeout: -1.0 must be at least 0"),
        (["--env", "NOEQUALS"], "'NOEQUALS' is not KEY=VALUE"),
    ],
)
def test_bad_values_give_one_line(args, message):
    result = run_forkserve("basic:app", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("127.0.0.1:99999", "port must be a number from 0 to 65535"),
        ("::1:80", "put an IPv6 address in brackets"),
        ("unix:", "unix: needs a path"),
        ("fd://", "fd:// needs a file descriptor number"),
        ("fd://web", "named sockets come from systemd socket activation"),
    ],
)
def test_bad_binds_fail_clearly(bind, message):
    result = conftest.run_forkserve("basic:app", "--bind", bind)
    assert result.returncode == 1
    assert message in result.stderr


def test_help_lists_every_setting():
    result = conftest.run_forkserve("--help")
    assert result.returncode == 0
    from forkserve import settings

    for entry in settings.registry():
        for flag in entry.spec.flags:
            assert flag in result.stdout
        if entry.spec.hook:
            assert not entry.spec.flags  # hooks come from config files only


def test_console_script_and_version():
    result = subprocess.run(["forkserve", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("forkserve 0.")


def test_ipv6_unix_and_several_binds(serve, tmp_path):
    sock_path = tmp_path / "app.sock"
    server = serve(
        "basic:app", "--bind", "127.0.0.1:0", "--bind", "[::1]:0", "--bind", f"unix:{sock_path}", listeners=3
    )
    urls = server.urls
    assert urls[0].startswith("http://127.0.0.1:") and not urls[0].endswith(":0")
    assert urls[1].startswith("http://[::1]:") and not urls[1].endswith(":0")
    assert urls[2] == f"unix:{sock_path}"
    for url in urls[:2]:
        assert requests.get(url + "/hello", timeout=10).text == "Hello, world!"
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(10)
    client.connect(str(sock_path))
    client.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b'"SERVER_NAME": "localhost"' in data
    server.stop()
    assert not sock_path.exists()  # removed at exit


def test_fd_bind_uses_an_inherited_socket(tmp_path):
    from conftest import Server

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    os.set_inheritable(fd, True)
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(TESTS / "apps")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "forkserve", "basic:app", "--bind", f"fd://{fd}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(fd,),
            env=env,
            start_new_session=True,
        )
    listener.close()
    try:
        from conftest import wait_until

        assert wait_until(lambda: "Booting worker" in log.read_text(), 15), log.read_text()
        assert f"Listening at: http://127.0.0.1:{port}" in log.read_text()
        assert requests.get(f"http://127.0.0.1:{port}/hello", timeout=10).text == "Hello, world!"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert Server  # the fixture class is importable for manual runs


def test_bind_conflict_exits_1(serve):
    server = serve("basic:app")
    host, port = server.address
    result = conftest.run_forkserve("basic:app", "--bind", f"{host}:{port}")
    assert result.returncode == 1
    assert "Address already in use" in result.stderr


def test_web_concurrency_sets_the_default_worker_count(serve):
    server = serve("basic:app", env={"WEB_CONCURRENCY": "3"}, workers=3)
    assert len(server.workers()) == 3


def test_chdir_pythonpath_and_env(serve, tmp_path):
    appdir = tmp_path / "site"
    appdir.mkdir()
    (appdir / "envapp.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [(os.environ['GREETING'] + ' ' + os.getcwd()).encode()]\n"
    )
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (libdir / "otherapp.py").write_text("from envapp import app\n")
    server = serve(
        "otherapp:app", "--chdir", str(appdir), "--pythonpath", str(libdir), "--env", "GREETING=hey"
    )
    assert requests.get(server.url + "/", timeout=10).text == f"hey {appdir}"


def test_boot_failure_stops_instead_of_respawning(tmp_path):
    result = run_forkserve("raises_on_import:app", "--workers", "3")
    assert result.returncode == 4
    assert result.stderr.count("Booting worker") == 0
    assert result.stderr.count("this module cannot be imported") <= 3


def test_path_exists_for_tests():
    assert Path(TESTS / "apps" / "basic.py").exists()


def test_readme_settings_tables_match_the_registry():
    from forkserve.settings import gunicorn_table, markdown_table

    readme = (TESTS.parent / "README.md").read_text()
    for marker, generated in (("settings", markdown_table()), ("gunicorn", gunicorn_table())):
        table = readme.split(f"<!-- {marker}:begin -->\n", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
        assert table == generated, "regenerate: python -m forkserve.settings --readme README.md"
