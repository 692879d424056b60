# Patterns: defaults-via-globals, import-gunicorn-module, server-software-override,
#   typed-hooks-type-checking, user-group-numeric.
# Shared defaults filled into globals() by a project helper, Gunicorn's own module imported
# to change its Server header, hooks with type hints behind TYPE_CHECKING.
import os
import typing

import gunicorn
from corpus_hooks import apply_defaults

if typing.TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

apply_defaults(globals())

gunicorn.SERVER_SOFTWARE = gunicorn.SERVER = "corpus"
user = os.getuid()
group = os.getgid()
bind = "0.0.0.0"


def post_fork(server: "Arbiter", worker: "Worker") -> None:
    server.log.info("defaults_globals: worker %s", worker.pid)
