# Patterns: logger-global, on-exit-cleanup, pidfile-relative, workers-os-cpu-count,
#   log-files-relative-dir, pathlib-helpers.
# A module logger at top level for the hooks, and an on_exit that removes the pid file.
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)
LOG_DIR = Path(os.environ["CORPUS_DIR"]) / "log"
LOG_DIR.mkdir(exist_ok=True)

bind = ["127.0.0.1:8000"]
workers = min(os.cpu_count() or 1, 2)
pidfile = "gunicorn.pid"
accesslog = str(LOG_DIR / "access.log")
errorlog = str(LOG_DIR / "error.log")
loglevel = os.environ.get("CORPUS_LOGLEVEL", "info")


def on_exit(server):
    logger.info("on_exit: removing %s", pidfile)
    try:  # noqa: SIM105
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
