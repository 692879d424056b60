"""``forkserve ctl``: ask a running master over its control socket (control.py).

Which socket: ``--control-socket PATH`` when given, else the default the
master uses ($XDG_RUNTIME_DIR/forkserve.ctl, else ~/.forkserve/forkserve.ctl).
Each command sends one JSON line and prints the answer, as text or, with
``--json``, the answer itself. ``top`` asks ``status`` once a second and
draws it full-screen with curses (any terminal terminfo knows: xterm,
screen, tmux over SSH); ``q`` or Ctrl-C quits and gives the terminal back.

Exit codes: 0 done, 1 the server could not be reached or refused the
command (one line on stderr says which), 2 a bad command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from .control import default_path

TIMEOUT = 5.0  # seconds for the server to answer
REFRESH = 1.0  # seconds between top's screens
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2


class CtlError(Exception):
    """One line for the user: the server cannot be reached, or it said no."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CtlError(f"{message} (forkserve ctl --help)")


def build_parser() -> ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--control-socket",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"the server's control socket [default: {default_path()}]",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the answer as JSON"
    )
    parser = ArgumentParser(
        prog="forkserve ctl",
        description="Ask a running forkserve master over its control socket.",
        parents=[common],
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    helps = {
        "status": "workers: pid, state, age, requests served, memory, the request each is serving",
        "top": "the status, full-screen, refreshed every second (q or Ctrl-C quits)",
        "reload": "new workers with the new config and code, as SIGHUP",
        "add": "N more workers, as N times SIGTTIN",
        "remove": "N fewer workers (never below one), as N times SIGTTOU",
        "reopen-logs": "reopen the log files, as SIGUSR1",
        "stop": "graceful stop, as SIGTERM; --quick: quick stop, as SIGINT",
        "config": "every setting, its value and where it came from",
    }
    for name, text in helps.items():
        command = commands.add_parser(name, help=text, description=text, parents=[common])
        if name in ("add", "remove"):
            command.add_argument("n", type=int, metavar="N")
        if name == "stop":
            command.add_argument("--quick", action="store_true")
    return parser


def ask(path: str, command: str, args: Sequence[str] = ()) -> dict[str, Any]:
    """Send one command, return the server's answer; CtlError with one line when that fails."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise CtlError(f"{path} is not a socket")
    except FileNotFoundError:
        raise CtlError(
            f"no control socket at {path}: is forkserve running? (--control-socket PATH names another)"
        ) from None
    except PermissionError:
        raise CtlError(f"{path}: permission denied (run as the server's user or root)") from None
    request = json.dumps({"command": command, "args": list(args)}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            raise CtlError(f"{path} is stale: the server that made it is not running") from None
        except PermissionError:
            raise CtlError(f"{path}: permission denied (run as the server's user or root)") from None
        except OSError as error:
            raise CtlError(f"{path}: {error.strerror or error}") from None
        data = b""
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            raise CtlError(f"{path}: the server did not answer within {TIMEOUT:g}s") from None
        except OSError as error:
            raise CtlError(f"{path}: {error.strerror or error}") from None
    try:
        answer: dict[str, Any] = json.loads(data)
    except ValueError:
        raise CtlError(f"{path}: the server closed the connection without an answer") from None
    if not answer.get("ok"):
        raise CtlError(str(answer.get("error", "the server refused the command")))
    return answer


# -- text output -------------------------------------------------------


def duration(seconds: float) -> str:
    """4.2s, 3m05s, 2h10m, 3d04h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return ""  # not reached


WORKER_HEAD = f"{'PID':>7}  {'STATE':<8} {'GEN':>3} {'AGE':>7} {'SERVED':>8} {'RSS':>7} {'USS':>7}  REQUEST"


def worker_row(worker: dict[str, Any]) -> str:
    request = worker["request"]
    doing = ""
    if request:
        doing = f"{request['method']} {request['path']}  {request['client']}  {duration(request['elapsed'])}"
    served = "-" if worker["served"] is None else str(worker["served"])
    memory = worker["memory"] or {}
    return (
        f"{worker['pid']:>7}  {worker['state']:<8} {worker['generation']:>3} {duration(worker['age']):>7} "
        f"{served:>8} {size(memory.get('resident')):>7} {size(memory.get('unique')):>7}  {doing}"
    ).rstrip()


def master_line(master: dict[str, Any], workers: list[dict[str, Any]]) -> str:
    state = " stopping" if master["stopping"] else " reloading" if master["reloading"] else ""
    return (
        f"master {master['pid']} ({master['app']}, forkserve {master['version']}){state}  "
        f"up {duration(master['uptime'])}  generation {master['generation']}  "
        f"workers {len(workers)} ({master['wanted']} wanted)"
    )


def show_status(answer: dict[str, Any]) -> list[str]:
    master, workers = answer["master"], answer["workers"]
    lines = [master_line(master, workers), "listening: " + " ".join(master["listening"]), WORKER_HEAD]
    return lines + [worker_row(worker) for worker in workers]


def show(command: str, answer: dict[str, Any]) -> list[str]:
    if command == "status":
        return show_status(answer)
    if command == "config":
        return [f"{s['name']} = {json.dumps(s['value'])}  # {s['source']}" for s in answer["settings"]]
    if command == "reload":
        if not answer["started"]:
            return ["reload failed: the running workers keep serving (the server log says why)"]
        return [f"reloading: generation {answer['generation']} starting; the old workers leave once it is up"]
    if command in ("add", "remove"):
        return [f"workers wanted: {answer['wanted']}"]
    if command == "stop":
        return [f"master {answer['pid']} stopping ({'graceful' if answer['graceful'] else 'quick'})"]
    return ["log files reopened"]


# -- top ---------------------------------------------------------------


class Rate:
    """Requests per second from the workers' served counts between two screens."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.when = 0.0

    def update(self, workers: list[dict[str, Any]], now: float) -> float | None:
        counts = {w["pid"]: w["served"] for w in workers if w["served"] is not None}
        rate = None
        if self.when and counts:
            done = sum(max(0, n - self.counts[pid]) for pid, n in counts.items() if pid in self.counts)
            rate = done / max(now - self.when, 1e-6)
        self.counts, self.when = counts, now
        return rate


def top_screen(answer: dict[str, Any] | None, problem: str, rate: float | None) -> list[str]:
    """The lines of one top screen."""
    clock = time.strftime("%H:%M:%S")
    if answer is None:
        return [f"forkserve top  {clock}", "", problem, "", "retrying every second; q quits"]
    master, workers = answer["master"], answer["workers"]
    busy = sum(1 for worker in workers if worker["request"])
    memory = sum((worker["memory"] or {}).get("proportional", 0) for worker in workers)
    shown_rate = "-" if rate is None else f"{rate:.1f}"
    return [
        f"forkserve top  {clock}  " + master_line(master, workers),
        f"requests/s {shown_rate}  busy {busy}/{len(workers)}  workers' memory (PSS) {size(memory)}  "
        f"listening {' '.join(master['listening'])}   (q quits)",
        "",
        WORKER_HEAD,
        *(worker_row(worker) for worker in workers),
    ]


def top(path: str) -> int:
    import curses

    answer: dict[str, Any] | None = ask(path, "status")  # an unreachable server: one line, no screen
    rate = Rate()

    def run(screen: Any) -> None:
        nonlocal answer
        with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor
            curses.curs_set(0)
        problem = ""
        while True:
            shown = rate.update(answer["workers"], time.monotonic()) if answer else None
            draw(screen, top_screen(answer, problem, shown))
            deadline = time.monotonic() + REFRESH
            while (left := deadline - time.monotonic()) > 0:
                screen.timeout(max(1, int(left * 1000)))
                key = screen.getch()
                if key in (ord("q"), ord("Q")):
                    return
                if key == curses.KEY_RESIZE:  # redraw at the new size now, not in a second
                    break
            try:
                answer, problem = ask(path, "status"), ""
            except CtlError as error:
                answer, problem = None, str(error)

    def draw(screen: Any, lines: list[str]) -> None:
        # The terminal's size as the kernel has it now: curses can keep a stale one
        # (a pane sized after start-up, a resize it did not hear of).
        size = os.get_terminal_size(sys.__stdout__.fileno()) if sys.__stdout__ else None
        if size is not None and (size.lines, size.columns) != screen.getmaxyx():
            curses.resizeterm(size.lines, size.columns)
        height, width = screen.getmaxyx()
        screen.erase()
        for row, line in enumerate(lines[:height]):
            attribute = curses.A_REVERSE if line == WORKER_HEAD else curses.A_NORMAL
            with contextlib.suppress(curses.error):  # the bottom-right cell
                screen.addnstr(row, 0, line.ljust(width) if attribute else line, width - 1, attribute)
        screen.refresh()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C quits too; curses.wrapper restores the terminal
        curses.wrapper(run)
    return 0


# -- entry point -------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    try:
        options = build_parser().parse_args(list(argv))
    except CtlError as error:
        print(f"forkserve ctl: {error}", file=sys.stderr)
        return EXIT_USAGE
    path = getattr(options, "control_socket", None) or default_path()
    command = options.command
    args: list[str] = []
    if command in ("add", "remove"):
        args = [str(options.n)]
    elif command == "stop" and options.quick:
        args = ["--quick"]
    if command == "top" and getattr(options, "json", False):
        print("forkserve ctl: top draws a screen; for JSON use status --json", file=sys.stderr)
        return EXIT_USAGE
    try:
        if command == "top":
            return top(path)
        answer = ask(path, command, args)
    except CtlError as error:
        print(f"forkserve ctl: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if getattr(options, "json", False):
        print(json.dumps(answer, indent=2))
    else:
        print("\n".join(show(command, answer)))
    return 0
