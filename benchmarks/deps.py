"""Finds or installs the tools the benchmarks need, outside forkserve's own deps.

Owns: Debian packages (wrk, nginx) through apt-get, and the "peers" virtual
environment (benchmarks/.venv-peers) holding Gunicorn, waitress, granian,
Django and matplotlib at the versions pinned in requirements-peers.txt. The
peers never enter the interpreter that runs forkserve, so they can never turn
into forkserve dependencies by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_VENV = HERE / ".venv-peers"
REQUIREMENTS = HERE / "requirements-peers.txt"
APT_TIMEOUT_S = 600
PIP_TIMEOUT_S = 600


class SetupError(RuntimeError):
    """A dependency is missing and could not be installed."""


def log(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(
            f"need Debian package(s) {' '.join(packages)}: install them "
            "(apt-get needs root, or this is not a Debian-like system)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    log(f"apt-get install {' '.join(packages)}")
    first = subprocess.run(cmd, env=env, capture_output=True, timeout=APT_TIMEOUT_S)
    if first.returncode == 0:
        return
    # A fresh machine often has no package lists yet: fetch them once, retry.
    log("apt-get update")
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=APT_TIMEOUT_S)
    second = subprocess.run(cmd, env=env, capture_output=True, timeout=APT_TIMEOUT_S)
    if second.returncode != 0:
        tail = second.stderr.decode(errors="replace")[-2000:]
        raise SetupError(f"apt-get install {' '.join(packages)} failed:\n{tail}")


def find_program(name: str) -> str | None:
    # root's PATH has /usr/sbin (nginx), others may not: look there too.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure_wrk() -> str:
    if (path := find_program("wrk")) is None:
        _apt_install(["wrk"])
        path = find_program("wrk")
    if path is None:
        raise SetupError("wrk is still missing after apt-get install wrk")
    return path


def ensure_nginx() -> str:
    if (path := find_program("nginx")) is None:
        # nginx-light is the smallest build that has `return`; older releases
        # name it differently, so fall back to plain nginx.
        try:
            _apt_install(["nginx-light"])
        except SetupError:
            _apt_install(["nginx"])
        path = find_program("nginx")
    if path is None:
        raise SetupError("nginx is still missing after installing it")
    return path


def pinned_requirements() -> dict[str, str]:
    """{normalized name: requirement line} from requirements-peers.txt."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = line.split("==", 1)[0].strip().lower()
            pins[name] = line
    return pins


def peers_python() -> Path:
    return PEERS_VENV / "bin" / "python"


def peers_bin() -> Path:
    return PEERS_VENV / "bin"


def peers_site_packages() -> str:
    """The peers venv's site-packages (to lend Django to forkserve's interpreter).

    Valid because the venv is created from the current interpreter, so the
    Python version and ABI match.
    """
    out = subprocess.run(
        [str(peers_python()), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def _installed_versions(names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run(
        [str(peers_python()), "-c", code, *names], capture_output=True, text=True, timeout=60
    )
    return json.loads(res.stdout) if res.returncode == 0 else {}


def _create_venv() -> None:
    log(f"creating {PEERS_VENV}")
    res = subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], capture_output=True, timeout=300)
    if res.returncode == 0:
        return
    # Debian's own python3 ships venv/ensurepip separately.
    shutil.rmtree(PEERS_VENV, ignore_errors=True)
    version = sysconfig.get_python_version()
    if sys.executable.startswith("/usr/bin/"):
        _apt_install([f"python{version}-venv"])
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=300)
        return
    raise SetupError(f"python -m venv failed:\n{res.stderr.decode(errors='replace')}")


def ensure_peers(names: set[str]) -> dict[str, str]:
    """Installs the pinned peers in ``names`` into the peers venv.

    Returns {name: installed version}. Skips pip entirely when the pinned
    versions are already there, so repeated runs cost nothing.
    """
    pins = pinned_requirements()
    unknown = names - pins.keys()
    if unknown:
        raise SetupError(f"no pin in {REQUIREMENTS.name} for {sorted(unknown)}")
    if not peers_python().exists():
        _create_venv()
    wanted = sorted(names)
    have = _installed_versions(wanted)
    missing = [n for n in wanted if have.get(n) != pins[n].split("==")[-1]]
    if missing:
        log(f"pip install into {PEERS_VENV.name}: {' '.join(pins[n] for n in missing)}")
        res = subprocess.run(
            [
                str(peers_python()),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *(pins[n] for n in missing),
            ],
            capture_output=True,
            timeout=PIP_TIMEOUT_S,
        )
        if res.returncode != 0:
            tail = res.stderr.decode(errors="replace")[-3000:]
            raise SetupError(f"pip install of peers failed:\n{tail}")
        have = _installed_versions(wanted)
    return have


REPO = HERE.parent


def _try_import_forkserve(env: dict[str, str]) -> str | None:
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata as m, forkserve\n"
            "try: print(m.version('forkserve'))\n"
            "except m.PackageNotFoundError: print(getattr(forkserve, '__version__', '?'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        cwd="/",  # so the repo is not on sys.path by accident
    )
    return res.stdout.strip() if res.returncode == 0 else None


def forkserve_env() -> tuple[str, dict[str, str]] | None:
    """How to run forkserve from *this* interpreter: (version, extra env).

    Prefers an installed forkserve (``pip install -e .``); otherwise falls back
    to the repository's source tree on PYTHONPATH. None if neither imports.
    """
    if (version := _try_import_forkserve({})) is not None:
        return version, {}
    extra = {"PYTHONPATH": str(REPO)}
    if (version := _try_import_forkserve(extra)) is not None:
        return f"{version} (from source tree)", extra
    return None


def tool_version(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError:
        return "?"
    text = (res.stdout + res.stderr).strip().splitlines()
    return text[0] if text else "?"
