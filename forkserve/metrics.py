"""Prometheus metrics, served by the master (``--metrics-bind``).

Workers count; the master adds up and answers. Each worker writes its
counts into the counter block of its heartbeat slot (heartbeat.py): plain
``counters[i] += 1`` stores into shared memory, no lock, as each slot has
one writer. The layout of that block is defined here, as named indices.
``RequestMetrics`` is the worker's side: it exists only with
``--metrics-bind``, and the worker's call sites test it for None once per
request, so with metrics off a request costs nothing more.

The master's side is ``PoolMetrics``: at scrape time it sums the slots of
the live workers and the totals it folded in from workers that exited
(``worker_gone``, called by ``Master.reap`` before the slot is released and
zeroed for a new worker), so no counter ever goes backwards. What the
master knows itself (worker states, why each worker exited, reloads, the
listen queues, the workers' memory) it reads at scrape time. ``render()``
writes the Prometheus text exposition format; ``start()`` opens the
metrics address as one of the master's endpoints (endpoints.py), so a
stuck or busy pool cannot hide the numbers.
"""

from __future__ import annotations

import socket
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .endpoints import Endpoint, Peer
from .heartbeat import COUNTERS, Heartbeat
from .lifecycle import Record, State
from .settings import Settings
from .sockets import BindError, Listener, SocketOptions, open_listener, parse_bind

if TYPE_CHECKING:
    from .master import Master

# -- the counter block of a heartbeat slot ------------------------------------

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other")
CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")  # none: the client left before any response
# status // 100 -> column; an app's 6xx..9xx counts as 5xx
CLASS_COLUMN = (0, 1, 2, 3, 4, 5, 5, 5, 5, 5)
BUCKET_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REFUSED_STATUSES = (400, 408, 413, 414, 431, 501, 505)
# Added up from the worker's own cells and copied into the slot once a second (``flush``):
REQUESTS = 0  # a row of len(CLASSES) counters per method: requests finished
BUCKETS = REQUESTS + len(METHODS) * len(CLASSES)  # one per bucket (not cumulative), the last for > 60 s
DURATION_SUM = BUCKETS + len(BUCKET_BOUNDS) + 1  # nanoseconds (summed in seconds, flushed in ns)
REFUSED = DURATION_SUM + 1  # one per status above, then one for any other
# Written into the slot at once. Read in index order at scrape time, finished before
# started and closed before accepted, so neither difference is ever seen below 0.
FINISHED = REFUSED + len(REFUSED_STATUSES) + 1  # requests finished
STARTED = FINISHED + 1  # requests started: in flight = started - finished
CONNECTIONS_CLOSED = STARTED + 1
CONNECTIONS_ACCEPTED = CONNECTIONS_CLOSED + 1
LEAVE_REASON = COUNTERS - 1  # not a counter: why the worker left on its own (below)
FOLDED = range(LEAVE_REASON)  # what a dead worker hands on to the master's totals
assert CONNECTIONS_ACCEPTED < LEAVE_REASON

# Why a worker left on its own (it marked itself leaving): set once, by the worker.
LEFT_MAX_REQUESTS = 1
LEFT_MEMORY = 2
LEFT_TIMEOUT = 3  # --threads: a request thread ran past --timeout
LEFT_REASONS = {LEFT_MAX_REQUESTS: "max_requests", LEFT_MEMORY: "memory", LEFT_TIMEOUT: "timeout"}
EXIT_REASONS = ("crash", "timeout", "max_requests", "memory", "reload", "scale", "boot", "stop")


def leaving_because(heartbeat: Heartbeat, reason: int) -> None:
    """The worker says why it is about to leave (once, before ``mark_leaving``; metrics on or off)."""
    heartbeat.counters[LEAVE_REASON] = reason


