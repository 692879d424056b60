"""Gunicorn's logging settings, run for real: logger names, logconfig in its
three forms, syslog over UDP, --capture-output, and the warning for a
logging set-up that leaves nothing attached.

The expected lines were taken from Gunicorn 27 run with the same configs
(which files get which lines, and how often).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import LISTENING, TESTS, Server, run_forkserve, wait_until

WARNING = "forkserve: warning:"
GENERIC = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def start_logging_to(serve: Callable[..., Server], logfile: Path, *args: str) -> Server:
    """Start forkserve whose start-up lines go to ``logfile`` rather than its stderr."""
    server = serve(*args, ready=False)
    ready = wait_until(
        lambda: server.proc.poll() is not None or "Booting worker" in text(logfile),
        timeout=15,
    )
    assert ready and server.proc.poll() is None, f"not ready:\n{server.log()}\n{text(logfile)}"
    match = LISTENING.search(text(logfile))
    assert match, text(logfile)
    server.urls = [match.group(1)]
    return server


def write_conf(tmp_path: Path, dict_config: dict[str, object], extra: str = "") -> Path:
    config = tmp_path / "forkserve.conf.py"
    config.write_text(f"logconfig_dict = {dict_config!r}\n{extra}")
    return config


def gunicorn_dict(error_log: Path, access_log: Path) -> dict[str, object]:
    """A logconfig_dict as written for Gunicorn: only gunicorn.error and gunicorn.access."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"named": {"format": "%(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "error_file": {"class": "logging.FileHandler", "filename": str(error_log), "formatter": "named"},
            "access_file": {
                "class": "logging.FileHandler",
                "filename": str(access_log),
                "formatter": "named",
            },
        },
        "root": {"level": "WARNING", "handlers": []},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_file"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access_file"], "propagate": False},
        },
    }


def assert_routed(server: Server, error_log: Path, access_log: Path) -> None:
    """Start-up lines in the error file, access lines in the access file, nothing on stdio."""
    errors = text(error_log)
    assert "gunicorn.error INFO Starting forkserve" in errors
    assert "gunicorn.error INFO Booting worker with pid" in errors
    assert requests.get(server.url + "/hello?routed=1", timeout=10).ok
    assert wait_until(lambda: "/hello?routed=1" in text(access_log), 10), text(access_log)
    assert re.search(
        r'gunicorn\.access INFO 127\.0\.0\.1 .*"GET /hello\?routed=1 HTTP/1\.1" 200', text(access_log)
    )
    assert "/hello" not in text(error_log)
    # Our own stderr/stdout handlers were replaced by the config's, as under Gunicorn.
    log = server.log()
    assert "Listening at" not in log and "/hello" not in log and WARNING not in log


