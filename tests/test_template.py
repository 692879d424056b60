"""--preload through a template process: the master never imports the app, and HUP loads new code."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import children_of, run_forkserve, wait_until
from traffic import Traffic

APP_SOURCE = """
import os
with open(os.environ["IMPORT_MARKS"], "a") as marks:
    marks.write(f"{{os.getpid()}}\\n")
{extra}
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{answer} " + str(os.getpid()).encode()]
"""


def write_app(folder: Path, answer: str, extra: str = "") -> None:
    path = folder / "tpl_app.py"
    path.write_text(APP_SOURCE.format(answer=answer, extra=extra))
    stamp = time.time() + 2  # a newer mtime than any cached bytecode
    os.utime(path, (stamp, stamp))


def answer(server) -> str:
    return requests.get(server.url + "/", timeout=10).text.split()[0]


def start(serve, tmp_path: Path, *extra: str):
    marks = tmp_path / "marks"
    env = {"IMPORT_MARKS": str(marks), "PYTHONDONTWRITEBYTECODE": "1"}
    server = serve(
        "tpl_app:app",
        "--preload",
        "--workers",
        "2",
        "--pythonpath",
        str(tmp_path),
        *extra,
        env=env,
        workers=2,
    )
    # Handed over from the template's short-lived intermediate: children of the master soon after.
    assert wait_until(lambda: len(server.workers()) == 2, 10)
    return server, marks


def template_of(server) -> list[int]:
    titles = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children_of(server.pid)}
    return [pid for pid, title in titles.items() if title.startswith(b"forkserve: template")]


def test_the_app_is_imported_once_in_a_template_never_in_the_master(serve, tmp_path):
    write_app(tmp_path, "one")
    server, marks = start(serve, tmp_path)
    assert answer(server) == "one"
    imported = [int(pid) for pid in marks.read_text().split()]
    templates = template_of(server)
    assert imported == templates and len(templates) == 1  # once, in the template
    assert server.pid not in imported
    for worker in server.workers():  # forked by the template, handed to the master
        assert Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(server.pid)


def test_hup_with_preload_loads_the_new_code_in_a_new_template(serve, tmp_path):
    write_app(tmp_path, "one")
    server, marks = start(serve, tmp_path)
    old_workers, old_template = set(server.workers()), template_of(server)
    write_app(tmp_path, "two")
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload complete", timeout=20)
    assert wait_until(lambda: not old_workers & set(server.workers()), 15)
    assert {answer(server) for _ in range(6)} == {"two"}
    assert wait_until(lambda: template_of(server) and template_of(server) != old_template, 10)
    assert len(template_of(server)) == 1  # the old template left
    assert server.pid not in [int(pid) for pid in marks.read_text().split()]


def test_a_template_that_cannot_import_changes_nothing(serve, tmp_path):
    write_app(tmp_path, "one")
    server, _ = start(serve, tmp_path)
    old_workers = set(server.workers())
    write_app(tmp_path, "two", extra="raise RuntimeError('broken deploy')")
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload failed, keeping the old workers: the new template failed", timeout=20)
    assert set(server.workers()) == old_workers
    assert {answer(server) for _ in range(6)} == {"one"}
    write_app(tmp_path, "three")  # fixed: the next HUP goes through
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload complete", timeout=20)
    assert wait_until(lambda: answer(server) == "three", 10)


def test_a_template_that_cannot_import_at_start_stops_with_exit_code_4(tmp_path):
    write_app(tmp_path, "one", extra="raise ImportError('no such thing')")
    env = {"IMPORT_MARKS": str(tmp_path / "marks")}
    result = run_forkserve(
        "tpl_app:app", "--preload", "--pythonpath", str(tmp_path), "--bind", "127.0.0.1:0", env=env
    )
    assert result.returncode == 4
    assert "failed to import the app" in result.stderr


@pytest.mark.parametrize("mode", ["all", "chain"])
def test_hup_with_preload_under_traffic_loses_nothing(serve, tmp_path, mode):
    write_app(tmp_path, "one")
    server, _ = start(serve, tmp_path, "--reload-mode", mode)
    before = set(server.workers())
    with Traffic(server.url) as traffic:
        traffic.wait_for(200)
        write_app(tmp_path, "two")
        server.send_signal(signal.SIGHUP)
        assert server.wait_for_log("Reload complete", timeout=30)
        assert wait_until(lambda: len(server.workers()) == 2 and not before & set(server.workers()), 20)
        traffic.wait_for(200)
    assert traffic.failures == []
    assert answer(server) == "two"