class RequestMetrics:
    """A worker's recorder, writing into its own heartbeat slot.

    A request costs one lookup and two float adds, into the worker's own
    memory: the cell counted names the request's method, status class and
    duration bucket at once, so the requests by method and class and the
    histogram's buckets are sums of cells, added up by ``flush()`` once a
    second from the worker's sweep and when it exits (a worker killed with
    SIGKILL loses at most that second). Each Python operation costs a few
    hundred instructions, so their number is what the feature costs (see
    the README's "What it costs"). Connections are written into the slot
    at once. Every count is one ``+=`` with no call between its load and its store:
    CPython switches threads only at a call or a backward jump, so request
    threads (--threads) lose no count without a lock.

    This class is the recorder of a worker that serves one request at a
    time; ``OverlappingRequestMetrics`` below also counts what is in flight.
    """

    __slots__ = ("counters", "counts", "flushed", "rows", "seconds", "started")

    def __init__(self, counters: memoryview) -> None:
        self.counters = counters
        # The slot's cell of requests started, which handler.serve bumps itself (no call) when
        # requests overlap; one request at a time needs no count as a request starts.
        self.started: memoryview | None = None
        # Floats, exact to 2**53: adding 1.0 takes a freed float, an int above 256 allocates.
        self.counts = [0.0] * LOCAL
        self.flushed = [0] * FINISHED
        self.seconds = 0.0  # the requests' durations, summed: a float add allocates nothing new
        # A method's row maps each status (0..999) to its class's first cell: one lookup each.
        rows: dict[str | bytes, tuple[int, ...]] = {}
        for index, method in enumerate(METHODS[:-1]):
            rows[method] = rows[method.encode()] = status_cells(index * ROW)
        self.rows = rows

    def request_done(self, method: str | bytes, status: int, seconds: float) -> None:
        """A request finished after ``seconds`` (status 0: the client left before any response)."""
        try:
            cell = self.rows[method][status]
        except KeyError:  # a method of the app's own: counted as "other"
            cell = OTHER_ROW[status]
        # Most requests take under a millisecond: one comparison instead of a search.
        self.counts[cell if seconds <= FIRST_BOUND else cell + bisect_left(BUCKET_BOUNDS, seconds)] += 1.0
        self.seconds += seconds

    def refused(self, status: int) -> None:
        """The parser refused a request (it never reached the app)."""
        index = REFUSED_STATUSES.index(status) if status in REFUSED_STATUSES else len(REFUSED_STATUSES)
        self.counts[OUTCOMES + index] += 1.0

    def connection_opened(self) -> None:
        self.counters[CONNECTIONS_ACCEPTED] += 1

    def connection_closed(self) -> None:
        self.counters[CONNECTIONS_CLOSED] += 1

    def flush(self) -> None:
        """Add the outcomes up into the slot's layout; store the cells that changed."""
        counts = self.counts
        # A (method, class) pair's buckets; the sums run in C, the loops are short.
        pairs = [counts[cell : cell + BUCKET_CELLS] for cell in range(0, OUTCOMES, BUCKET_CELLS)]
        slot = [0] * FINISHED
        slot[REQUESTS:BUCKETS] = [int(sum(pair)) for pair in pairs]
        slot[BUCKETS:DURATION_SUM] = [int(sum(bucket)) for bucket in zip(*pairs, strict=True)]
        slot[DURATION_SUM] = round(self.seconds * 1e9)
        slot[REFUSED:FINISHED] = [int(count) for count in counts[OUTCOMES:]]
        counters, flushed = self.counters, self.flushed
        for index, count in enumerate(slot):
            if count != flushed[index]:
                counters[index] = flushed[index] = count
        self.flush_requests(sum(slot[REQUESTS:BUCKETS]))

    def flush_requests(self, finished: int) -> None:
        """One request at a time: as many started as finished, as none is in flight between requests.

        What is in flight now the master reads from the slot's current request.
        """
        self.counters[FINISHED] = self.counters[STARTED] = finished


class OverlappingRequestMetrics(RequestMetrics):
    """The recorder of a worker whose requests overlap (--threads, gevent).

    The requests started and finished are written into the slot at once, and
    the master reads what is in flight from their difference.
    """

    __slots__ = ("finished",)

    def __init__(self, counters: memoryview) -> None:
        super().__init__(counters)
        self.started = counters[STARTED : STARTED + 1]
        self.finished = counters[FINISHED : FINISHED + 1]

    def request_done(self, method: str | bytes, status: int, seconds: float) -> None:
        RequestMetrics.request_done(self, method, status, seconds)
        self.finished[0] += 1

    def flush_requests(self, finished: int) -> None:
        pass  # written at once, as they happen


