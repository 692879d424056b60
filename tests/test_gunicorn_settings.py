"""Gunicorn 27's settings in forkserve: every one known, and each new behaviour on a real server.

Values that are hard to observe are checked with --print-config (the same
merge the server runs); everything else with a running forkserve.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gunicorn.config
import pytest
import requests
from certs import Certs, make_certs
from conftest import TESTS, ResponseReader, Server, run_forkserve, wait_until

from forkserve import settings

APP = "settings_probe:app"
ANSWER = re.compile(
    r"(\w+) = (.*)  # (.*) \| (implemented|accepted, not needed: .+|refused unless default: .+)"
)


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str, str]]:
    """--print-config output as {name: (value, source, answer)}; every line must parse."""
    assert result.returncode == 0, result.stderr
    values = {}
    for line in result.stdout.splitlines():
        match = ANSWER.fullmatch(line)
        assert match, line
        values[match.group(1)] = (match.group(2), match.group(3), match.group(4))
    return values


def config_values(tmp_path: Path, text: str, *args: str) -> dict[str, tuple[str, str, str]]:
    config = tmp_path / "conf.py"
    config.write_text(text)
    return printed(run_forkserve(APP, "-c", str(config), "--print-config", *args, cwd=tmp_path))


def get_json(server: Server, path: str, headers: dict[str, str] | None = None) -> dict:
    response = requests.get(server.url + path, headers=headers or {}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def serve_as_configured(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Like ``serve`` but adds no --bind: the config file (or env) must bind port 0 itself."""
    started: list[Server] = []

    def start(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, workers: int = 1):
        server = Server(list(args), cwd or tmp_path, tmp_path / f"configured{len(started)}.log", env)
        started.append(server)
        server.wait_ready(workers=workers)
        return server

    yield start
    leftovers = [pid for server in started for pid in server.shutdown()]
    assert not leftovers, f"forkserve processes survived the test: {leftovers}"


# -- 1. the registry ---------------------------------------------------------


def test_registry_holds_every_gunicorn_setting_and_flag():
    ours = {entry.name: entry for entry in settings.registry()}
    theirs = {s.name: s for s in gunicorn.config.KNOWN_SETTINGS}
    assert sorted(set(theirs) - set(ours)) == []
    missing_flags = {
        name: sorted(set(s.cli or ()) - set(ours[name].spec.flags))
        for name, s in theirs.items()
        if set(s.cli or ()) - set(ours[name].spec.flags)
    }
    assert missing_flags == {}


def test_print_config_gives_every_setting_one_answer():
    values = printed(run_forkserve(APP, "--print-config"))
    assert set(values) == {entry.name for entry in settings.registry()}
    assert values["workers"][2] == "implemented"
    assert values["worker_tmp_dir"][2].startswith("accepted, not needed: ")
    assert values["http_protocols"][2].startswith("refused unless default: ")
    assert "HTTP/1.1" in values["http_protocols"][2]


# -- 2. Python config files read as Gunicorn reads them --------------------


def test_helpers_imports_logger_and_obsolete_names_are_ignored_silently(serve, tmp_path):
    config = tmp_path / "gunicorn_style.py"
    config.write_text(
        "import logging\n"
        "import multiprocessing\n"
        "from os.path import join\n"
        "logger = logging.getLogger(__name__)\n"
        "cores = multiprocessing.cpu_count()\n"
        "helper_dir = join('/tmp', 'x')\n"
        "x_forwarded_for_header = 'X-FORWARDED-FOR'\n"
        "workers = 1\n"
    )
    server = serve(APP, "-c", str(config))
    assert requests.get(server.url + "/osenv/HOME", timeout=10).status_code == 200
    assert "is not a setting" not in server.log()
    assert "x_forwarded_for_header" not in server.log()


