"""The container image and the Kubernetes manifests in conf/.

No container runtime or cluster here, so: the manifests are validated
against the Kubernetes schema (kubernetes-validate, offline, bundled
schemas), their numbers are checked against the config file the image
bakes in (read by forkserve's own loader), the Dockerfile is parsed for
what it promises, and its entry point is run the way a container would run
it: with the image's environment, as its non-root user, as PID 1 of fresh
PID and network namespaces, probed, scraped, and stopped with SIGTERM.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from conftest import children_of, wait_until

import forkserve.control
from forkserve.cli import load_settings
from forkserve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
MANIFESTS = CONF / "kubernetes"
DOCKERFILE = CONF / "Dockerfile"
CONTAINER_CONFIG = CONF / "forkserve.container.conf.py"
# A version kubernetes-validate bundles schemas for; pinned so that a newer
# release of the validator does not silently change what "valid" means.
KUBERNETES_VERSION = "1.32.0"
MINOR = KUBERNETES_VERSION.rsplit(".", 1)[0]


# -- the Dockerfile ------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuations joined, comments and directives dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def only(keyword: str) -> str:
    found = [args for name, args in dockerfile() if name == keyword]
    assert len(found) == 1, f"expected one {keyword} in conf/Dockerfile, found {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    """A JSON array of strings (exec form), else an assertion error: the shell form runs /bin/sh -c."""
    try:
        argv = json.loads(args)
    except ValueError:
        argv = None
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), (
        f"not exec form (a JSON array of strings): {args}"
    )
    return argv


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in dockerfile():
        if name == "ENV":
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {args}: use the KEY=VALUE form"
                env[key] = value
    return env


def copies() -> dict[str, Path]:
    """Image path -> the file of this repository that COPY puts there (build context: the repo root)."""
    found = {}
    for name, args in dockerfile():
        if name == "COPY":
            *sources, target = [word for word in shlex.split(args) if not word.startswith("--")]
            assert len(sources) == 1, f"COPY {args}"
            found[target] = ROOT / sources[0]
    return found


def image_user() -> tuple[int, int]:
    user, _, group = only("USER").partition(":")
    assert user.isdigit() and group.isdigit(), (
        f"USER {user}:{group}: Kubernetes verifies runAsNonRoot only against numeric ids"
    )
    return int(user), int(group)


def healthcheck() -> list[str]:
    options, found, command = only("HEALTHCHECK").partition("CMD ")
    assert found, "HEALTHCHECK without CMD"
    assert "--interval" in options
    return exec_form(command)


def test_dockerfile_runs_forkserve_as_pid_1_as_a_non_root_user():
    instructions = dockerfile()
    assert instructions[0][0] == "FROM" and re.fullmatch(r"python:3\.1\d+-slim", instructions[0][1])
    entrypoint = exec_form(only("ENTRYPOINT"))
    assert entrypoint[0] == "forkserve", "forkserve itself must be PID 1, no shell or init in front"
    assert not {"sh", "bash", "/bin/sh", "tini", "dumb-init", "exec"} & set(entrypoint)
    config = entrypoint[entrypoint.index("-c") + 1]
    assert copies()[config] == CONTAINER_CONFIG
    assert exec_form(only("CMD")) == ["forkserve.demo:app"]  # an app to replace; the demo until then
    assert only("STOPSIGNAL") == "SIGTERM"
    uid, gid = image_user()
    assert uid >= 1000 and gid >= 1000
    keywords = [name for name, _ in instructions]
    # Files are root's, written before USER: the server's user cannot rewrite its own code.
    assert not {"RUN", "COPY", "ADD"} & set(keywords[keywords.index("USER") :])
    assert any(f"--uid {uid} --gid {gid}" in args for name, args in instructions if name == "RUN")


def test_dockerfile_exposes_the_config_ports_and_checks_health_without_curl():
    config = container_settings()
    assert set(only("EXPOSE").split()) == {str(port_of(config.binds[0])), str(port_of(config.metrics_bind))}
    check = healthcheck()
    assert check[0] == "python" and check[1] == "-c"  # in the image already: no curl, no wget
    assert f"http://127.0.0.1:{port_of(config.binds[0])}{config.health_path}" in check[2]
    env = image_env()
    uid, gid = image_user()
    made = f"install -d -o {uid} -g {gid} -m 0700 {env['XDG_RUNTIME_DIR']}"  # for the control socket
    assert any(made in args for name, args in dockerfile() if name == "RUN")
    assert "WEB_CONCURRENCY" not in env  # the Deployment (or docker run -e) decides


# -- the manifests -------------------------------------------------------------


@functools.cache
def manifests() -> dict[str, dict[str, Any]]:
    """Every object in conf/kubernetes/*.yaml by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, f"two {document['kind']} objects"
            found[document["kind"]] = document
    return found


def validate(document: dict[str, Any]) -> None:
    import kubernetes_validate  # from the test extras: pip install -e .[test]

    # It falls back to the nearest older schemas it has; make sure it had these.
    assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == MINOR


def test_manifests_are_valid_kubernetes_objects():
    objects = manifests()
    assert set(objects) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for document in objects.values():
        validate(document)  # strict: an unknown (misspelt) field is an error too


def test_the_validator_catches_what_it_is_here_to_catch():
    import kubernetes_validate

    misspelt = copy.deepcopy(manifests()["Deployment"])
    probe = container(misspelt)["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        validate(misspelt)
    mistyped = copy.deepcopy(manifests()["Deployment"])
    mistyped["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "40s"
    with pytest.raises(kubernetes_validate.ValidationError, match="integer"):
        validate(mistyped)


def pod_spec(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    return (deployment or manifests()["Deployment"])["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    (only_container,) = pod_spec(deployment)["containers"]
    return only_container  # type: ignore[no-any-return]


def container_port(name_or_number: str | int) -> int:
    for port in container()["ports"]:
        if name_or_number in (port["name"], port["containerPort"]):
            return int(port["containerPort"])
    raise AssertionError(f"no container port {name_or_number!r}")


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def web_concurrency() -> str:
    """What the downward API puts in WEB_CONCURRENCY: the CPU limit over the divisor, rounded up."""
    (entry,) = [e for e in container()["env"] if e["name"] == "WEB_CONCURRENCY"]
    field = entry["valueFrom"]["resourceFieldRef"]
    assert (field["resource"], field["containerName"]) == ("limits.cpu", container()["name"])
    limit = container()["resources"]["limits"]["cpu"]
    return str(math.ceil(cpus(limit) / cpus(field.get("divisor", "1"))))


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def container_settings() -> Settings:
    """The container's config file through forkserve's own loader, with no outside env leaking in."""
    with mock.patch.dict(os.environ):
        for name in ("GUNICORN_CMD_ARGS", "FORKSERVE_CMD_ARGS", "WEB_CONCURRENCY", "PORT"):
            os.environ.pop(name, None)
        return load_settings(["-c", str(CONTAINER_CONFIG)]).config


def workers_given(web_concurrency: str) -> int:
    """How many workers the container's config starts with this WEB_CONCURRENCY (read at start)."""
    with mock.patch.dict(os.environ, {"WEB_CONCURRENCY": web_concurrency}):
        return container_settings().worker_count


def test_deployment_numbers_follow_the_container_config():
    config = container_settings()
    spec, main = pod_spec(), container()
    stop = config.shutdown_delay + config.graceful_timeout
    grace = spec["terminationGracePeriodSeconds"]
    assert stop < grace <= stop + 10, "grace period: shutdown delay + graceful timeout + a margin"
    assert "lifecycle" not in main, "no preStop: --shutdown-delay does its job"
    assert "command" not in main and "args" not in main  # the image's ENTRYPOINT: forkserve as PID 1
    assert config.shutdown_delay > 0 and config.health_path

    ready, live = main["readinessProbe"], main["livenessProbe"]
    for probe in (ready, live):
        assert probe["httpGet"]["path"] == config.health_path
        assert container_port(probe["httpGet"]["port"]) == port_of(config.binds[0])
    # Readiness sees a stopping pod's 503 before the delay is over ...
    assert ready["periodSeconds"] * ready["failureThreshold"] < config.shutdown_delay
    # ... liveness is slower than forkserve's own cure for a stuck worker and
    # than a whole graceful stop, so it never restarts a server that is fine.
    patience = live["periodSeconds"] * live["failureThreshold"]
    assert patience > config.timeout and patience > stop
    assert (
        live["periodSeconds"] > ready["periodSeconds"] and live["timeoutSeconds"] >= ready["timeoutSeconds"]
    )

    for address in config.binds:  # the kubelet probes the pod's address, not loopback
        assert address.rsplit(":", 1)[0] in ("0.0.0.0", "[::]")
    assert container_port("http") == port_of(config.binds[0])
    assert container_port("metrics") == port_of(config.metrics_bind)
    annotations = manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port_of(config.metrics_bind))
    assert annotations["prometheus.io/path"] == "/metrics"


def test_web_concurrency_comes_from_the_cpu_limit():
    concurrency = web_concurrency()
    assert concurrency == "2"
    assert container_settings().workers == 0  # the config file leaves the count to WEB_CONCURRENCY ...
    assert workers_given(concurrency) == 2
    assert workers_given("3") == 3  # ... whatever the limit is


def test_the_pod_runs_non_root_on_a_read_only_root_with_a_runtime_dir(monkeypatch):
    spec, main = pod_spec(), container()
    uid, gid = image_user()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (uid, gid)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The one place forkserve writes, the control socket, is a mounted volume.
    config = container_settings()
    assert not config.control_socket and not config.control_socket_disable
    runtime = image_env()["XDG_RUNTIME_DIR"]
    mounts = {mount["mountPath"]: mount["name"] for mount in main["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[runtime]]
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(ROOT))  # any directory that exists, as the volume does
    assert Path(forkserve.control.default_path()).parent == ROOT


def test_service_budget_and_autoscaler_point_at_the_deployment():
    objects = manifests()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = objects["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert container_port(port["targetPort"]) == port_of(container_settings().binds[0])  # not metrics

    budget = objects["PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = objects["HorizontalPodAutoscaler"]
    assert (
        budget["spec"]["maxUnavailable"] < autoscaler["spec"]["minReplicas"] <= deployment["spec"]["replicas"]
    )

    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["type"] == "Pods"
    (rule,) = adapter_rules()
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert 0 < cpus(metric["pods"]["target"]["averageValue"]) < 1  # a ratio of busy workers


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load((MANIFESTS / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]  # type: ignore[no-any-return]


# -- the image's entry point, run as the container runs it ----------------------


def needed_tools() -> None:
    missing = [tool for tool in ("unshare", "setpriv", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"needs {', '.join(missing)} (Debian: util-linux, iproute2; see tests/install.sh)")
    if os.geteuid() != 0:
        pytest.fail("needs root: it makes PID and network namespaces and drops to the image's user")


PYTHON_CHECK = "import sys, forkserve; assert sys.version_info >= (3, 11)"


def interpreter(uid: int, gid: int) -> str:
    """A Python 3.11+ the image's user may run (this one may live in a home only root can enter)."""
    candidates = [sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [
                *as_user(uid, gid),
                candidate,
                "-c",
                "import sys, forkserve; assert sys.version_info >= (3, 11)",
            ],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
            cwd="/",
            capture_output=True,
            timeout=30,
        )
        if probe.returncode == 0:
            return candidate
    pytest.fail(f"no Python 3.11+ that uid {uid} may run among {candidates} (forkserve needs one)")


def as_user(uid: int, gid: int) -> list[str]:
    # --no-new-privs: the Deployment's allowPrivilegeEscalation: false.
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs"]


def in_image(argv: list[str], python: str, paths: dict[str, str]) -> list[str]:
    """An image command line on this machine: the same program, the image's paths mapped here."""
    program = {"forkserve": [python, "-m", "forkserve"], "python": [python]}[argv[0]]
    return program + [paths.get(arg, arg) for arg in argv[1:]]


FETCH = textwrap.dedent(
    """
    import json, sys, urllib.error, urllib.request
    try:
        answer = urllib.request.urlopen(sys.argv[1], timeout=5)
    except urllib.error.HTTPError as error:
        answer = error
    print(json.dumps([answer.status, answer.read().decode()]))
    """
)


class Pod:
    """The running entry point: PID 1 of its own PID and network namespaces."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        log: Path,
        env: dict[str, str],
        paths: dict[str, str],
        runtime: Path,
    ) -> None:
        self.proc, self.log_path, self.master = proc, log, 0
        self.env, self.paths, self.runtime = env, paths, runtime  # the container's, mapped to this machine

    def log(self) -> str:
        return self.log_path.read_text()

    def enter(self, *argv: str, user: list[str] | None = None, env: dict[str, str] | None = None) -> Any:
        """Run a command in the pod's network namespace (as the kubelet's probe or `docker exec` would)."""
        command = ["nsenter", f"--target={self.master}", "--net", *(user or []), *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=20, env=env, cwd="/")

    def get(self, port: int, path: str) -> tuple[int, str]:
        done = self.enter(sys.executable, "-c", FETCH, f"http://127.0.0.1:{port}{path}")
        assert done.returncode == 0, done.stderr
        status, body = json.loads(done.stdout)
        return status, body


@contextmanager
def image_running(uid: int, gid: int, python: str) -> Iterator[Pod]:
    """The image's ENTRYPOINT and CMD with its ENV, as its USER, PID 1 of new PID and net namespaces."""
    scratch = Path(tempfile.mkdtemp(prefix="forkserve-image-"))
    proc = None
    try:
        runtime, workdir = scratch / "run-forkserve", scratch / "srv-app"
        runtime.mkdir(mode=0o700)
        os.chown(runtime, uid, gid)  # as `install -d -o 10001 -g 10001 -m 0700` made it
        workdir.mkdir()
        scratch.chmod(0o755)
        image = image_env()
        paths = {path: str(source) for path, source in copies().items()}
        paths[image["XDG_RUNTIME_DIR"]] = str(runtime)
        # The environment a container starts with: the base image's PATH and
        # LANG, the Dockerfile's ENV, the Deployment's WEB_CONCURRENCY; nothing
        # from this machine. PYTHONPATH stands in for the image's pip install.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
        env |= {key: paths.get(value, value) for key, value in image.items()}
        env |= {"WEB_CONCURRENCY": web_concurrency(), "PYTHONPATH": str(ROOT)}
        argv = in_image(exec_form(only("ENTRYPOINT")) + exec_form(only("CMD")), python, paths)
        log_path = scratch / "pod.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                ["unshare", "--net", "--pid", "--fork", "--mount-proc", *as_user(uid, gid), *argv],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        yield Pod(proc, log_path, env, paths, runtime)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        shutil.rmtree(scratch, ignore_errors=True)


def test_the_image_entry_point_serves_as_pid_1_and_stops_within_the_grace_period():
    needed_tools()
    uid, gid = image_user()
    python = interpreter(uid, gid)
    config = container_settings()
    port, metrics_port = port_of(config.binds[0]), port_of(config.metrics_bind)
    grace = pod_spec()["terminationGracePeriodSeconds"]
    workers = int(web_concurrency())
    with image_running(uid, gid, python) as pod:
        proc, env, paths, runtime = pod.proc, pod.env, pod.paths, pod.runtime
        assert wait_until(lambda: pod.log().count("Booting worker") == workers, 20), pod.log()
        assert wait_until(lambda: "Metrics at:" in pod.log(), 5), pod.log()
        (pod.master,) = children_of(proc.pid)
        status = Path(f"/proc/{pod.master}/status").read_text()
        assert re.search(r"^NSpid:.*\s1$", status, re.M), "forkserve is not PID 1 of its namespace"
        assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), "not the image's user"
        assert len(children_of(pod.master)) == workers
        log = pod.log()
        assert f"Listening at: http://0.0.0.0:{port} (pid 1)" in log
        assert f"Metrics at: http://0.0.0.0:{metrics_port}/metrics" in log
        assert "[WARNING]" not in log and "[ERROR]" not in log, log  # the control socket had its directory

        assert pod.enter("ip", "link", "set", "lo", "up").returncode == 0  # a fresh netns starts down
        status_code, body = pod.get(port, "/")
        assert status_code == 200 and "forkserve is running" in body  # the image's CMD: the demo app
        assert pod.get(port, config.health_path) == (200, "OK\n")
        docker_check = in_image(healthcheck(), python, paths)
        assert pod.enter(*docker_check, user=as_user(uid, gid), env=env).returncode == 0

        # What the HPA's adapter rule divides: busy and idle workers, per pod.
        status_code, page = pod.get(metrics_port, "/metrics")
        counts = dict(re.findall(r'^forkserve_workers\{state="(\w+)"\} (\d+)$', page, re.M))
        (rule,) = adapter_rules()
        assert rule["seriesQuery"].startswith("forkserve_workers{")
        for state in re.findall(r'state=~?"([\w|]+)"', rule["metricsQuery"]):
            assert set(state.split("|")) <= set(counts), (state, counts)
        assert int(counts["busy"]) + int(counts["idle"]) == workers

        ctl = pod.enter(
            *in_image(["forkserve", "ctl", "status"], python, paths), user=as_user(uid, gid), env=env
        )
        assert ctl.returncode == 0, ctl.stderr
        assert "master 1 (" in ctl.stdout and f"workers {workers} ({workers} wanted)" in ctl.stdout
        assert (runtime / forkserve.control.DEFAULT_NAME).is_socket()

        # kubectl delete pod: SIGTERM to PID 1, SIGKILL after the grace period.
        signalled = time.monotonic()
        os.kill(pod.master, signal.SIGTERM)
        assert wait_until(lambda: pod.get(port, config.health_path)[0] == 503, timeout=2)
        assert pod.enter(*docker_check, user=as_user(uid, gid), env=env).returncode != 0
        status_code, body = pod.get(port, "/")  # still serving new connections through the delay
        assert status_code == 200 and "forkserve is running" in body
        assert proc.wait(grace) == 0
        stopped = time.monotonic() - signalled
        assert config.shutdown_delay <= stopped < grace
        log = pod.log()
        assert log.index("Handling SIGTERM") < log.index("Shutdown delay over") < log.index("Shutting down")
        assert not (runtime / forkserve.control.DEFAULT_NAME).exists()  # removed at a clean stop
