"""--reload-mode chain: HUP replaces the workers one at a time, never more than workers + 1 processes."""

from __future__ import annotations

import os
import re
import signal

import requests
from conftest import wait_until
from traffic import PoolSampler, Traffic

STEP = re.compile(
    r"Reload \(chain\): worker (\d+) is ready; retiring old worker (\d+) \((\d+) of (\d+) replaced\)"
)


def test_chain_reload_under_traffic_replaces_one_at_a_time(serve):
    server = serve("supervised:app", "--workers", "3", "--reload-mode", "chain", workers=3)
    assert wait_until(lambda: len(server.workers()) == 3, 10)
    before = set(server.workers())
    with Traffic(server.url) as traffic:
        traffic.wait_for(200)
        with PoolSampler(server) as sampler:
            server.send_signal(signal.SIGHUP)
            assert server.wait_for_log("Reload complete: 3 new workers serving", timeout=30), server.log()
            assert wait_until(lambda: len(server.workers()) == 3 and not before & set(server.workers()), 20)
        traffic.wait_for(200)
    after = set(server.workers())
    log = server.log()
    assert traffic.failures == []
    assert sampler.counts, "the sampler never ran"
    assert max(sampler.counts) <= 4, f"the pool held {max(sampler.counts)} processes during the reload"
    assert 4 in sampler.counts, "the sampler never saw the new worker beside the old ones"
    assert len(after) == 3 and not before & after
    steps = STEP.findall(log)
    assert [(k, n) for _, _, k, n in steps] == [("1", "3"), ("2", "3"), ("3", "3")], log
    assert {int(new) for new, _, _, _ in steps} == after
    assert {int(old) for _, old, _, _ in steps} == before
    # The reload finished after its last step, and every new worker answered requests.
    assert log.index("Reload complete") > log.rindex("Reload (chain)")
    assert {int(pid) for pid in traffic.pids} & after
    assert server.proc.poll() is None


def _versioned_app(version: str) -> str:
    return (
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        f"    return [b'{version}']\n"
    )


def test_chain_reload_with_broken_code_keeps_serving(serve, tmp_path):
    app_file = tmp_path / "chain_changing.py"
    app_file.write_text(_versioned_app("one"))
    server = serve(
        "chain_changing:app",
        "--workers",
        "3",
        "--reload-mode",
        "chain",
        "--pythonpath",
        str(tmp_path),
        workers=3,
    )
    assert wait_until(lambda: len(server.workers()) == 3, 10)
    old = set(server.workers())
    with Traffic(server.url, path="/") as traffic:
        traffic.wait_for(200)
        app_file.write_text("def app(:\n")  # a syntax error in the new code
        with PoolSampler(server) as sampler:
            server.send_signal(signal.SIGHUP)
            assert server.wait_for_log("Reload failed, keeping the old workers", timeout=30), server.log()
            assert wait_until(lambda: set(server.workers()) == old, 15), (old, server.workers())
        traffic.wait_for(200)
    assert traffic.failures == []
    assert traffic.pids == {"one"}
    assert max(sampler.counts) <= 4
    assert not STEP.search(server.log()), "no old worker should be retired for a new one that never booted"
    assert "Reload complete" not in server.log()
    assert requests.get(server.url + "/", timeout=10).text == "one"
    # Fixed code: the next chain reload goes through.
    app_file.write_text(_versioned_app("two"))
    stat = app_file.stat()  # same size as "one": move the mtime so no stale bytecode is used
    os.utime(app_file, (stat.st_atime + 2, stat.st_mtime + 2))
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload complete: 3 new workers serving", timeout=30), server.log()
    assert len(STEP.findall(server.log())) == 3
    assert wait_until(lambda: len(server.workers()) == 3 and not old & set(server.workers()), 20)
    assert requests.get(server.url + "/", timeout=10).text == "two"
    assert server.proc.poll() is None