def test_misspelt_settings_warn_with_the_right_name_and_the_server_starts(serve, tmp_path):
    config = tmp_path / "typos.py"
    config.write_text("keep_alive = 10\npreload = True\naccess_logfile = '-'\n")
    server = serve(APP, "-c", str(config))
    log = server.log()
    for wrong, right in (
        ("keep_alive", "keepalive"),
        ("preload", "preload_app"),
        ("access_logfile", "accesslog"),
    ):
        lines = [line for line in log.splitlines() if f"'{wrong}' is not a setting" in line]
        assert len(lines) == 1, log
        assert f"did you mean {right}?" in lines[0]
    assert requests.get(server.url + "/", timeout=10).status_code == 200


def test_hooks_under_if_redefined_and_aliased_all_run(serve, tmp_path):
    marks = tmp_path / "marks"
    config = tmp_path / "hooks.py"
    config.write_text(
        "import os\n"
        "from settings_probe import mark_worker_init\n"
        f"MARKS = {str(marks)!r}\n"
        "def _mark(text):\n"
        "    with open(MARKS, 'a') as f:\n"
        "        f.write(text + '\\n')\n"
        "if os.environ.get('PROBE_MARKS'):\n"
        "    def on_starting(server):\n"
        "        _mark('on_starting')\n"
        "def when_ready(server):\n"
        "    _mark('when_ready first')\n"
        "def when_ready(server):\n"
        "    _mark('when_ready second')\n"
        "def record_fork(server, worker):\n"
        "    _mark('post_fork')\n"
        "post_fork = record_fork\n"
        "post_worker_init = mark_worker_init\n"
    )
    serve(APP, "-c", str(config), env={"PROBE_MARKS": str(marks)})
    assert wait_until(lambda: marks.exists() and "post_worker_init" in marks.read_text(), 10)
    assert wait_until(lambda: "when_ready" in marks.read_text(), 10)
    lines = [
        line.split()[0] if line.startswith("post_worker_init") else line
        for line in marks.read_text().splitlines()
    ]
    assert sorted(lines) == sorted(["on_starting", "when_ready second", "post_fork", "post_worker_init"])


def test_string_values_are_coerced_on_a_running_server(serve_as_configured, tmp_path):
    config = tmp_path / "strings.py"
    config.write_text('workers = "2"\nraw_env = "FOO=bar"\nbind = "127.0.0.1:0"\nuser = None\n')
    server = serve_as_configured(APP, "-c", str(config), workers=2)
    assert wait_until(lambda: len(server.workers()) == 2, 10)
    assert server.address[0] == "127.0.0.1"
    assert requests.get(server.url + "/osenv/FOO", timeout=10).text == "bar"


def test_bind_as_a_list(serve_as_configured, tmp_path):
    config = tmp_path / "listbind.py"
    config.write_text('bind = ["127.0.0.1:0"]\n')
    server = serve_as_configured(APP, "-c", str(config))
    assert requests.get(server.url + "/osenv/FOO", timeout=10).text == "<unset>"


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ('timeout = "60"\n', "timeout", "60.0"),
        ('preload_app = "true"\n', "preload_app", "True"),
        ("user = None\n", "user", "''"),
        ('raw_env = "FOO=bar"\n', "raw_env", "('FOO=bar',)"),
        ('bind = "127.0.0.1:0"\n', "bind", "('127.0.0.1:0',)"),
        ('bind = ["127.0.0.1:0"]\n', "bind", "('127.0.0.1:0',)"),
        ('umask = "007"\n', "umask", "7"),
        ("umask = 0o007\n", "umask", "7"),
        ("cert_reqs = 0\n", "cert_reqs", "'none'"),
        ("cert_reqs = 2\n", "cert_reqs", "'required'"),
        ("proxy_protocol = True\n", "proxy_protocol", "'auto'"),
        ('worker_class = "gunicorn.workers.sync.SyncWorker"\n', "worker_class", "'sync'"),
        ('worker_class = "egg:gunicorn#gthread"\n', "worker_class", "'gthread'"),
    ],
)
def test_values_are_coerced_as_gunicorn_coerces_them(tmp_path, text, name, value):
    assert config_values(tmp_path, text)[name][0] == value


