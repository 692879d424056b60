#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine with Python 3.11+:
# forkserve itself (editable) with its test extras, and the Debian packages some tests
# drive for real (nginx, haproxy, iproute2 for the fleet's network namespaces, wrk,
# prometheus, tmux). Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v logrotate >/dev/null 2>&1 || missing+=(logrotate)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python -m pip install -q --disable-pip-version-check -e ".[test]"
