# Patterns: uppercase-constants, helper-globals, true-false-aliases, or-fallback-values,
#   reuse-port, workers-as-string.
# Upper-case names (not settings: Gunicorn ignores BIND and WORKERS), lower-case helpers,
# and `true`/`false` defined so a templating tool can write them.
import os

true = True
false = False

PORT = os.environ.get("PORT") or "8080"
BIND = f"0.0.0.0:{PORT}"
WORKERS = 4
project_name = "corpus-upper"
port = PORT

bind = BIND
workers = "1" or WORKERS  # noqa: SIM222
preload_app = false
reuse_port = false  # with true, Gunicorn 27 binds per worker: no shared port 0
forwarded_allow_ips = "" or "*"  # noqa: SIM222
accesslog = errorlog = f"{project_name}-dev.log"
