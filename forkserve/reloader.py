"""--reload: watch the app's source files and ask the master for a reload.

One worker per generation runs a ``FileWatcher`` thread. It watches the
files of every imported module plus ``--reload-extra-file``, and on a
change sends SIGHUP to the master, which starts new workers with the new
code and retires the old ones only once the new ones boot — so a syntax
error leaves the running workers serving and the watcher keeps watching.
Uses ``watchfiles`` when it is installed, and stat polling otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

POLL_SECONDS = 1.0


def module_files() -> set[str]:
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py") and os.path.isfile(path):
            files.add(os.path.abspath(path))
    return files


class FileWatcher:
    def __init__(self, extra_files: Iterable[str], on_change: Callable[[str], None]) -> None:
        self.extra_files = {os.path.abspath(path) for path in extra_files}
        self.on_change = on_change
        self.stopped = threading.Event()
        self.log = logging.getLogger("forkserve.error")

    def files(self) -> set[str]:
        return module_files() | self.extra_files

    def start(self, engine: str = "auto") -> None:
        """Watch in a thread; engine is "auto", "poll" or "watchfiles".

        The first modification times are taken here, before the worker
        serves, so a change made right after boot is never missed.
        """
        self.seen = self.mtimes(self.files())
        target = self.poll
        if engine != "poll":
            try:
                import watchfiles  # noqa: F401
            except ImportError:
                if engine == "watchfiles":
                    self.log.warning("reload_engine watchfiles is not installed; polling instead")
            else:
                target = self.watch
        threading.Thread(target=target, name="forkserve-reloader", daemon=True).start()
        self.log.info("Watching %d files for changes (%s)", len(self.seen), target.__name__)

    def stop(self) -> None:
        self.stopped.set()

    def check(self) -> None:
        """Compare modification times with the last look; report the first change."""
        now = self.mtimes(self.files() | set(self.seen))
        changed = sorted(path for path, mtime in now.items() if self.seen.get(path) not in (None, mtime))
        self.seen.update(now)
        if changed:
            self.on_change(changed[0])

    def poll(self) -> None:
        """Stat polling: look once a second."""
        while not self.stopped.wait(POLL_SECONDS):
            self.check()

    def watch(self) -> None:
        """watchfiles (inotify) wakes us on a change; the times decide what changed."""
        import watchfiles

        folders = sorted({str(Path(path).parent) for path in self.seen})
        for _changes in watchfiles.watch(
            *folders,
            stop_event=self.stopped,
            raise_interrupt=False,
            yield_on_timeout=True,
            rust_timeout=int(POLL_SECONDS * 1000),
        ):
            self.check()

    @staticmethod
    def mtimes(paths: Iterable[str]) -> dict[str, float]:
        result = {}
        for path in paths:
            try:
                result[path] = os.stat(path).st_mtime
            except OSError:
                continue
        return result