def test_gunicorn_logconfig_dict_routes_forkserve_lines(serve, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    config = write_conf(tmp_path, gunicorn_dict(error_log, access_log))
    server = start_logging_to(serve, error_log, "basic:app", "-c", str(config), "--access-logfile", "-")
    assert_routed(server, error_log, access_log)


def test_gunicorn_logconfig_json(serve, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(gunicorn_dict(error_log, access_log)))
    server = start_logging_to(
        serve, error_log, "basic:app", "--log-config-json", str(config), "--access-logfile", "-"
    )
    assert_routed(server, error_log, access_log)


def test_gunicorn_log_config_file(serve, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root,gerror,gaccess\n\n"
        "[handlers]\nkeys=error_file,access_file\n\n"
        "[formatters]\nkeys=named\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_gerror]\nlevel=INFO\nhandlers=error_file\nqualname=gunicorn.error\npropagate=0\n\n"
        "[logger_gaccess]\nlevel=INFO\nhandlers=access_file\nqualname=gunicorn.access\npropagate=0\n\n"
        # %(here)s is the config's folder, as Gunicorn passes it.
        "[handler_error_file]\nclass=FileHandler\nformatter=named\nargs=('%(here)s/error.log',)\n\n"
        "[handler_access_file]\nclass=FileHandler\nformatter=named\nargs=('%(here)s/access.log',)\n\n"
        "[formatter_named]\nformat=%(name)s %(levelname)s %(message)s\n"
    )
    server = start_logging_to(
        serve, error_log, "basic:app", "--log-config", str(ini), "--access-logfile", "-"
    )
    assert_routed(server, error_log, access_log)


def test_dict_that_sets_only_root_is_merged_into_gunicorns_defaults(serve, tmp_path):
    """Gunicorn's defaults still hand gunicorn.error to 'error_console' and gunicorn.access to
    'console', both propagating to root: an access line reaches root's 'console' twice."""
    root_log, err_log = tmp_path / "root.log", tmp_path / "err.log"
    file = {"class": "logging.FileHandler", "formatter": "generic"}
    config = write_conf(
        tmp_path,
        {
            "handlers": {
                "console": {**file, "filename": str(root_log)},
                "error_console": {**file, "filename": str(err_log)},
            },
            "root": {"level": "INFO", "handlers": ["console"]},
        },
    )
    server = start_logging_to(serve, err_log, "basic:app", "-c", str(config), "--access-logfile", "-")
    assert re.search(r"\[\d+\] \[INFO\] Starting forkserve", text(err_log))
    assert "Listening at" in text(root_log)  # propagated from gunicorn.error
    assert requests.get(server.url + "/hello?root=1", timeout=10).ok
    assert wait_until(lambda: text(root_log).count("/hello?root=1") == 2, 10), text(root_log)
    assert "/hello" not in text(err_log)
    assert "Listening at" not in server.log()


def test_dict_that_sets_only_root_level_logs_to_stderr_and_stdout(tmp_path):
    """{'root': ...} with Gunicorn's handler names: error lines on stderr and, via root, stdout."""
    config = write_conf(tmp_path, {"root": {"level": "INFO", "handlers": ["console"]}})
    result = run_forkserve("basic:app", "-c", str(config), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "[INFO] Config OK: app basic:app loads" in result.stderr
    assert "[INFO] Config OK: app basic:app loads" in result.stdout
    assert WARNING not in result.stderr


def test_a_config_for_forkserve_loggers_is_applied_as_given(serve, tmp_path):
    logfile = tmp_path / "mine.log"
    config = write_conf(
        tmp_path,
        {
            "version": 1,
            "formatters": {"named": {"format": "%(name)s %(message)s"}},
            "handlers": {
                "file": {"class": "logging.FileHandler", "filename": str(logfile), "formatter": "named"}
            },
            "loggers": {"forkserve": {"handlers": ["file"], "level": "INFO"}},
        },
    )
    server = start_logging_to(serve, logfile, "basic:app", "-c", str(config), "--access-logfile", "-")
    assert "forkserve.error Starting forkserve" in text(logfile)
    assert requests.get(server.url + "/hello?mine=1", timeout=10).ok
    assert wait_until(lambda: "forkserve.access 127.0.0.1" in text(logfile), 10), text(logfile)
    assert "gunicorn" not in text(logfile)


def test_reload_keeps_one_copy_of_each_line(serve, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    config = write_conf(tmp_path, gunicorn_dict(error_log, access_log))
    server = start_logging_to(serve, error_log, "basic:app", "-c", str(config), "--access-logfile", "-")
    server.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "Reload complete" in text(error_log), 20), text(error_log)
    assert requests.get(server.url + "/hello?after-reload=1", timeout=10).ok
    assert wait_until(lambda: "after-reload" in text(access_log), 10)
    assert wait_until(lambda: text(error_log).count("Reload complete") == 1, 2)
    assert text(access_log).count("after-reload") == 1


def test_a_bad_gunicorn_dict_is_a_usage_error_with_the_reason(tmp_path):
    """Like Gunicorn: own handlers replace the defaults, whose loggers then miss theirs."""
    config = write_conf(
        tmp_path,
        {
            "handlers": {"f": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["f"]},
        },
    )
    result = run_forkserve("basic:app", "-c", str(config), "--check-config")
    assert result.returncode == 2
    assert "logconfig_dict: Unable to configure logger 'gunicorn." in result.stderr
    assert "'console' and 'error_console'" in result.stderr


def test_missing_log_config_json_is_a_usage_error(tmp_path):
    result = run_forkserve("basic:app", "--log-config-json", str(tmp_path / "nope.json"), "--check-config")
    assert result.returncode == 2
    assert "logconfig_json: cannot read" in result.stderr


def test_warns_when_the_config_attaches_nothing(tmp_path):
    silent = {"handlers": [], "propagate": False}
    config = write_conf(tmp_path, {"loggers": {"gunicorn.error": silent, "gunicorn.access": silent}})
    result = run_forkserve("basic:app", "-c", str(config), "--check-config")
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert (
        "forkserve: warning: the logging config attaches no handler to forkserve.error or"
        " gunicorn.error; nothing will be logged"
    ) in lines
    assert any("no access line will be written" in line for line in lines)
    assert "Config OK" not in result.stderr + result.stdout


def test_warns_when_access_lines_are_filtered_out(tmp_path):
    config = write_conf(tmp_path, {"loggers": {"gunicorn.access": {"level": "WARNING"}}})
    result = run_forkserve("basic:app", "-c", str(config), "--access-logfile", "-", "--check-config")
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 1 and "no access line will be written" in warnings[0]


def test_no_warning_for_the_plain_set_up(tmp_path):
    result = run_forkserve("basic:app", "--access-logfile", "-", "--check-config")
    assert result.returncode == 0
    assert "Config OK" in result.stderr and WARNING not in result.stderr


@pytest.fixture
def syslog_server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    yield sock
    sock.close()


def receive_until(
    sock: socket.socket, predicate: Callable[[list[str]], bool], timeout: float = 10
) -> list[str]:
    received: list[str] = []

    def more() -> bool:
        try:
            while True:
                received.append(sock.recv(65536).decode("utf-8", "replace"))
        except TimeoutError:
            pass
        return predicate(received)

    wait_until(more, timeout, interval=0)
    return received


def test_syslog_over_udp_gets_error_and_access_lines(serve, syslog_server):
    port = syslog_server.getsockname()[1]
    server = serve(
        "basic:app",
        "--log-syslog",
        "--log-syslog-to",
        f"udp://127.0.0.1:{port}",
        "--log-syslog-prefix",
        "shop",
        "--access-logfile",
        "-",
    )
    requests.get(server.url + "/hello?syslog=1", timeout=10)
    lines = receive_until(syslog_server, lambda got: any("syslog=1" in line for line in got))
    # <14> is facility user (1) * 8 + info (6); SysLogHandler ends each message with NUL.
    assert any(re.match(r"<14>forkserve\.shop\.error: \[\d+\] Booting worker", line) for line in lines), lines
    access = [line for line in lines if "syslog=1" in line]
    assert re.match(r'<14>forkserve\.shop\.access: \[\d+\] 127\.0\.0\.1 .*"GET /hello\?syslog=1', access[0])
    assert access[0].endswith("\x00")
    # Syslog comes on top of the usual streams.
    assert server.wait_for_log(r"/hello\?syslog=1")


def test_syslog_facility_and_access_kept_out(serve, syslog_server):
    port = syslog_server.getsockname()[1]
    server = serve(
        "basic:app",
        "--log-syslog",
        "--log-syslog-to",
        f"udp://127.0.0.1:{port}",
        "--log-syslog-facility",
        "local0",
        "--disable-redirect-access-to-syslog",
        "--access-logfile",
        "-",
    )
    requests.get(server.url + "/hello?kept-out=1", timeout=10)
    assert server.wait_for_log(r"/hello\?kept-out=1")
    server.send_signal(signal.SIGUSR1)  # logs one more error line, after the access line
    lines = receive_until(syslog_server, lambda got: any("reopening log files" in line for line in got))
    # local0 (16) * 8 + info (6); the prefix defaults to the app.
    assert any(line.startswith("<134>forkserve.basic.app.error: [") for line in lines), lines
    assert any("reopening log files" in line for line in lines)
    assert not any("kept-out" in line for line in lines)


def test_bad_syslog_address_is_a_usage_error():
    result = run_forkserve(
        "basic:app", "--log-syslog", "--log-syslog-to", "udp://host:http", "--check-config"
    )
    assert result.returncode == 2
    assert "syslog_addr: 'http' is not a port number" in result.stderr


def test_capture_output_sends_prints_to_the_error_log(serve, tmp_path):
    error_log = tmp_path / "error.log"
    server = start_logging_to(
        serve, error_log, "printing:app", "--error-logfile", str(error_log), "--capture-output"
    )
    assert wait_until(lambda: "printing app imported" in text(error_log), 10)
    assert requests.get(server.url + "/?m=41", timeout=10).text == "printed\n"
    assert wait_until(lambda: "app stderr m=41" in text(error_log), 10), text(error_log)
    assert "app stdout m=41" in text(error_log)
    assert "printing app imported" not in server.log() and "m=41" not in server.log()


def test_capture_output_follows_a_rotated_error_log(serve, tmp_path):
    error_log = tmp_path / "error.log"
    server = start_logging_to(
        serve, error_log, "printing:app", "--error-logfile", str(error_log), "--capture-output"
    )
    requests.get(server.url + "/?m=before", timeout=10)
    assert wait_until(lambda: "app stdout m=before" in text(error_log), 10)
    rotated = tmp_path / "error.log.1"
    error_log.rename(rotated)
    server.send_signal(signal.SIGUSR1)
    assert wait_until(lambda: "reopening log files" in text(rotated), 10)  # said before reopening
    # The worker reopens on its own SIGUSR1; poll until its prints follow.
    assert wait_until(
        lambda: (
            requests.get(server.url + "/?m=after", timeout=10).ok and "app stdout m=after" in text(error_log)
        ),
        10,
        interval=0.2,
    ), text(error_log)
    assert "m=after" not in text(rotated)


def test_without_an_error_log_file_capture_output_leaves_stdio_alone(serve):
    server = serve("printing:app", "--capture-output")
    requests.get(server.url + "/?m=stdio", timeout=10)
    assert server.wait_for_log("app stdout m=stdio") and server.wait_for_log("app stderr m=stdio")


def test_a_logconfig_alone_turns_access_lines_on(serve, tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    config = write_conf(tmp_path, gunicorn_dict(error_log, access_log))
    server = start_logging_to(serve, error_log, "basic:app", "-c", str(config))
    assert requests.get(server.url + "/hello?alone=1", timeout=10).ok
    assert wait_until(lambda: "alone=1" in text(access_log), 5)


@contextlib.contextmanager
def daemon(tmp_path: Path, *args: str) -> Iterator[tuple[Path, str]]:
    """printing:app under --daemon, its stdio a file: yields (that file, the server's URL)."""
    stdio, pidfile, error_log = tmp_path / "stdio.log", tmp_path / "d.pid", tmp_path / "error.log"
    argv = ["printing:app", "--daemon", "--pid", str(pidfile), "--error-logfile", str(error_log)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS / "apps"), os.environ.get("PYTHONPATH", "")]),
    }
    with open(stdio, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "forkserve", *argv, "--bind", "127.0.0.1:0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        assert launcher.wait(30) == 0, text(stdio)
        assert wait_until(lambda: text(pidfile).strip() and "Booting worker" in text(error_log), 15)
        match = LISTENING.search(text(error_log))
        assert match, text(error_log)
        yield stdio, match.group(1)
    finally:
        if text(pidfile).strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(text(pidfile)), signal.SIGTERM)
            assert wait_until(lambda: not pidfile.exists(), 20)