# -- 3. where the config file comes from -----------------------------------


def test_python_module_config(tmp_path):
    package = tmp_path / "deploy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gconf.py").write_text("workers = 3\nkeepalive = 4\n")
    values = printed(run_forkserve(APP, "-c", "python:deploy.gconf", "--print-config", cwd=tmp_path))
    assert values["workers"][:2] == ("3", "config file python:deploy.gconf")
    assert values["keepalive"][0] == "4.0"


def test_gunicorn_conf_py_is_read_by_default_and_forkserve_conf_py_wins(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\n")
    values = printed(run_forkserve(APP, "--print-config", cwd=tmp_path))
    assert values["workers"][:2] == ("3", "config file gunicorn.conf.py")
    (tmp_path / "forkserve.conf.py").write_text("workers = 4\n")
    values = printed(run_forkserve(APP, "--print-config", cwd=tmp_path))
    assert values["workers"][:2] == ("4", "config file forkserve.conf.py")


# -- 4. GUNICORN_CMD_ARGS ----------------------------------------------------


def test_gunicorn_cmd_args_then_forkserve_cmd_args_then_command_line(tmp_path):
    env = {"GUNICORN_CMD_ARGS": "--workers=2 --timeout=50 --keep-alive=7"}
    values = printed(run_forkserve(APP, "--print-config", cwd=tmp_path, env=env))
    assert values["workers"][:2] == ("2", "GUNICORN_CMD_ARGS")
    env["FORKSERVE_CMD_ARGS"] = "--workers=3 --timeout=40"
    values = printed(run_forkserve(APP, "--print-config", cwd=tmp_path, env=env))
    assert values["workers"][:2] == ("3", "FORKSERVE_CMD_ARGS")
    assert values["keepalive"][:2] == ("7.0", "GUNICORN_CMD_ARGS")
    values = printed(run_forkserve(APP, "--print-config", "--workers", "1", cwd=tmp_path, env=env))
    assert values["workers"][:2] == ("1", "command line")
    assert values["timeout"][:2] == ("40.0", "FORKSERVE_CMD_ARGS")


def test_gunicorn_cmd_args_reach_the_running_server(serve):
    server = serve(APP, env={"GUNICORN_CMD_ARGS": "--workers=2"}, workers=2)
    assert wait_until(lambda: len(server.workers()) == 2, 10)


# -- 5. refused and not-needed settings ------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('http_protocols = "h2,h1"\n', "http_protocols: 'h2,h1' is not supported: forkserve speaks HTTP/1.1"),
        ('worker_class = "uvicorn.workers.UvicornWorker"\n', "is an ASGI worker; forkserve serves WSGI apps"),
        ('worker_class = "tornado"\n', "worker_class: 'tornado' is not one of sync, gthread, gevent"),
        ('asgi_loop = "uvloop"\n', "asgi_loop: 'uvloop' is not supported: forkserve serves WSGI apps"),
        ("dirty_workers = 2\n", "dirty_workers: 2 is not supported: forkserve has no dirty arbiters"),
        ("permit_obsolete_folding = True\n", "permit_obsolete_folding: True is not supported"),
    ],
)
def test_refused_settings_stop_with_one_line(tmp_path, text, reason):
    config = tmp_path / "refused.py"
    config.write_text(text)
    result = run_forkserve(APP, "-c", str(config), "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


def test_not_needed_settings_start_and_say_so_once(serve, tmp_path):
    config = tmp_path / "extras.py"
    config.write_text('worker_tmp_dir = "/dev/shm"\ntmp_upload_dir = "/tmp/uploads"\n')
    server = serve(APP, "-c", str(config), "--do-handshake-on-connect")
    log = server.log()
    for name, value in (
        ("worker_tmp_dir", "'/dev/shm'"),
        ("tmp_upload_dir", "'/tmp/uploads'"),
        ("do_handshake_on_connect", "True"),
    ):
        lines = [
            line for line in log.splitlines() if f"{name} = {value} changes nothing in forkserve" in line
        ]
        assert len(lines) == 1, log
    assert requests.get(server.url + "/", timeout=10).status_code == 200


# -- 6. unix sockets and the proxy's user ----------------------------------


NOBODY_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied")
    raise SystemExit
s.sendall(b"GET /osenv/FOO HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\\r\\n")[0].decode())
"""


def as_nobody(path: Path) -> str:
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    result = subprocess.run(
        [python, "-c", NOBODY_CLIENT, str(path)],
        # Its own group too: with user= alone the child would keep root's groups.
        user="nobody",
        group=pwd.getpwnam("nobody").pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")
@pytest.mark.parametrize(
    ("umask", "mode", "answer"), [(None, 0o777, "HTTP/1.1 200 OK"), ("007", 0o770, "denied")]
)
def test_unix_socket_reachable_by_a_proxy_running_as_another_user(serve, shared_dir, umask, mode, answer):
    path = shared_dir / "app.sock"
    extra = ["--umask", umask] if umask else []
    serve(APP, "--bind", f"unix:{path}", *extra)
    assert path.stat().st_mode & 0o777 == mode
    assert as_nobody(path) == answer


# -- 7. wsgi_app and paste -------------------------------------------------


def test_wsgi_app_in_the_config_file(serve, tmp_path):
    config = tmp_path / "app.py"
    config.write_text('wsgi_app = "basic:app"\n')
    server = serve("-c", str(config))
    assert "Serving app: basic:app" in server.log()
    assert requests.get(server.url + "/hello", timeout=10).text == "Hello, world!"


def test_paste_ini_with_globals(serve, tmp_path):
    (tmp_path / "app.ini").write_text("[app:main]\nuse = call:settings_probe:factory\ngreeting = hi\n")
    (tmp_path / "paste.py").write_text('paste = "app.ini"\n')
    server = serve("-c", "paste.py", "--paste-global", "REGION=eu-west", cwd=tmp_path)
    answer = get_json(server, "/")
    assert answer["local"] == {"greeting": "hi"}
    assert answer["global"]["REGION"] == "eu-west"
    assert answer["global"]["here"] == str(tmp_path)


# -- 8. worker_connections ---------------------------------------------------


def test_worker_connections_holds_back_the_next_connection(serve):
    server = serve(APP, "--workers", "1", "--worker-connections", "2", "--keep-alive", "30")
    request = b"GET /osenv/FOO HTTP/1.1\r\nHost: x\r\n\r\n"
    with contextlib.ExitStack() as sockets:
        held = []
        for _ in range(2):
            sock = sockets.enter_context(server.connect())
            sock.sendall(request)
            status, _, body = ResponseReader(sock).read()
            assert (status, body) == (200, b"<unset>")
            held.append(sock)
        third = sockets.enter_context(server.connect())
        third.sendall(request)
        third.settimeout(1.0)
        with pytest.raises(TimeoutError):
            third.recv(1)  # the worker holds two connections: the third waits in the backlog
        held[0].close()
        third.settimeout(10)
        status, _, body = ResponseReader(third).read()
        assert (status, body) == (200, b"<unset>")


# -- 9. proxies ----------------------------------------------------------------


def test_default_secure_scheme_headers_from_a_trusted_peer(serve):
    server = serve(APP)
    assert get_json(server, "/")["wsgi.url_scheme"] == "http"
    for header, value in (
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Protocol", "ssl"),
    ):
        assert get_json(server, "/", {header: value})["wsgi.url_scheme"] == "https", header


def test_custom_secure_scheme_headers_replace_the_default(serve, tmp_path):
    config = tmp_path / "scheme.py"
    config.write_text('secure_scheme_headers = {"X-SCHEME": "https"}\n')
    server = serve(APP, "-c", str(config))
    assert get_json(server, "/", {"X-Scheme": "https"})["wsgi.url_scheme"] == "https"
    assert get_json(server, "/", {"X-Scheme": "http"})["wsgi.url_scheme"] == "http"
    assert get_json(server, "/", {"X-Forwarded-Ssl": "on"})["wsgi.url_scheme"] == "http"


def test_untrusted_peer_changes_nothing(serve):
    server = serve(APP, "--forwarded-allow-ips", "10.9.9.9")
    for header, value in (("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on")):
        assert get_json(server, "/", {header: value})["wsgi.url_scheme"] == "http", header
    answer = get_json(server, "/prefix/page", {"SCRIPT_NAME": "/prefix"})
    assert (answer["SCRIPT_NAME"], answer["PATH_INFO"]) == ("", "/prefix/page")


def test_forwarder_headers_from_a_trusted_peer(serve):
    server = serve(APP)
    answer = get_json(server, "/prefix/page", {"SCRIPT_NAME": "/prefix"})
    assert (answer["SCRIPT_NAME"], answer["PATH_INFO"]) == ("/prefix", "/page")


def test_header_map_drop_and_refuse(serve):
    dropping = serve(APP)
    answer = get_json(dropping, "/", {"X_Api_Key": "forged", "X-Other": "kept"})
    assert answer["HTTP_X_OTHER"] == "kept"
    assert not [key for key, value in answer.items() if "API" in key or value == "forged"]
    refusing = serve(APP, "--header-map", "refuse")
    response = requests.get(refusing.url + "/", headers={"X_Api_Key": "forged"}, timeout=10)
    assert response.status_code == 400
    assert requests.get(refusing.url + "/", headers={"X-Api-Key": "fine"}, timeout=10).status_code == 200


def test_root_path(serve):
    server = serve(APP, "--root-path", "/api")
    answer = get_json(server, "/api/items/1")
    assert (answer["SCRIPT_NAME"], answer["PATH_INFO"]) == ("/api", "/items/1")


PROXY_LINE = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"
PLAIN_GET = b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def test_proxy_protocol_flag_alone_means_auto(serve):
    server = serve(APP, "--proxy-protocol")
    sock = server.connect()
    sock.sendall(PROXY_LINE + PLAIN_GET)
    status, _, body = ResponseReader(sock).read()
    sock.close()
    assert status == 200
    assert json.loads(body)["REMOTE_ADDR"] == "203.0.113.7"


def test_proxy_protocol_from_a_peer_not_allowed_is_refused(serve):
    server = serve(APP, "--proxy-protocol", "--proxy-allow-from", "10.9.9.9")
    sock = server.connect()
    sock.sendall(PROXY_LINE + PLAIN_GET)
    status, _, _ = ResponseReader(sock).read()
    sock.close()
    assert status == 400
    # Without the PROXY line the same peer is served as a direct client.
    sock = server.connect()
    sock.sendall(PLAIN_GET)
    status, _, body = ResponseReader(sock).read()
    sock.close()
    assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "127.0.0.1"


# -- 10. reuse_port ------------------------------------------------------------


def test_reuse_port_lets_a_second_server_share_the_port(serve, tmp_path):
    first = serve(APP, "--reuse-port")
    port = first.address[1]
    second = serve(APP, "--reuse-port", "--bind", f"127.0.0.1:{port}")
    assert second.address == first.address
    assert requests.get(second.url + "/osenv/FOO", timeout=10).status_code == 200
    first.stop()
    assert requests.get(second.url + "/osenv/FOO", timeout=10).status_code == 200
    third = run_forkserve(APP, "--bind", f"127.0.0.1:{port}", cwd=tmp_path)
    assert third.returncode == 1, third.stderr


# -- 11. sendfile and spew -------------------------------------------------------


def test_no_sendfile_still_sends_the_whole_file(serve, tmp_path):
    data = os.urandom(1024 * 1024 + 123)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    server = serve("basic:app", "--no-sendfile")
    response = requests.get(server.url + "/file", headers={"X-File": str(path)}, timeout=30)
    assert response.status_code == 200
    assert len(response.content) == len(data)
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(data).digest()


def test_spew_traces_the_app_source(serve):
    server = serve(APP, "--spew")
    assert requests.get(server.url + "/osenv/FOO", timeout=30).text == "<unset>"
    source = str(TESTS / "apps" / "settings_probe.py")
    assert server.wait_for_log(re.escape(f"{source}:") + r"\d+: .*os\.environ\.get")


# -- 12. the ssl_context hook --------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_ssl_context_hook_sets_tls13_only(serve, tmp_path, certs):
    config = tmp_path / "tls.py"
    config.write_text(
        "import ssl\n"
        f"certfile = {str(certs.cert)!r}\n"
        f"keyfile = {str(certs.key)!r}\n"
        "def ssl_context(config, default_ssl_context_factory):\n"
        "    context = default_ssl_context_factory()\n"
        "    context.minimum_version = ssl.TLSVersion.TLSv1_3\n"
        "    return context\n"
    )
    server = serve(APP, "-c", str(config))

    def handshake(version: ssl.TLSVersion) -> str:
        client = ssl.create_default_context(cafile=str(certs.ca))
        client.minimum_version = client.maximum_version = version
        with server.connect() as raw, client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(PLAIN_GET)
            status, _, _ = ResponseReader(tls).read()
            return f"{tls.version()} {status}"

    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3 200"
    with pytest.raises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_2)


def test_ssl_context_hook_returning_something_else_stops(tmp_path, certs):
    config = tmp_path / "tls.py"
    config.write_text(
        f"certfile = {str(certs.cert)!r}\n"
        f"keyfile = {str(certs.key)!r}\n"
        "def ssl_context(config, default_ssl_context_factory):\n"
        "    return 'not a context'\n"
    )
    result = run_forkserve(APP, "-c", str(config), "--bind", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "ssl_context" in line]
    assert len(lines) == 1 and "ssl_context hook returned str, not an ssl.SSLContext" in lines[0], (
        result.stderr
    )


def test_nworkers_changed_runs_from_none_at_start_and_debug_logs_each_request(serve, tmp_path):
    marks = tmp_path / "marks"
    config = tmp_path / "conf.py"
    config.write_text(
        "workers = 2\nloglevel = 'debug'\n"
        "def nworkers_changed(server, new, old):\n"
        f"    open({str(marks)!r}, 'a').write(f'{{old}}->{{new}}\\n')\n"
    )
    server = serve(APP, "-c", str(config), workers=2)
    assert marks.read_text().splitlines()[0] == "None->2"  # as Gunicorn, before on_starting
    assert requests.get(server.url + "/some/where?x=1", timeout=10).status_code == 200
    # Gunicorn's default pre_request hook: method and path at debug level.
    assert server.wait_for_log(r"\[DEBUG\] GET /some/where")


@pytest.mark.parametrize("name", ["limit_request_line", "limit_request_field_size", "limit_request_fields"])
def test_a_zero_limit_means_unlimited_as_in_gunicorn(serve, tmp_path, name):
    config = tmp_path / "conf.py"
    config.write_text(f"{name} = 0\n")
    server = serve(APP, "-c", str(config))
    long = "x" * 9000  # past Gunicorn's and forkserve's default line and field limits
    path, headers = "/", {}
    if name == "limit_request_line":
        path += long
    elif name == "limit_request_field_size":
        headers = {"X-Long": long}
    else:
        headers = {f"X-Field-{n}": "1" for n in range(150)}  # past the default 100 fields
    response = requests.get(server.url + path, headers=headers, timeout=10)
    assert response.status_code == 200


def test_a_config_that_patches_with_gevent_needs_the_gevent_worker(tmp_path):
    config = tmp_path / "conf.py"
    config.write_text("from gevent import monkey\nmonkey.patch_all()\nworkers = 1\n")
    result = run_forkserve(APP, "-c", str(config), "--bind", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "forkserve: error: worker_class: 'sync', but the config file ran gevent's monkey.patch_all(): "
        "set worker_class = 'gevent'"
    ]
