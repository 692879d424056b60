"""Running the user's server hooks (Gunicorn's names and signatures).

A hook that raises is logged with its traceback and otherwise ignored: a
bug in a hook must never bring the master or a worker down.
"""

from __future__ import annotations

import logging
from typing import Any

from .settings import Settings


def run_hook(settings: Settings, name: str, *args: Any) -> None:
    hook = getattr(settings, name)
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        logging.getLogger("forkserve.error").exception("Hook %s raised", name)