def test_daemon_sends_stdio_to_dev_null(tmp_path):
    with daemon(tmp_path) as (stdio, url):
        assert requests.get(url + "/?m=daemon", timeout=10).ok  # printed before it answered
        assert "m=daemon" not in text(stdio) and "printing app imported" not in text(stdio)


def test_enable_stdio_inheritance_keeps_stdio_under_daemon(tmp_path):
    with daemon(tmp_path, "--enable-stdio-inheritance") as (stdio, url):
        assert requests.get(url + "/?m=inherited", timeout=10).ok
        assert "app stdout m=inherited" in text(stdio)


def test_capture_output_under_daemon(tmp_path):
    with daemon(tmp_path, "--capture-output") as (_, url):
        assert requests.get(url + "/?m=captured", timeout=10).ok
        assert "app stdout m=captured" in text(tmp_path / "error.log")


def test_a_bad_logging_config_on_reload_keeps_the_server(serve, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text("workers = 1\n")
    server = serve("basic:app", "-c", str(config))
    write_conf(tmp_path, {"handlers": {"f": {"class": "logging.StreamHandler"}}, "root": {"handlers": ["f"]}})
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log(
        "Reload failed, keeping the running workers: logconfig_dict: Unable to configure"
    )
    assert server.proc.poll() is None
    assert requests.get(server.url + "/hello", timeout=10).ok