# The worker's own cells: one per (method, status class, duration bucket), then the refusals.
BUCKET_CELLS = len(BUCKET_BOUNDS) + 1
ROW = len(CLASSES) * BUCKET_CELLS
OUTCOMES = len(METHODS) * ROW


def status_cells(row: int) -> tuple[int, ...]:
    return tuple(row + CLASS_COLUMN[status // 100] * BUCKET_CELLS for status in range(1000))


OTHER_ROW = status_cells((len(METHODS) - 1) * ROW)
LOCAL = OUTCOMES + len(REFUSED_STATUSES) + 1
FIRST_BOUND = BUCKET_BOUNDS[0]


def overlapping(settings: Settings) -> bool:
    """Do this server's workers serve overlapping requests (--threads above 1, gevent)?"""
    return settings.threads > 1 or settings.worker_class == "gevent"


def request_metrics(settings: Settings, counters: memoryview) -> RequestMetrics:
    """The recorder a worker of these settings counts its requests with."""
    return OverlappingRequestMetrics(counters) if overlapping(settings) else RequestMetrics(counters)


def served(heartbeat: Heartbeat) -> int:
    """Requests this worker has finished (counted only with --metrics-bind; else 0)."""
    return int(heartbeat.counters[FINISHED])


@dataclass(frozen=True)
class Memory:
    """One process's memory, in bytes, from /proc/PID/smaps_rollup."""

    resident: int  # RSS: every page it maps that is in RAM
    proportional: int  # PSS: shared pages divided among their sharers (sums to the pool's footprint)
    unique: int  # USS: pages no other process maps (what --max-worker-memory limits)


def worker_memory(pid: int) -> Memory | None:
    """A process's memory (one read of /proc/PID/smaps_rollup); None once it is gone."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as file:
            for line in file.read().decode("ascii", "replace").splitlines():
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if "Rss" not in fields:
        return None  # a zombie: nothing mapped any more
    unique = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(fields["Rss"], fields.get("Pss", 0), unique)


def exit_reason(record: Record, stopping: bool, generation: int) -> str:
    """Why a worker exited, from what the master knows (ask before the record moves to GONE)."""
    heartbeat = record.worker.heartbeat
    if record.boot_deadline_missed or record.aborted_at:
        return "timeout"
    if heartbeat.leaving:
        # Left on its own without saying why: the app ended the process (sys.exit in a request).
        return LEFT_REASONS.get(heartbeat.counters[LEAVE_REASON], "crash")
    if stopping:
        return "stop"
    if record.state is State.BOOTING:
        return "boot"
    if record.state is State.RETIRING:
        # A reload's old workers (or a superseded reload's new ones) belong to another
        # generation; TTOU, --workers-max and WINCH retire workers of the current one.
        return "reload" if record.generation != generation else "scale"
    return "crash"


# -- the master's side ----------------------------------------------------------


class Exposition:
    """Prometheus text format (version 0.0.4), one family at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        self.lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            inside = ",".join(f'{key}="{escape(text)}"' for key, text in labels.items())
            name = f"{name}{{{inside}}}"
        shown = str(value) if isinstance(value, int) else repr(float(value))
        self.lines.append(f"{name} {shown}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PoolMetrics:
    """The master's totals, and the page it renders from them and the live slots."""

    def __init__(self) -> None:
        self.started = time.time()
        self.folded = [0] * COUNTERS
        self.exits = dict.fromkeys(EXIT_REASONS, 0)
        self.reloads = 0

    def fold(self, heartbeat: Heartbeat) -> None:
        """A worker is gone: keep its last counts (before its slot is released and zeroed)."""
        counters = heartbeat.counters
        folded = self.folded
        for index in FOLDED:
            folded[index] += counters[index]

    def worker_gone(self, record: Record, stopping: bool, generation: int) -> None:
        self.exits[exit_reason(record, stopping, generation)] += 1
        self.fold(record.worker.heartbeat)

    def render(
        self,
        records: Iterable[Record],
        listeners: Iterable[Listener],
        threads: int = 1,
        concurrent: bool = True,
    ) -> str:
        """The metrics page; ``threads`` is --threads (threads busy and idle are shown above 1).

        ``concurrent``: the workers serve overlapping requests (see ``RequestMetrics``).
        """
        records = list(records)
        live = [record.worker.heartbeat.counters.tolist() for record in records]
        totals = list(self.folded)
        for counters in live:
            for index in FOLDED:
                totals[index] += counters[index]
        if concurrent:
            in_flight = [max(0, c[STARTED] - c[FINISHED]) for c in live]
        else:
            in_flight = [int(r.worker.heartbeat.current_request() is not None) for r in records]
        out = Exposition()
        self.render_requests(out, totals, sum(in_flight))
        self.render_workers(out, records, in_flight, threads)
        self.render_connections(out, totals, live, listeners)
        self.render_memory(out, records)
        out.family(
            "forkserve_start_time_seconds", "gauge", "When the master started, in seconds since the epoch."
        )
        out.sample("forkserve_start_time_seconds", round(self.started, 3))
        out.family(
            "forkserve_reloads_total", "counter", "Reloads started (SIGHUP, or --reload seeing a change)."
        )
        out.sample("forkserve_reloads_total", self.reloads)
        return out.text()

    def render_requests(self, out: Exposition, totals: list[int], in_flight: int) -> None:
        name = "forkserve_http_requests_total"
        out.family(
            name,
            "counter",
            "Requests finished, by method (others: 'other') and status class "
            "('none': the client left before any response).",
        )
        for row, method in enumerate(METHODS):
            for column, status_class in enumerate(CLASSES):
                value = totals[REQUESTS + row * len(CLASSES) + column]
                out.sample(name, value, method=method, status_class=status_class)
        name = "forkserve_http_request_duration_seconds"
        out.family(name, "histogram", "Time from a request's head to the end of its response.")
        cumulative = 0
        for index, bound in enumerate((*BUCKET_BOUNDS, float("inf"))):
            cumulative += totals[BUCKETS + index]
            out.sample(f"{name}_bucket", cumulative, le="+Inf" if bound == float("inf") else repr(bound))
        out.sample(f"{name}_sum", totals[DURATION_SUM] / 1e9)
        out.sample(f"{name}_count", cumulative)
        out.family("forkserve_http_requests_in_flight", "gauge", "Requests being served now.")
        out.sample("forkserve_http_requests_in_flight", in_flight)
        name = "forkserve_http_requests_refused_total"
        out.family(name, "counter", "Requests the HTTP parser refused before the app saw them, by status.")
        for index, status in enumerate((*REFUSED_STATUSES, "other")):
            out.sample(name, totals[REFUSED + index], status=str(status))

    def render_workers(
        self, out: Exposition, records: list[Record], in_flight: list[int], threads: int
    ) -> None:
        states = dict.fromkeys(("booting", "idle", "busy", "retiring"), 0)
        busy_threads = idle_threads = 0
        for record, running in zip(records, in_flight, strict=True):
            if record.state is State.BOOTING:
                states["booting"] += 1
            elif record.state is State.RETIRING:
                states["retiring"] += 1
            else:
                states["busy" if running else "idle"] += 1
                idle_threads += max(0, threads - running)
            busy_threads += min(running, threads)
        out.family("forkserve_workers", "gauge", "Worker processes, by state.")
        for state, count in states.items():
            out.sample("forkserve_workers", count, state=state)
        if threads > 1:
            out.family("forkserve_threads", "gauge", "Request threads (--threads), by state.")
            out.sample("forkserve_threads", busy_threads, state="busy")
            out.sample("forkserve_threads", idle_threads, state="idle")
        name = "forkserve_worker_exits_total"
        out.family(
            name,
            "counter",
            "Worker exits, by reason (each but scale, boot and stop is followed by a restart).",
        )
        for reason, count in self.exits.items():
            out.sample(name, count, reason=reason)

    def render_connections(
        self, out: Exposition, totals: list[int], live: list[list[int]], listeners: Iterable[Listener]
    ) -> None:
        opened = sum(max(0, c[CONNECTIONS_ACCEPTED] - c[CONNECTIONS_CLOSED]) for c in live)
        out.family("forkserve_connections_open", "gauge", "Client connections the workers hold now.")
        out.sample("forkserve_connections_open", opened)
        out.family("forkserve_connections_accepted_total", "counter", "Client connections accepted.")
        out.sample("forkserve_connections_accepted_total", totals[CONNECTIONS_ACCEPTED])
        queues = [(listener.url, listener.queue()) for listener in listeners]
        known = [(url, queue) for url, queue in queues if queue is not None]
        out.family(
            "forkserve_listen_queue_length",
            "gauge",
            "Connections waiting in a listen queue (TCP_INFO; socket diagnostics for unix sockets).",
        )
        for url, (length, _) in known:
            out.sample("forkserve_listen_queue_length", length, listener=url)
        out.family("forkserve_listen_queue_limit", "gauge", "A listen queue's limit (the backlog).")
        for url, (_, limit) in known:
            out.sample("forkserve_listen_queue_limit", limit, listener=url)

    def render_memory(self, out: Exposition, records: list[Record]) -> None:
        readings = [m for m in (worker_memory(record.pid) for record in records) if m is not None]
        out.family(
            "forkserve_workers_memory_bytes",
            "gauge",
            "The workers' memory added up: proportional set size (PSS, /proc/PID/smaps_rollup).",
        )
        out.sample("forkserve_workers_memory_bytes", sum(m.proportional for m in readings))
        out.family(
            "forkserve_worker_memory_max_bytes",
            "gauge",
            "The largest worker's unique set size (USS, private pages of /proc/PID/smaps_rollup; "
            "what --max-worker-memory limits).",
        )
        out.sample("forkserve_worker_memory_max_bytes", max((m.unique for m in readings), default=0))


# -- the endpoint ----------------------------------------------------------------

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def head_complete(data: bytes) -> bool:
    return b"\r\n\r\n" in data or b"\n\n" in data


def answer(request: bytes, page: Callable[[], str]) -> bytes:
    """The whole HTTP/1.1 response to one request for the metrics page."""
    method, _, rest = request.split(b"\n", 1)[0].strip().partition(b" ")
    path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        return response(
            b"405 Method Not Allowed", b"text/plain", b"GET or HEAD only\n", b"Allow: GET, HEAD\r\n"
        )
    if path != b"/metrics":
        return response(b"404 Not Found", b"text/plain", b"metrics are at /metrics\n")
    body = page().encode()
    if method == b"HEAD":
        return response(b"200 OK", CONTENT_TYPE, body)[: -len(body) or None]
    return response(b"200 OK", CONTENT_TYPE, body)


def response(status: bytes, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n%s" % (
        status,
        content_type,
        len(body),
        extra,
        body,
    )


class MetricsServer:
    """The master's metrics address: bound at start, or as soon as it is free after an upgrade."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.pool = PoolMetrics()
        self.address = master.settings.metrics_bind
        self.bound = False
        self.tried = 0.0

    def start(self, upgraded: bool) -> bool:
        """Bind and serve; False when the address cannot be had (after SIGUSR2 it is retried)."""
        first, self.tried = not self.tried, time.monotonic()
        try:
            listener = open_listener(parse_bind(self.address), SocketOptions(backlog=64))
        except BindError as error:
            if not upgraded:
                self.master.log.error("--metrics-bind: %s", error)
                return False
            if first:  # the old master still serves it: take it over once it has left
                self.master.log.info("Metrics address taken (by the old master?); retrying: %s", error)
            return True
        listener.sock.set_inheritable(False)
        self.bound = True
        shown = listener.url if listener.address.family == socket.AF_UNIX else f"{listener.url}/metrics"
        self.master.log.info("Metrics at: %s", shown)
        respond = self.respond
        self.master.endpoints.add(Endpoint(listener.sock, head_complete, respond, "metrics"))
        return True

    def tick(self) -> None:
        """From the master's loop: retry a bind that an upgrade found taken, once a second."""
        if not self.bound and time.monotonic() - self.tried >= 1.0:
            self.start(upgraded=True)

    def respond(self, request: bytes, peer: Peer) -> bytes:
        master = self.master
        return answer(
            request,
            lambda: self.pool.render(
                master.workers.values(),
                master.listeners,
                master.settings.threads,
                concurrent=overlapping(master.settings),
            ),
        )
