"""Settings from config files, FORKSERVE_CMD_ARGS and flags; logs and their formats."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import TESTS, run_forkserve, wait_until

REPO = TESTS.parent
CONF = REPO / "conf"


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """--print-config output as {name: (value, source)}; each line ends with forkserve's answer."""
    assert result.returncode == 0, result.stderr
    values = {}
    answer = r"implemented|accepted, not needed: .*|refused .*"
    for line in result.stdout.splitlines():
        match = re.fullmatch(rf"(\w+) = (.*)  # (.*) \| ({answer})", line)
        assert match, line
        values[match.group(1)] = (match.group(2), match.group(3))
    return values


def test_precedence_defaults_file_env_flags(tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text("workers = 2\ntimeout = 11\nkeepalive = 7\nloglevel = 'warning'\n")
    env = {"FORKSERVE_CMD_ARGS": "--timeout 12 --keep-alive 8"}
    values = printed(run_forkserve("basic:app", "--print-config", "--keep-alive", "9", cwd=tmp_path, env=env))
    assert values["workers"] == ("2", "config file forkserve.conf.py")
    assert values["timeout"] == ("12.0", "FORKSERVE_CMD_ARGS")
    assert values["keepalive"] == ("9.0", "command line")
    assert values["loglevel"] == ("'warning'", "config file forkserve.conf.py")
    assert values["graceful_timeout"] == ("30.0", "default")
    assert values["app"] == ("'basic:app'", "command line")


def test_toml_config(tmp_path):
    config = tmp_path / "forkserve.toml"
    config.write_text(
        '[forkserve]\nworkers = 3\nbind = ["127.0.0.1:0"]\nforwarded_allow_ips = "10.0.0.0/8,::1"\n'
    )
    values = printed(run_forkserve("basic:app", "-c", str(config), "--print-config"))
    assert values["workers"][0] == "3"
    assert values["forwarded_allow_ips"][0] == "('10.0.0.0/8', '::1')"


def test_toml_cannot_set_hooks(tmp_path):
    config = tmp_path / "x.toml"
    config.write_text('on_starting = "x"\n')
    result = run_forkserve("basic:app", "-c", str(config), "--print-config")
    assert result.returncode == 2
    assert "hook 'on_starting' can only be set in a Python config file" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("worker_class = 'tornado'\n", "worker_class: 'tornado' is not one of sync, gthread, gevent"),
        ("timeout = 'soon'\n", "timeout: 'soon' is not a number"),
        ("backlog = [1]\n", "backlog: [1] is not a whole number"),
        ("reload_extra_files = 8000\n", "reload_extra_files: 8000 is not a list of strings"),
        ("forwarded_allow_ips = '10.0.0.300'\n", "'10.0.0.300' is not an IP address or CIDR range"),
        ("raise RuntimeError('boom')\n", "running it raised RuntimeError('boom')"),
    ],
)
def test_bad_config_files_give_one_line(tmp_path, text, message):
    config = tmp_path / "bad.conf.py"
    config.write_text(text)
    result = run_forkserve("basic:app", "-c", str(config), "--bind", "127.0.0.1:0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_missing_config_file():
    result = run_forkserve("basic:app", "-c", "/nonexistent/forkserve.conf.py")
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_gunicorn_config_runs_unchanged(serve, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    marks = tmp_path / "marks"
    config.write_text(
        "import multiprocessing\n"
        "import os\n"
        "bind = '127.0.0.1:0'\n"
        "workers = 2\n"
        "worker_class = 'sync'\n"
        "timeout = 20\n"
        "graceful_timeout = 10\n"
        "keepalive = 2\n"
        "max_requests = 1000\n"
        "max_requests_jitter = 50\n"
        "loglevel = 'info'\n"
        "accesslog = '-'\n"
        "access_log_format = '%(h)s %(r)s %(s)s %({x-test}i)s'\n"
        "errorlog = '-'\n"
        "proc_name = 'gunicorn-app'\n"
        "preload_app = False\n"
        "limit_request_line = 4094\n"
        "limit_request_fields = 100\n"
        "limit_request_field_size = 8190\n"
        "raw_env = ['FROM_CONFIG=yes']\n"
        f"MARKS = {str(marks)!r}\n"
        "def post_fork(server, worker):\n"
        "    with open(MARKS, 'a') as f:\n"
        "        f.write(f'post_fork {worker.pid}\\n')\n"
    )
    server = serve("basic:app", "-c", str(config), workers=2)
    response = requests.get(server.url + "/environ", headers={"X-Test": "marker-7"}, timeout=10)
    assert response.ok
    assert server.wait_for_log(r"127\.0\.0\.1 GET /environ HTTP/1\.1 200 marker-7")
    assert wait_until(lambda: marks.exists() and marks.read_text().count("post_fork") == 2, 10)
    title = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert title.startswith(b"forkserve: master [gunicorn-app]")


def test_example_config_from_conf_folder_checks(tmp_path):
    """conf/forkserve.conf.py is valid: every name is a setting of the right type."""
    project = tmp_path / "srv"
    project.mkdir()
    (project / "myproject").mkdir()
    (project / "myproject" / "__init__.py").write_text("")
    shutil.copy(TESTS / "apps" / "basic.py", project / "myproject" / "wsgi.py")
    (project / "myproject" / "wsgi.py").write_text(
        (project / "myproject" / "wsgi.py").read_text() + "\napplication = app\n"
    )
    result = run_forkserve(
        "-c",
        str(CONF / "forkserve.conf.py"),
        "--chdir",
        str(project),
        "--check-config",
        "--access-logfile",
        str(tmp_path / "access.log"),
    )
    assert result.returncode == 0, result.stderr
    assert "Config OK: app myproject.wsgi:application loads" in result.stderr


def test_check_config_reports_a_broken_app():
    result = run_forkserve("loading:missing", "--check-config")
    assert result.returncode == 4
    assert "has no attribute 'missing'" in result.stderr


def test_sighup_rereads_the_config_file(serve, tmp_path):
    config = tmp_path / "forkserve.conf.py"
    config.write_text("workers = 1\n")
    server = serve("basic:app", "-c", str(config))
    config.write_text("workers = 3\n")
    server.send_signal(1)  # SIGHUP
    assert server.wait_for_log("Reload complete: 3 new workers serving", timeout=20)
    assert wait_until(lambda: len(server.workers()) == 3, 10)
    config.write_text("workers = 'lots'\n")
    server.send_signal(1)
    assert server.wait_for_log("Reload failed, keeping the running workers: workers: 'lots'", timeout=10)
    assert len(server.workers()) == 3


def test_access_log_json_and_control_characters(serve):
    server = serve("basic:app", "--access-logfile", "-", "--access-log-format", "json")
    # A percent-encoded newline becomes a real one in PATH_INFO; obs-text may hold C1 controls.
    requests.get(server.url + "/hello%0aforged?q=1", headers={"User-Agent": "agent\x85x"}, timeout=10)
    assert server.wait_for_log(r'"U": "/hello')
    line = next(line for line in server.log().splitlines() if '"U": "/hello' in line)
    record = json.loads(line)
    assert record["s"] == 404 and record["m"] == "GET" and record["q"] == "q=1"
    assert record["U"] == "/hello\\x0aforged"
    assert record["a"] == "agent\\x85x"
    assert isinstance(record["D"], int)


def test_default_access_log_is_combined_plus_time(serve):
    server = serve("basic:app", "--access-logfile", "-")
    requests.get(server.url + "/hello", headers={"Referer": "http://ref/", "User-Agent": "ua/1"}, timeout=10)
    pattern = (
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /hello HTTP/1\.1" 200 13 '
        r'"http://ref/" "ua/1" \d+'
    )
    assert server.wait_for_log(pattern)


def test_log_config_dict_takes_over(serve, tmp_path):
    logfile = tmp_path / "custom.log"
    config = tmp_path / "logging.conf.py"
    config.write_text(
        "logconfig_dict = {\n"
        "  'version': 1,\n"
        "  'formatters': {'plain': {'format': 'CUSTOM %(name)s %(message)s'}},\n"
        "  'handlers': {'file': {'class': 'logging.FileHandler',\n"
        f"                       'filename': {str(logfile)!r}, 'formatter': 'plain'}}}},\n"
        "  'loggers': {'forkserve.error': {'handlers': ['file'], 'level': 'INFO'},\n"
        "              'forkserve.access': {'handlers': ['file'], 'level': 'INFO'}},\n"
        "}\n"
    )
    server = serve("basic:app", "-c", str(config), "--access-logfile", "-", ready=False)
    assert wait_until(lambda: logfile.exists() and "Listening at:" in logfile.read_text(), 15)
    assert "CUSTOM forkserve.error Starting forkserve" in logfile.read_text()
    server.urls = [re.search(r"Listening at: (\S+)", logfile.read_text()).group(1)]
    assert wait_until(lambda: "Booting worker" in logfile.read_text(), 10)
    requests.get(server.url + "/hello", timeout=10)
    assert wait_until(lambda: "CUSTOM forkserve.access" in logfile.read_text(), 10)


def test_daemon_mode_detaches_and_stops_on_sigterm(tmp_path):
    pidfile = tmp_path / "d.pid"
    errlog = tmp_path / "error.log"
    result = run_forkserve(
        "basic:app",
        "--daemon",
        "--pid",
        str(pidfile),
        "--error-logfile",
        str(errlog),
        "--bind",
        "127.0.0.1:0",
    )
    assert result.returncode == 0
    assert wait_until(lambda: pidfile.exists() and "Booting worker" in errlog.read_text(), 15)
    pid = int(pidfile.read_text())
    url = re.search(r"Listening at: (\S+)", errlog.read_text()).group(1)
    assert requests.get(url + "/hello", timeout=10).text == "Hello, world!"
    assert os.getsid(pid) != os.getsid(0)  # its own session, away from our terminal
    os.kill(pid, 15)
    assert wait_until(lambda: not pidfile.exists(), 20)
    assert "Shutting down" in errlog.read_text()


def test_log_config_file_takes_over(serve, tmp_path):
    logfile = tmp_path / "ini.log"
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root,error\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_error]\nlevel=INFO\nhandlers=file\nqualname=forkserve.error\npropagate=0\n\n"
        f"[handler_file]\nclass=FileHandler\nformatter=plain\nargs=({str(logfile)!r},)\n\n"
        "[formatter_plain]\nformat=INI %(levelname)s %(message)s\n"
    )
    server = serve("basic:app", "--log-config", str(ini), ready=False)
    assert wait_until(lambda: logfile.exists() and "INI INFO Booting worker" in logfile.read_text(), 15)
    assert server.proc.poll() is None
