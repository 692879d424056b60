"""Process plumbing: forking a child that never returns, titles, exit reasons."""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

# Exit codes a worker uses to tell the master why it left. The master stops
# with the same code, so a script can tell a bad app from a bad config.
EXIT_OK = 0
EXIT_BOOT_FAILURE = 3  # the worker crashed while booting
EXIT_APP_LOAD_ERROR = 4  # the app could not be imported / found
EXIT_ABORTED = 5  # the worker was aborted after a request timeout
BOOT_FAILURES = (EXIT_BOOT_FAILURE, EXIT_APP_LOAD_ERROR)


# What a new child does with each signal until it installs its own handlers.
CHILD_SIGNALS = {
    signal.SIGTERM: signal.SIG_DFL,
    signal.SIGINT: signal.SIG_DFL,
    signal.SIGQUIT: signal.SIG_DFL,
    signal.SIGUSR1: signal.SIG_DFL,
    signal.SIGCHLD: signal.SIG_DFL,
    signal.SIGHUP: signal.SIG_IGN,
    signal.SIGUSR2: signal.SIG_IGN,
    signal.SIGTTIN: signal.SIG_IGN,
    signal.SIGTTOU: signal.SIG_IGN,
    signal.SIGWINCH: signal.SIG_IGN,
}


def thread_stacks(interrupted: FrameType | None = None) -> str:
    """Every thread's Python stack, most recent call last, for a log line.

    In a signal handler, pass the frame the signal interrupted: this thread's
    stack then ends in the code that was running, not in the handler.
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        if interrupted is not None and _calls(interrupted, frame):
            frame = interrupted  # (found by the frames: gevent patches thread identities)
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"Thread {names.get(ident, hex(ident))}:\n{stack}")
    return "".join(parts).rstrip("\n")


def _calls(caller: FrameType, frame: FrameType | None) -> bool:
    """Is ``caller`` on the stack that ``frame`` tops?"""
    while frame is not None:
        if frame is caller:
            return True
        frame = frame.f_back
    return False


def fork_child(run: Callable[[], int]) -> int:
    """Fork; in the child run ``run()`` and always end in ``os._exit``.

    The child must never return into the master's stack (it would run the
    master's loop and cleanup a second time), whatever ``run`` raises.
    Signals are blocked across the fork: a signal that reached the new
    child before it dropped the master's handlers would be written to the
    master's wakeup pipe, and the master would act on it as its own.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum, action in CHILD_SIGNALS.items():
            signal.signal(signum, action)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        code = run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


FD_SPARE = 16  # descriptors a worker keeps beside its connections: log files, the app's own files


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (nginx's worker_rlimit_nofile).

    Returns (soft limit before, soft limit now). Children forked afterwards
    inherit it. A hard limit the kernel would refuse (unlimited, above
    fs.nr_open) is clamped to fs.nr_open; a refusal leaves the limit as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as file:
                target = int(file.read())
        except (OSError, ValueError):
            return soft, soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, target
    return soft, soft


def open_fds() -> int:
    """How many descriptors this process holds now."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself opened
    except OSError:
        return 0


def fd_limit_summary(limit: int, worker_connections: int) -> str:
    """The log line that says how many connections the descriptor limit leaves a worker."""
    room = max(0, min(worker_connections, limit - open_fds() - FD_SPARE))
    return f"file descriptors: {limit}; a worker holds at most about {room} connections"


def describe_exit(status: int) -> str:
    """'exit code 3' or 'signal SIGKILL', from a waitpid status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return f"signal {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:  # the title is a convenience; never fail over it
        return
    setproctitle(title)


def daemonize(keep_stdio: bool = False) -> None:
    """Detach from the terminal: fork twice, new session, stdio to /dev/null.

    ``keep_stdio`` (-R, --enable-stdio-inheritance) keeps stdout and stderr
    where they point, unless that is the terminal being left.
    """
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd == 0 or not keep_stdio or os.isatty(fd):
            os.dup2(null, fd)
    os.close(null)


def resolve_ids(user: str, group: str) -> tuple[int | None, int | None]:
    """(uid, gid) for --user/--group given as names or numbers; None when unset."""
    import grp
    import pwd

    uid = gid = None
    if user:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def drop_privileges(uid: int | None, gid: int | None, with_groups: bool = False) -> None:
    """Switch to gid then uid (in that order: after setuid, setgid is not allowed).

    ``with_groups`` (--initgroups) also takes the user's supplementary groups.
    """
    import pwd

    if gid is not None:
        if with_groups and uid is not None:
            os.initgroups(pwd.getpwuid(uid).pw_name, gid)
        else:
            os.setgroups([gid])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)


def spew() -> None:
    """--spew: print every line this process executes (debugging; very slow)."""
    import linecache
    import threading

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            path, line = frame.f_code.co_filename, frame.f_lineno
            source = linecache.getline(path, line).rstrip()
            sys.stderr.write(f"{os.getpid()}: {path}:{line}: {source}\n")
        return trace

    threading.settrace(trace)
    sys.settrace(trace)
