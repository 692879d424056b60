"""Reads what the kernel knows about the servers under test, from /proc.

Owns: finding a server's process tree and process group, summing its CPU time
and memory, and finding which TCP ports it listens on. Linux only; nothing here
sends a signal or changes a process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stat:
    """The few fields of /proc/PID/stat the benchmark uses."""

    pid: int
    ppid: int
    pgrp: int
    state: str
    ticks: int  # utime + stime + cutime + cstime


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None  # the process is gone: normal for short-lived workers
    # The command name is in parentheses and may hold spaces or ')': split
    # after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, ... utime is 14.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return Stat(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        state=fields[0],
        ticks=utime + stime + cutime + cstime,
    )


def all_stats() -> list[Stat]:
    stats = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := read_stat(int(name))) is not None:
            stats.append(st)
    return stats


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants (zombies excluded)."""
    children: dict[int, list[int]] = {}
    alive: set[int] = set()
    for st in all_stats():
        children.setdefault(st.ppid, []).append(st.pid)
        if st.state != "Z":
            alive.add(st.pid)
    found, todo = [], [root]
    # Bounded: each pid is visited once and /proc holds finitely many.
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid in alive:
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    return [st.pid for st in all_stats() if st.pgrp == pgid and st.state != "Z"]


def cpu_seconds(root: int) -> float:
    """CPU time used so far by ``root``'s process tree, in seconds.

    Each process counts its own user+system time plus cutime/cstime, the time
    of children it has already reaped. A worker that exits during a run is
    reaped by its parent (the master), so its time moves into the master's
    cutime instead of vanishing: the sum stays monotonic without sampling
    descendants continuously. Only children reaped by nobody in the tree
    (e.g. auto-reaped with SIGCHLD ignored) would be lost.
    """
    total = 0
    for pid in tree_pids(root):
        if (st := read_stat(pid)) is not None:
            total += st.ticks
    return total / CLOCK_TICKS


def children_ticks(root: int) -> dict[int, int]:
    """CPU ticks used so far by each live direct child of ``root`` (its workers).

    Each child's own time plus that of children it reaped, as in
    ``cpu_seconds``. Sampled before and after a run, the deltas show how the
    run's work spread over the workers.
    """
    ticks = {}
    for st in all_stats():
        if st.ppid == root and st.state != "Z":
            ticks[st.pid] = st.ticks
    return ticks


@dataclass(frozen=True)
class Memory:
    """Memory of a set of processes in KiB: RSS double-counts shared pages,
    PSS splits them between sharers, USS counts only private pages."""

    rss_kib: int = 0
    pss_kib: int = 0
    uss_kib: int = 0
    processes: int = 0

    def __add__(self, other: Memory) -> Memory:
        return Memory(
            self.rss_kib + other.rss_kib,
            self.pss_kib + other.pss_kib,
            self.uss_kib + other.uss_kib,
            self.processes + other.processes,
        )


def process_memory(pid: int) -> Memory:
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    values[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return Memory()
    return Memory(
        rss_kib=values.get("Rss", 0),
        pss_kib=values.get("Pss", 0),
        uss_kib=values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
        processes=1,
    )


def tree_memory(root: int) -> Memory:
    total = Memory()
    for pid in tree_pids(root):
        total = total + process_memory(pid)
    return total


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports (IPv4 and IPv6) in LISTEN state owned by any of ``pids``.

    Used for servers that accept port 0 but log the requested port instead of
    the one the kernel picked.
    """
    inodes: set[int] = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # header
                for line in f:
                    cols = line.split()
                    # cols: sl local rem st ... inode is column 9; 0A = LISTEN
                    if cols[3] == "0A" and int(cols[9]) in inodes:
                        ports.add(int(cols[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
